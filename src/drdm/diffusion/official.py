"""Deprecated location of :mod:`drdm.diffusion.official_process` (kept for one release)."""

from .._deprecated import moved

moved(__name__, "drdm.diffusion.official_process", globals())
