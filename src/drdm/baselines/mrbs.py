"""Multi-resolution random B-spline deformations (MRBS, Eppenhof and Pluim 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import Units, check_images, check_units, field_dtype, to_voxels, uniform

__all__ = ["MRBSSampler", "bspline_matrix"]


def bspline_matrix(
    size: int,
    spacing: float,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``(size, n)`` matrix evaluating a uniform cubic B-spline at the voxels of one axis.

    Control points are ``spacing`` voxels apart, ``n = m + 3`` of them for the ``m =
    ceil((size - 1) / spacing)`` intervals covering the axis, the grid centred on the axis.
    Row ``x`` holds the four non-zero basis weights at voxel ``x``; they are non-negative and
    sum to 1, so every value lies within the range of the control values.
    """
    if size < 1 or spacing <= 0:
        raise ValueError(f"need size >= 1 and spacing > 0, got {size}, {spacing}")
    m = max(1, math.ceil((size - 1) / spacing - 1e-9))
    origin = ((size - 1) - m * spacing) / 2.0
    t = (torch.arange(size, dtype=torch.float64) - origin) / spacing
    i = torch.floor(t).clamp(0, m - 1)
    u = t - i
    weights = [
        (1 - u) ** 3 / 6,
        (3 * u**3 - 6 * u**2 + 4) / 6,
        (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6,
        u**3 / 6,
    ]
    matrix = torch.zeros(size, m + 3, dtype=torch.float64)
    rows = torch.arange(size)
    for k, w in enumerate(weights):
        matrix[rows, i.long() + k] = w
    return matrix.to(device=device, dtype=dtype)


class MRBSSampler:
    """Multi-resolution random B-spline deformations (a FieldSampler).

    The synthetic training deformations of Eppenhof and Pluim (2019), "Pulmonary CT
    registration through supervised learning with convolutional neural networks" (IEEE TMI
    38:1097-1105): at each level a cubic B-spline transform whose control points, ``grid
    spacing`` apart, get independent displacements drawn uniformly from ``[-d, d]`` per
    component; the dense fields of all levels are summed (coarse levels give large smooth
    motion, fine levels local detail). Because the B-spline weights are non-negative and sum
    to one, ``|u_i| <= sum(max_displacements)`` (per component, in the same units).

    The grid spacings and displacement ranges of that paper (3D lung CT in mm) were not
    available to us; the defaults are our choice, relative to the image size so that they
    suit any grid: control-point spacings of 1/2, 1/4 and 1/8 of the size with maximum
    control-point displacements of 6%, 3% and 1.5% of the size. Each level's range is 0.12
    of its spacing; a cubic B-spline's slope is at most ``2 d / spacing`` (0.24 per level),
    and in practice the largest ``|du_i/dx_j|`` is about 0.3: we measured no folding in 2D
    or 3D (mean ``|u|`` about 2.3% and maximum about 5% of the image size).

    Args:
        ndim: 2 or 3.
        grid_spacings: control-point spacing of each level (coarse to fine), in ``units``.
        max_displacements: half-range ``d`` of the uniform control-point displacements of
            each level, in ``units``.
        units: ``"relative"`` (fractions of the per-axis image size), ``"voxels"`` or ``"mm"``.
        spacing: voxel size in mm per axis (for ``units="mm"``).
    """

    def __init__(
        self,
        ndim: int,
        grid_spacings: Sequence[float] = (0.5, 0.25, 0.125),
        max_displacements: Sequence[float] = (0.06, 0.03, 0.015),
        units: Units = "relative",
        spacing: Sequence[float] | None = None,
    ) -> None:
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        grid_spacings = tuple(float(s) for s in grid_spacings)
        max_displacements = tuple(float(d) for d in max_displacements)
        if len(grid_spacings) != len(max_displacements) or not grid_spacings:
            raise ValueError("grid_spacings and max_displacements need one value per level")
        if min(grid_spacings) <= 0 or min(max_displacements) < 0:
            raise ValueError("grid spacings must be positive and displacements non-negative")
        self.ndim = ndim
        self.grid_spacings = grid_spacings
        self.max_displacements = max_displacements
        self.units = units
        self.spacing = check_units(units, spacing, ndim)

    def __repr__(self) -> str:
        return (
            f"MRBSSampler(ndim={self.ndim}, grid_spacings={self.grid_spacings}, "
            f"max_displacements={self.max_displacements}, units={self.units!r})"
        )

    def sample_ddf(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """``(B, C, *spatial)`` images -> ``(B, ndim, *spatial)`` displacements in voxels."""
        check_images(images, self.ndim, "MRBSSampler")
        batch, size = images.shape[0], list(images.shape[2:])
        dtype, device = field_dtype(images), images.device
        field = torch.zeros(batch, self.ndim, *size, dtype=dtype, device=device)
        for grid, disp in zip(self.grid_spacings, self.max_displacements, strict=True):
            steps = to_voxels(grid, size, self.units, self.spacing)
            bounds = to_voxels(disp, size, self.units, self.spacing)
            matrices = [
                bspline_matrix(n, s, dtype, device) for n, s in zip(size, steps, strict=True)
            ]
            coarse = [m.shape[1] for m in matrices]
            half = torch.tensor(bounds, dtype=dtype).view(1, self.ndim, *([1] * self.ndim))
            ctrl = uniform((batch, self.ndim, *coarse), -1.0, 1.0, generator, device, dtype)
            dense = ctrl * half.to(device)
            for axis, matrix in enumerate(matrices):
                # contract control axis (2 + axis) with the basis: (..., n) @ (n, size)
                dense = torch.tensordot(dense, matrix, dims=([2 + axis], [1])).movedim(-1, 2 + axis)
            field = field + dense
        return field
