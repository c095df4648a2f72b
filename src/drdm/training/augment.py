"""Random spatial augmentation of training batches (paper 3.2), one resampling per sample.

Rotation, flips, crop-and-resize and translation are combined into one affine map per sample
from output voxel ``x`` to input voxel ``x_in`` (array axis order, voxels, centre
``c = (size - 1) / 2``)::

    x_in = c + R F s (x - c) + o_crop + o_shift

with ``R`` a rotation by ``U(0, rotation_deg)`` (in-plane in 2D, about a uniformly random axis
in 3D), ``F`` a diagonal of ``±1`` (each axis flipped with ``flip_prob``), ``s ~ U(crop_min,
crop_max)`` the crop ratio (a window of ``s`` times the image, resized back to the full size),
``o_crop`` the window's random position inside the image and ``o_shift ~ U(-translation,
translation) * (size - 1)`` per axis. The batch is resampled once with
:func:`drdm.spatial.sample` (linear, zero padding), so values stay in the input range.

All randomness comes from the explicit ``generator`` (CPU); every call draws the same amount
of numbers per sample, whatever the options.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..spatial import identity_grid, sample
from .config import AugmentConfig

__all__ = ["augment_batch", "augmentation_coords", "random_affine"]


def _rotation_2d(angle: Tensor) -> Tensor:
    c, s = angle.cos(), angle.sin()
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _rotation_3d(axis: Tensor, angle: Tensor) -> Tensor:
    """Rodrigues' formula: ``(B, 3, 3)`` rotations by ``angle`` ``(B,)`` about unit ``axis``
    ``(B, 3)``."""
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack(
        [
            torch.stack([zero, -z, y], -1),
            torch.stack([z, zero, -x], -1),
            torch.stack([-y, x, zero], -1),
        ],
        -2,
    )
    eye = torch.eye(3, dtype=axis.dtype).expand_as(k)
    s = angle.sin().view(-1, 1, 1)
    c = angle.cos().view(-1, 1, 1)
    return eye + s * k + (1 - c) * (k @ k)


def random_affine(
    batch: int, size: Sequence[int], config: AugmentConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Draw one augmentation per sample.

    Args:
        batch: number of samples ``B``.
        size: spatial size (2 or 3 entries), voxels.
        config: the augmentation ranges.
        generator: CPU generator; advanced by the same amount for any ``config``.

    Returns:
        ``(matrix, offset)``: ``(B, ndim, ndim)`` and ``(B, ndim)`` float64 on the CPU, so
        that output voxel ``x`` samples input voxel ``c + matrix @ (x - c) + offset``.
    """
    nd = len(size)
    if nd not in (2, 3):
        raise ValueError(f"size must have 2 or 3 entries, got {list(size)}")
    f64 = torch.float64
    u_angle = torch.rand(batch, generator=generator, dtype=f64)
    axis = torch.randn(batch, 3, generator=generator, dtype=f64)
    u_flip = torch.rand(batch, nd, generator=generator, dtype=f64)
    u_crop = torch.rand(batch, generator=generator, dtype=f64)
    u_pos = torch.rand(batch, nd, generator=generator, dtype=f64)
    u_shift = torch.rand(batch, nd, generator=generator, dtype=f64)

    extent = torch.tensor([s - 1.0 for s in size], dtype=f64)
    angle = u_angle * math.radians(config.rotation_deg)
    if nd == 2:
        rotation = _rotation_2d(angle)
    else:
        norm = axis.norm(dim=-1, keepdim=True)
        axis = torch.where(norm > 1e-12, axis / norm.clamp_min(1e-12), axis.new_tensor([1.0, 0, 0]))
        rotation = _rotation_3d(axis, angle)
    flips = torch.where(u_flip < config.flip_prob, -1.0, 1.0).to(f64)
    ratio = config.crop_min + (config.crop_max - config.crop_min) * u_crop
    matrix = rotation * flips[:, None, :] * ratio.view(-1, 1, 1)
    crop_offset = (u_pos - 0.5) * (1.0 - ratio)[:, None] * extent
    shift = (2.0 * u_shift - 1.0) * config.translation * extent
    return matrix, crop_offset + shift


def augmentation_coords(
    matrix: Tensor,
    offset: Tensor,
    size: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sampling coordinates ``(B, ndim, *size)`` (input voxels) of the affine maps from
    :func:`random_affine`, on ``device``."""
    nd = len(size)
    centre = torch.tensor([(s - 1) / 2.0 for s in size], dtype=torch.float64)
    grid = identity_grid(size, device=device, dtype=dtype)  # (nd, *size)
    rel = grid - centre.to(device, dtype).view(nd, *([1] * nd))
    m = matrix.to(device, dtype)
    coords = torch.einsum("bij,j...->bi...", m, rel)
    shift = (centre[None] + offset).to(device, dtype).view(-1, nd, *([1] * nd))
    return coords + shift


def augment_batch(images: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Randomly rotate, flip, crop-resize and translate a batch (paper 3.2).

    Args:
        images: ``(B, C, *spatial)`` floating point (any device); 2D or 3D.
        config: augmentation ranges; when ``config.enabled`` is false ``images`` is returned
            unchanged and ``generator`` is not used.
        generator: CPU generator, the only source of randomness.

    Returns:
        ``(B, C, *spatial)`` on the device of ``images``: each sample resampled once
        (linear interpolation, zeros outside), so values stay within the input range.
    """
    if not config.enabled:
        return images
    size = list(images.shape[2:])
    matrix, offset = random_affine(images.shape[0], size, config, generator)
    coords = augmentation_coords(matrix, offset, size, images.device, images.dtype)
    return sample(images, coords, mode="linear", padding="zeros")
