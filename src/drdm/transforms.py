"""Deprecated location of :mod:`drdm.pipelines.transforms` (kept for one release)."""

from ._deprecated import moved

moved(__name__, "drdm.pipelines.transforms", globals())
