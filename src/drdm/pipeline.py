"""Deprecated location of :mod:`drdm.model` (kept for one release)."""

from ._deprecated import moved

moved(__name__, "drdm.model", globals())
