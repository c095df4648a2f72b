"""Separable Gaussian smoothing of batched 2D/3D tensors (one matrix product per axis)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

Edges = Literal["mirror", "replicate"]


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
    size: int,
    sigma: float,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    edges: Edges = "mirror",
) -> Tensor:
    """``(size, size)`` matrix of a 1D Gaussian blur (``sigma`` voxels, truncated at 3 sigma);
    row ``i`` holds the weights of output voxel ``i``.

    ``edges="mirror"`` reflects about the edge voxels (index -1 -> 1, replicated where the axis
    is shorter than the kernel's radius); ``"replicate"`` repeats the edge voxel.
    """
    if edges not in ("mirror", "replicate"):
        raise ValueError(f"edges must be 'mirror' or 'replicate', got {edges!r}")
    kernel = gaussian_kernel(sigma, torch.float64)
    radius = (kernel.numel() - 1) // 2
    rows = torch.arange(size).view(-1, 1).expand(size, kernel.numel())
    cols = rows + torch.arange(-radius, radius + 1).view(1, -1)
    if edges == "mirror" and radius < size:
        cols = cols.abs()
        cols = torch.where(cols > size - 1, 2 * (size - 1) - cols, cols)
    else:
        cols = cols.clamp(0, size - 1)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix.index_put_((rows, cols), kernel.expand(size, -1), accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def smooth(x: Tensor, sigmas: Sequence[float], edges: Edges = "mirror") -> Tensor:
    """Separable Gaussian smoothing of ``x`` ``(B, C, *spatial)``.

    ``sigmas[i]`` is the standard deviation in voxels along spatial axis ``i`` (0 skips the
    axis); ``edges`` as in :func:`smoothing_matrix`. Each axis is one matrix product.
    """
    ndim = x.dim() - 2
    if len(sigmas) != ndim:
        raise ValueError(f"need {ndim} sigmas, got {len(sigmas)}")
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0:
            continue
        dim = 2 + axis
        matrix = smoothing_matrix(x.shape[dim], sigma, x.dtype, x.device, edges)
        shape = list(x.shape)
        before, after = math.prod(shape[:dim]), math.prod(shape[dim + 1 :])
        if after == 1:
            x = (x.reshape(before, shape[dim]) @ matrix.T).reshape(shape)
        else:
            x = torch.matmul(matrix, x.reshape(before, shape[dim], after)).reshape(shape)
    return x
