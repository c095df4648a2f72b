"""Options several commands share, defined once: ``--threads`` and ``--device``.

Nothing here imports torch at module level (``drdm --help`` stays fast,
tests/cli/test_help_imports.py).
"""

from __future__ import annotations

import argparse

from ..errors import InputError

__all__ = ["add_device_argument", "add_threads_argument", "apply_threads"]


def add_threads_argument(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    help: str = "CPU threads (default: torch's choice)",  # noqa: A002 (argparse's name)
) -> None:
    """``--threads N`` (default ``None``: torch's choice); apply it with :func:`apply_threads`."""
    p.add_argument("--threads", type=int, default=None, help=help)


def apply_threads(threads: int | None) -> None:
    """``--threads``: the number of CPU threads of this process (``None``: leave torch's);
    a number below 1 is refused with a one-line :class:`~drdm.errors.InputError`."""
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads {threads}: must be >= 1")
    import torch

    torch.set_num_threads(threads)


def add_device_argument(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, default: str | None = "auto"
) -> None:
    """``--device auto|cpu|cuda`` (``cuda:N`` too); ``default=None`` leaves the choice to the
    command's config."""
    shown = f" (default {default})" if default is not None else " (default: the config's)"
    p.add_argument("--device", default=default, help="auto, cpu or cuda" + shown)
