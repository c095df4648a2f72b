"""Deformation-quality measures: Jacobian determinant, fold ratio, displacement magnitude."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._grid import check_field


def spatial_gradient(field: Tensor) -> Tensor:
    """Derivatives of every channel along every spatial axis (voxel units).

    Central differences in the interior, one-sided differences on the first and last voxel of
    each axis (zero along an axis of length 1). ``field``: ``(B, C, *spatial)``; returns
    ``(B, C, ndim, *spatial)`` where ``[:, c, i]`` is ``d field_c / d x_i``.
    """
    ndim = field.dim() - 2
    grads = []
    for axis in range(ndim):
        dim = axis + 2
        n = field.shape[dim]
        if n < 2:
            grads.append(torch.zeros_like(field))
            continue
        inner = (field.narrow(dim, 2, n - 2) - field.narrow(dim, 0, n - 2)) / 2
        first = field.narrow(dim, 1, 1) - field.narrow(dim, 0, 1)
        last = field.narrow(dim, n - 1, 1) - field.narrow(dim, n - 2, 1)
        grads.append(torch.cat([first, inner, last], dim=dim))
    return torch.stack(grads, dim=2)


def jacobian_det(ddf: Tensor) -> Tensor:
    """Determinant of the Jacobian of ``x -> x + u(x)``, i.e. ``det(I + ∇u)``.

    ``ddf``: ``(B, ndim, *spatial)`` voxels. Returns ``(B, 1, *spatial)``; values below zero mark
    folding, 1 means locally volume-preserving.

    A stretch by 1.5 along array axis 0 (``u_0(x) = 0.5 x_0``):

    >>> import torch
    >>> x0 = torch.arange(5.0).view(1, 1, 5, 1).expand(1, 1, 5, 5)
    >>> ddf = torch.cat([0.5 * x0, torch.zeros_like(x0)], dim=1)
    >>> jacobian_det(ddf).unique()
    tensor([1.5000])
    """
    ndim = check_field(ddf)
    j = spatial_gradient(ddf)
    eye = torch.eye(ndim, dtype=ddf.dtype, device=ddf.device).view(1, ndim, ndim, *([1] * ndim))
    j = j + eye
    if ndim == 2:
        det = j[:, 0, 0] * j[:, 1, 1] - j[:, 0, 1] * j[:, 1, 0]
    else:
        det = (
            j[:, 0, 0] * (j[:, 1, 1] * j[:, 2, 2] - j[:, 1, 2] * j[:, 2, 1])
            - j[:, 0, 1] * (j[:, 1, 0] * j[:, 2, 2] - j[:, 1, 2] * j[:, 2, 0])
            + j[:, 0, 2] * (j[:, 1, 0] * j[:, 2, 1] - j[:, 1, 1] * j[:, 2, 0])
        )
    return det.unsqueeze(1)


def fold_ratio(ddf: Tensor) -> Tensor:
    """Fraction (0..1) of voxels with a negative Jacobian determinant, per sample: ``(B,)``.

    ``u_0(x) = -1.5 x_0`` turns the grid over along axis 0 (``det = -0.5`` everywhere):

    >>> import torch
    >>> x0 = torch.arange(5.0).view(1, 1, 5, 1).expand(1, 1, 5, 5)
    >>> fold_ratio(torch.cat([-1.5 * x0, torch.zeros_like(x0)], dim=1))
    tensor([1.])
    """
    det = jacobian_det(ddf)
    return (det < 0).flatten(1).to(ddf.dtype).mean(dim=1)


class MagnitudeStats(NamedTuple):
    """Displacement magnitude as a percentage of the image size, per sample (``(B,)`` each)."""

    max_percent: Tensor
    mean_percent: Tensor


def magnitude_stats(ddf: Tensor) -> MagnitudeStats:
    """Maximum and mean of ``|u(x)|`` in % of the image size (the paper's Table 1).

    Component ``i`` is divided by the grid length along axis ``i`` before the norm is taken, so
    on a square/cubic grid this is ``100 * |u| / size``.
    """
    ndim = check_field(ddf)
    size = ddf.new_tensor(ddf.shape[2:]).view(1, ndim, *([1] * ndim))
    norm = (ddf / size).norm(dim=1).flatten(1) * 100.0
    return MagnitudeStats(max_percent=norm.amax(dim=1), mean_percent=norm.mean(dim=1))
