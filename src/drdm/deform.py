"""Deprecated location of :mod:`drdm.pipelines.core` (kept for one release)."""

from ._deprecated import moved

moved(__name__, "drdm.pipelines.core", globals())
