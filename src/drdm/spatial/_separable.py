"""Axis-aligned resampling by separable interpolation matrices.

When the sampling positions along each axis do not depend on the other axes (resizing,
cropping, up-sampling a control grid), interpolation factorises into one small matrix per
axis, applied with a matrix product: much cheaper than a general ``grid_sample`` and, with
the cubic kernel, continuously differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..choices import InterpMode
from ._sample import _cubic_weights


def interpolation_matrix(positions: Tensor, size: int, mode: InterpMode = "linear") -> Tensor:
    """``(len(positions), size)`` matrix whose row ``k`` interpolates at ``positions[k]``.

    ``positions`` are voxel coordinates along one axis of length ``size``; samples outside
    repeat the border value ("border" padding). ``mode``: ``"linear"``, ``"cubic"`` (Keys,
    a = -0.75) or ``"nearest"``.
    """
    n = positions.shape[0]
    matrix = positions.new_zeros(n, size)
    rows = torch.arange(n, device=positions.device)
    if mode == "nearest":
        index = positions.round().long().clamp(0, size - 1)
        matrix[rows, index] = 1.0
        return matrix
    base = torch.floor(positions)
    frac = positions - base
    base = base.long()
    if mode == "linear":
        taps = [(0, 1 - frac), (1, frac)]
    elif mode == "cubic":
        taps = list(zip((-1, 0, 1, 2), _cubic_weights(frac), strict=True))
    else:
        raise ValueError(f"mode must be 'linear', 'cubic' or 'nearest', got {mode!r}")
    for offset, weight in taps:
        index = (base + offset).clamp(0, size - 1)
        matrix.index_put_((rows, index), weight, accumulate=True)
    return matrix


def resample_separable(
    image: Tensor, positions: Sequence[Tensor], mode: InterpMode = "linear"
) -> Tensor:
    """Sample ``image`` ``(B, C, *spatial)`` on the outer-product grid of per-axis positions.

    ``positions[i]`` holds voxel coordinates along spatial axis ``i``; the result has shape
    ``(B, C, len(positions[0]), ..., len(positions[-1]))``. Border padding.
    """
    ndim = image.dim() - 2
    if len(positions) != ndim:
        raise ValueError(f"need {ndim} position vectors, got {len(positions)}")
    out = image
    for axis, pos in enumerate(positions):
        dim = axis + 2
        matrix = interpolation_matrix(pos.to(image.dtype), out.shape[dim], mode)
        shape = list(out.shape)
        before = math.prod(shape[:dim])
        after = math.prod(shape[dim + 1 :])
        if after == 1:  # last axis: one (before, S_in) x (S_in, S_out) product
            out = out.reshape(before, shape[dim]) @ matrix.T
        else:  # (before, S_in, after) -> (before, S_out, after), a batched matrix product
            out = torch.matmul(matrix, out.reshape(before, shape[dim], after))
        shape[dim] = matrix.shape[0]
        out = out.reshape(shape)
    return out
