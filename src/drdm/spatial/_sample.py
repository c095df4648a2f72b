"""Resampling images at arbitrary voxel coordinates, and warping by displacement fields.

Convention: tensors are ``(B, C, *spatial)`` with the spatial axes in the array order of the
image on disk. A displacement field (DDF or DVF) has shape ``(B, ndim, *spatial)``; channel ``i``
is the displacement along spatial axis ``i`` in voxels. Warping pulls back:
``warp(I, u)(x) = I(x + u(x))``.
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ._grid import check_field, identity_grid, voxel_to_grid_sample

InterpMode = Literal["linear", "cubic", "nearest"]
Padding = Literal["zeros", "border"]

_MODES = ("linear", "cubic", "nearest")
_PADDINGS = ("zeros", "border")


def _check_options(mode: str, padding: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")


def _broadcast_batch(image: Tensor, coords: Tensor) -> tuple[Tensor, Tensor]:
    b_img, b_crd = image.shape[0], coords.shape[0]
    if b_img == b_crd:
        return image, coords
    if b_img == 1:
        return image.expand(b_crd, *image.shape[1:]), coords
    if b_crd == 1:
        return image, coords.expand(b_img, *coords.shape[1:])
    raise ValueError(f"batch sizes differ: image has {b_img}, coordinates have {b_crd}")


def sample(
    image: Tensor, coords: Tensor, mode: InterpMode = "linear", padding: Padding = "zeros"
) -> Tensor:
    """Sample ``image`` at voxel coordinates.

    Args:
        image: ``(B, C, *spatial)`` floating tensor (2D or 3D).
        coords: ``(B, ndim, *out)`` absolute voxel coordinates into ``image``; channel ``i`` is
            the position along spatial axis ``i``. A batch of 1 on either side broadcasts.
        mode: ``"linear"`` (bi/trilinear), ``"cubic"`` (Keys cubic convolution, a = -0.75, the
            kernel of PyTorch's bicubic mode, in 2D and 3D) or ``"nearest"``.
        padding: value outside the image: ``"zeros"`` or ``"border"`` (nearest edge value).

    Returns:
        ``(B, C, *out)`` tensor, differentiable with respect to ``image`` and ``coords``
        (except ``"nearest"`` with respect to ``coords``).
    """
    _check_options(mode, padding)
    ndim = image.dim() - 2
    if ndim not in (2, 3):
        raise ValueError(f"image must be (B, C, H, W) or (B, C, D, H, W), got {tuple(image.shape)}")
    if coords.dim() != ndim + 2 or coords.shape[1] != ndim:
        raise ValueError(
            f"coords must be (B, {ndim}, *out) for a {ndim}D image, got {tuple(coords.shape)}"
        )
    if not image.is_floating_point():
        raise TypeError(f"image must be floating point, got {image.dtype}")
    image, coords = _broadcast_batch(image, coords.to(image.dtype))
    size = image.shape[2:]
    if mode == "cubic" and ndim == 3:
        return _sample_cubic(image, coords, padding)
    grid = voxel_to_grid_sample(coords, size)
    # 2D cubic: PyTorch's bicubic is the same Keys kernel (a = -0.75), checked in the tests
    torch_mode = {"linear": "bilinear", "nearest": "nearest", "cubic": "bicubic"}[mode]
    return F.grid_sample(image, grid, mode=torch_mode, padding_mode=padding, align_corners=True)


def _cubic_weights(frac: Tensor, a: float = -0.75) -> list[Tensor]:
    """Keys cubic-convolution weights for the taps at offsets -1, 0, 1, 2 of ``floor(x)``."""

    def near(d: Tensor) -> Tensor:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: Tensor) -> Tensor:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(frac + 1), near(frac), near(1 - frac), far(2 - frac)]


def _sample_cubic(image: Tensor, coords: Tensor, padding: Padding) -> Tensor:
    """Separable-kernel cubic interpolation by gathering the 4**ndim neighbours."""
    batch, channels = image.shape[:2]
    size = image.shape[2:]
    ndim = len(size)
    out_shape = coords.shape[2:]
    flat_image = image.reshape(batch, channels, -1)
    base = torch.floor(coords)
    frac = coords - base
    base = base.long()
    weights = [_cubic_weights(frac[:, i]) for i in range(ndim)]
    strides = [1] * ndim
    for i in range(ndim - 2, -1, -1):
        strides[i] = strides[i + 1] * size[i + 1]
    out = torch.zeros(batch, channels, *out_shape, dtype=image.dtype, device=image.device)
    for offsets in itertools.product(range(4), repeat=ndim):
        flat_index = torch.zeros_like(base[:, 0])
        weight = torch.ones_like(frac[:, 0])
        valid = torch.ones_like(base[:, 0], dtype=torch.bool)
        for axis, k in enumerate(offsets):
            index = base[:, axis] + (k - 1)
            if padding == "zeros":
                valid &= (index >= 0) & (index < size[axis])
            index = index.clamp(0, size[axis] - 1)
            flat_index = flat_index + index * strides[axis]
            weight = weight * weights[axis][k]
        if padding == "zeros":
            weight = weight * valid.to(weight.dtype)
        gathered = flat_image.gather(
            2, flat_index.reshape(batch, 1, -1).expand(batch, channels, -1)
        ).reshape(batch, channels, *out_shape)
        out = out + gathered * weight.unsqueeze(1)
    return out


def warp(
    image: Tensor, ddf: Tensor, mode: InterpMode = "linear", padding: Padding = "zeros"
) -> Tensor:
    """Warp ``image`` by the displacement field ``ddf`` (pull-back).

    ``warp(I, u)(x) = I(x + u(x))``, with ``image`` ``(B, C, *spatial)``, ``ddf``
    ``(B, ndim, *spatial)`` in voxels (channel ``i`` along spatial axis ``i``). Either batch may
    be 1 and broadcast. Returns ``(B, C, *spatial)``.

    >>> import torch
    >>> image = torch.arange(4.0).view(1, 1, 1, 4)  # one row of a 2D image: 0 1 2 3
    >>> ddf = torch.zeros(1, 2, 1, 4)
    >>> ddf[:, 1] = 1.0  # u = +1 voxel along array axis 1
    >>> warp(image, ddf)  # I(x + 1): the content moves left, zeros come in past the edge
    tensor([[[[1., 2., 3., 0.]]]])
    """
    ndim = check_field(ddf)
    if image.dim() != ndim + 2 or image.shape[2:] != ddf.shape[2:]:
        raise ValueError(
            f"image {tuple(image.shape)} and ddf {tuple(ddf.shape)} must share the spatial grid"
        )
    if mode == "cubic" and ndim == 3:
        grid = identity_grid(ddf.shape[2:], device=ddf.device, dtype=ddf.dtype)
        return sample(image, grid.unsqueeze(0) + ddf, mode=mode, padding=padding)
    _check_options(mode, padding)
    if not image.is_floating_point():
        raise TypeError(f"image must be floating point, got {image.dtype}")
    image, ddf = _broadcast_batch(image, ddf.to(image.dtype))
    grid = voxel_to_grid_sample(ddf, ddf.shape[2:], offset=True)
    torch_mode = {"linear": "bilinear", "nearest": "nearest", "cubic": "bicubic"}[mode]
    return F.grid_sample(image, grid, mode=torch_mode, padding_mode=padding, align_corners=True)


def warp_labels(
    labels: Tensor,
    ddf: Tensor,
    method: Literal["onehot", "nearest"] = "onehot",
    padding: Padding = "zeros",
    chunk: int = 8,
) -> Tensor:
    """Warp an integer label map by ``ddf`` (pull-back, voxels).

    Args:
        labels: ``(B, 1, *spatial)`` integer (or integral floating) label map.
        ddf: ``(B, ndim, *spatial)`` displacement in voxels.
        method: ``"onehot"`` interpolates each label's indicator linearly and takes the arg-max
            (smooth boundaries); ``"nearest"`` takes the nearest voxel's label.
        padding: ``"zeros"`` treats everything outside the image as label 0 (background);
            ``"border"`` repeats the edge labels.
        chunk: number of labels interpolated at once by ``"onehot"`` (bounds memory).

    Returns:
        ``(B, 1, *spatial)`` tensor of ``labels.dtype``. Every output value occurs in ``labels``
        (or is 0 outside the image with ``padding="zeros"``).
    """
    ndim = check_field(ddf)
    if labels.dim() != ndim + 2 or labels.shape[1] != 1 or labels.shape[2:] != ddf.shape[2:]:
        raise ValueError(
            f"labels must be (B, 1, *spatial) on the grid of ddf {tuple(ddf.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if method not in ("onehot", "nearest"):
        raise ValueError(f"method must be 'onehot' or 'nearest', got {method!r}")
    dtype = ddf.dtype if ddf.is_floating_point() else torch.float32
    grid = identity_grid(ddf.shape[2:], device=ddf.device, dtype=dtype).unsqueeze(0) + ddf
    if method == "nearest":
        warped = sample(labels.to(torch.float64), grid.to(torch.float64), "nearest", padding)
        return warped.round().to(labels.dtype)
    values = torch.unique(labels)
    if padding == "zeros":
        zero = torch.zeros(1, dtype=values.dtype, device=values.device)
        values = torch.cat([zero, values[values != 0]])
    best_score = None
    best_value = None
    for start in range(0, len(values), chunk):
        part = values[start : start + chunk]
        onehot = (labels == part.view(1, -1, *([1] * ndim))).to(dtype)
        scores = sample(onehot, grid, "linear", padding)
        score, index = scores.max(dim=1, keepdim=True)
        value = part[index]
        if best_score is None:
            best_score, best_value = score, value
        else:
            better = score > best_score
            best_score = torch.where(better, score, best_score)
            best_value = torch.where(better, value, best_value)
    assert best_value is not None
    return best_value.to(labels.dtype)
