"""Deprecated location of :mod:`drdm.official_weights` (kept for one release)."""

from ._deprecated import moved

moved(__name__, "drdm.official_weights", globals())
