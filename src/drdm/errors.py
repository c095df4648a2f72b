"""Exceptions raised for bad user input (files, options)."""

from __future__ import annotations


class InputError(ValueError):
    """A problem with a file or option supplied by the user.

    The message is one line naming the file (or option) and the problem; the command line
    prints it and exits with a non-zero status.
    """
