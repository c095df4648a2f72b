"""Deprecated location of :mod:`drdm.pipelines.bank` (kept for one release)."""

from ._deprecated import moved

moved(__name__, "drdm.pipelines.bank", globals())
