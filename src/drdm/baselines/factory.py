"""Deprecated location of :mod:`drdm.pipelines.registry` (kept for one release)."""

from .._deprecated import moved

moved(__name__, "drdm.pipelines.registry", globals())
