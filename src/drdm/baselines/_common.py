"""Helpers shared by the baseline samplers: random draws, units, separable Gaussian smoothing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ..diffusion.random_field import randn
from ..spatial import gaussian_kernel, smooth, smoothing_gain, smoothing_matrix

Units = Literal["relative", "voxels", "mm"]
_UNITS = ("relative", "voxels", "mm")

__all__ = [
    "Units",
    "check_images",
    "check_units",
    "draw_values",
    "field_dtype",
    "gaussian_kernel",
    "randn",
    "smooth",
    "smoothing_matrix",
    "smoothing_gain",
    "to_voxels",
    "uniform",
]


def uniform(
    shape: Sequence[int],
    low: float | Tensor,
    high: float | Tensor,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``U(low, high)`` draws of ``shape`` from ``generator`` (drawn on the generator's device,
    then moved to ``device``, so a CPU generator gives the same numbers on any device)."""
    u = torch.rand(*shape, generator=generator, device=generator.device, dtype=dtype)
    return (low + (high - low) * u).to(device)


def draw_values(bounds: tuple[float, float], batch: int, generator: torch.Generator) -> list[float]:
    """``batch`` values drawn uniformly from ``bounds = (min, max)``; no draw when
    ``min == max`` (the value repeated)."""
    lo, hi = bounds
    if lo == hi:
        return [float(lo)] * batch
    return uniform((batch,), lo, hi, generator, dtype=torch.float64).tolist()


def check_units(units: str, spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    """Validate a ``units`` option and the voxel ``spacing`` it may need."""
    if units not in _UNITS:
        raise ValueError(f"units must be one of {_UNITS}, got {units!r}")
    if spacing is None:
        if units == "mm":
            raise ValueError("units='mm' needs the voxel spacing (mm per axis)")
        return None
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or min(values) <= 0 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"spacing must be {ndim} positive finite values, got {list(spacing)}")
    return values


def to_voxels(
    value: float, size: Sequence[int], units: Units, spacing: Sequence[float] | None
) -> list[float]:
    """A length in ``units`` as voxels along each axis of a grid of ``size``.

    ``"relative"``: a fraction of the axis length (``value * size[i]``); ``"voxels"``: as given;
    ``"mm"``: divided by the voxel spacing of the axis.
    """
    if units == "relative":
        return [value * n for n in size]
    if units == "voxels":
        return [float(value)] * len(size)
    assert spacing is not None
    return [value / s for s in spacing]


def check_images(images: Tensor, ndim: int, who: str) -> None:
    if images.dim() != ndim + 2:
        raise ValueError(
            f"{who}: images must be (B, C, *spatial) with {ndim} spatial axes, "
            f"got {tuple(images.shape)}"
        )


def field_dtype(images: Tensor) -> torch.dtype:
    """Floating dtype of fields for ``images`` (theirs, or float32 for integer images)."""
    return images.dtype if images.is_floating_point() else torch.float32
