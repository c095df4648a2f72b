"""Deprecated location of :mod:`drdm.training.state` (kept for one release)."""

from .._deprecated import moved

moved(__name__, "drdm.training.state", globals())
