"""drdm: the Deformation-Recovery Diffusion Model for medical images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = ["DRDM", "__version__"]

if TYPE_CHECKING:
    from .model import DRDM


def __getattr__(name: str) -> Any:
    # keep ``import drdm`` light: torch and the pipeline load on first use of ``drdm.DRDM``
    if name == "DRDM":
        from .model import DRDM

        return DRDM
    raise AttributeError(f"module 'drdm' has no attribute {name!r}")
