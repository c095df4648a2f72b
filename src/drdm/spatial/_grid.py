"""Coordinate grids and the voxel-to-normalised conversion used by every sampler."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def identity_grid(
    size: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Voxel coordinates of every grid point.

    Returns a tensor of shape ``(ndim, *size)`` whose channel ``i`` holds the index along
    spatial axis ``i`` (array order, units: voxels).
    """
    axes = [torch.arange(s, device=device, dtype=dtype or torch.float32) for s in size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


def voxel_to_grid_sample(coords: Tensor, size: Sequence[int], offset: bool = False) -> Tensor:
    """Convert voxel coordinates to the layout ``torch.nn.functional.grid_sample`` expects.

    ``coords`` has shape ``(B, ndim, *out)`` in voxels of an image of spatial ``size``.
    The result has shape ``(B, *out, ndim)`` with the last axis in grid_sample's reversed
    (x = last array axis first) order, normalised for ``align_corners=True``: voxel 0 maps to
    -1 and voxel ``size - 1`` maps to +1. With ``offset=True``, ``coords`` is a displacement
    on the grid of ``size`` and the identity grid is added (the input to a warp).
    """
    ndim = len(size)
    spatial = coords.shape[2:]
    channels = []
    for i in reversed(range(ndim)):
        # a singleton axis: any normalised coordinate maps to index 0 under align_corners=True
        scale = 2.0 / (size[i] - 1) if size[i] > 1 else 1.0
        value = coords[:, i] * scale
        if offset:
            line = torch.linspace(-1.0, 1.0, size[i], device=coords.device, dtype=coords.dtype)
            value = value + line.view(*[size[i] if j == i else 1 for j in range(ndim)])
        else:
            value = value - 1.0
        channels.append(value.expand(coords.shape[0], *spatial))
    return torch.stack(channels, dim=-1)


def check_field(ddf: Tensor, name: str = "ddf") -> int:
    """Validate a displacement field of shape ``(B, ndim, *spatial)`` and return ``ndim``."""
    if ddf.dim() not in (4, 5):
        raise ValueError(
            f"{name} must have shape (B, ndim, *spatial) with ndim 2 or 3, got {tuple(ddf.shape)}"
        )
    ndim = ddf.dim() - 2
    if ddf.shape[1] != ndim:
        raise ValueError(
            f"{name} has {ddf.shape[1]} channels but {ndim} spatial axes; "
            f"expected shape (B, {ndim}, *spatial), got {tuple(ddf.shape)}"
        )
    return ndim
