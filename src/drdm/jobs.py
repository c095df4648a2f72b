"""Deprecated location of :mod:`drdm.batch.jobs` (kept for one release)."""

from __future__ import annotations

import warnings

from .batch.jobs import *  # noqa: F403
from .batch.jobs import __all__ as __all__

warnings.warn(
    "drdm.jobs moved to drdm.batch.jobs; the old name will be removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)
