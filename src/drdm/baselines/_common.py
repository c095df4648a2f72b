"""Helpers shared by the baseline samplers: random draws, units, separable Gaussian smoothing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ..diffusion.random_field import randn

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


def gaussian_kernel(
    sigma: float, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> Tensor:
    """Normalised 1D Gaussian of standard deviation ``sigma`` voxels, truncated at 3 sigma."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(device=device, dtype=dtype)


def smoothing_gain(sigmas: Sequence[float]) -> float:
    """Standard deviation of unit white noise after :func:`smooth` with ``sigmas`` (interior)."""
    gain = 1.0
    for s in sigmas:
        if s > 0:
            gain *= float(gaussian_kernel(s, torch.float64).square().sum().sqrt())
    return gain


def smoothing_matrix(
    size: int, sigma: float, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> Tensor:
    """``(size, size)`` matrix of a 1D Gaussian blur (``sigma`` voxels, truncated at 3 sigma)
    with mirrored edges (replicated where the axis is shorter than the kernel's radius):
    row ``i`` holds the weights of output voxel ``i``."""
    kernel = gaussian_kernel(sigma, torch.float64)
    radius = (kernel.numel() - 1) // 2
    rows = torch.arange(size).view(-1, 1).expand(size, kernel.numel())
    cols = rows + torch.arange(-radius, radius + 1).view(1, -1)
    if radius < size:  # mirror about the edge voxels (index -1 -> 1, size -> size - 2)
        cols = cols.abs()
        cols = torch.where(cols > size - 1, 2 * (size - 1) - cols, cols)
    else:
        cols = cols.clamp(0, size - 1)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix.index_put_((rows, cols), kernel.expand(size, -1), accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def smooth(x: Tensor, sigmas: Sequence[float]) -> Tensor:
    """Separable Gaussian smoothing of ``x`` ``(B, C, *spatial)``; ``sigmas[i]`` voxels along
    spatial axis ``i`` (0 skips the axis). Edges are mirrored (replicated where an axis is too
    short to mirror the kernel's radius). Each axis is one matrix product."""
    ndim = x.dim() - 2
    if len(sigmas) != ndim:
        raise ValueError(f"need {ndim} sigmas, got {len(sigmas)}")
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0:
            continue
        dim = 2 + axis
        matrix = smoothing_matrix(x.shape[dim], sigma, x.dtype, x.device)
        shape = list(x.shape)
        before, after = math.prod(shape[:dim]), math.prod(shape[dim + 1 :])
        if after == 1:
            x = (x.reshape(before, shape[dim]) @ matrix.T).reshape(shape)
        else:
            x = torch.matmul(matrix, x.reshape(before, shape[dim], after)).reshape(shape)
    return x
