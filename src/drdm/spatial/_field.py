"""Operations on displacement fields: composition (Eq. 5), resizing and integration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from ..choices import Padding
from ._grid import check_field
from ._sample import warp


def compose(a: Tensor, b: Tensor, padding: Padding = "border") -> Tensor:
    """Compose two displacement fields as in the paper's Eq. 5.

    ``compose(a, b)[x] = b[x + a[x]] + a[x]``, so that
    ``warp(I, compose(a, b)) ≈ warp(warp(I, b), a)``: the image is deformed by ``b`` first and
    then by ``a``. Both fields are ``(B, ndim, *spatial)`` in voxels; ``b`` is sampled
    bi/trilinearly with the given ``padding`` (``"border"`` by default, so vectors near the edge
    keep accumulating).

    Two translations add up:

    >>> import torch
    >>> a, b = torch.full((1, 2, 4, 4), 0.5), torch.full((1, 2, 4, 4), 0.25)
    >>> compose(a, b)[0, :, 1, 1]
    tensor([0.7500, 0.7500])
    """
    check_field(a, "a")
    check_field(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"fields must share ndim and grid, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return warp(b, a, mode="linear", padding=padding) + a


def resize_ddf(ddf: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """Resample a displacement field to another grid covering the same extent.

    Values are interpolated bi/trilinearly and each component is rescaled to the new voxel
    size. With ``align_corners=False`` (default) the grids share their outer edges, as when an
    image of ``S`` voxels is resized to ``S'`` voxels of proportionally larger spacing, and
    component ``i`` is multiplied by ``S'_i / S_i``. With ``align_corners=True`` the first and
    last voxel centres coincide and the factor is ``(S'_i - 1) / (S_i - 1)``.

    ``ddf``: ``(B, ndim, *spatial)`` voxels; returns ``(B, ndim, *size)`` in voxels of the new grid.

    A shift of one voxel on a 4 x 4 grid is a shift of two voxels on an 8 x 8 grid:

    >>> import torch
    >>> resize_ddf(torch.ones(1, 2, 4, 4), (8, 8))[0, :, 0, 0]
    tensor([2., 2.])
    """
    ndim = check_field(ddf)
    size = tuple(int(s) for s in size)
    if len(size) != ndim or min(size) < 1:
        raise ValueError(f"size must have {ndim} positive entries, got {size}")
    old = ddf.shape[2:]
    if tuple(old) == size:
        return ddf
    mode = "bilinear" if ndim == 2 else "trilinear"
    out = F.interpolate(ddf, size=size, mode=mode, align_corners=align_corners)
    if align_corners:
        factors = [(n - 1) / (o - 1) if o > 1 else 1.0 for n, o in zip(size, old, strict=True)]
    else:
        factors = [n / o for n, o in zip(size, old, strict=True)]
    scale = out.new_tensor(factors).view(1, ndim, *([1] * ndim))
    return out * scale


def integrate(
    dvf: Tensor,
    steps: int = 7,
    method: Literal["scaling_squaring", "compose"] = "scaling_squaring",
    padding: Padding = "border",
) -> Tensor:
    """Integrate a stationary velocity field into a displacement field, ``exp(dvf)``.

    * ``"scaling_squaring"``: ``u = dvf / 2**steps`` composed with itself ``steps`` times
      (``2**steps`` small steps in ``steps`` compositions).
    * ``"compose"``: ``u = dvf / steps`` composed one step at a time, ``steps`` small steps in
      ``steps - 1`` compositions (the step-by-step reference).

    Both approximate the flow of ``dvf`` over unit time; with ``dvf = n * v`` and
    ``method="compose", steps=n`` the result is exactly ``v`` composed with itself ``n`` times.
    ``dvf``: ``(B, ndim, *spatial)`` voxels; returns the same shape.
    """
    check_field(dvf, "dvf")
    if steps < 0 or (method == "compose" and steps < 1):
        raise ValueError(f"steps must be >= 0 (>= 1 for 'compose'), got {steps}")
    if method == "scaling_squaring":
        ddf = dvf / (2**steps)
        for _ in range(steps):
            ddf = compose(ddf, ddf, padding=padding)
        return ddf
    if method == "compose":
        step = dvf / steps
        ddf = step
        for _ in range(steps - 1):
            # left fold: resample the small step at x + ddf(x), never the accumulated field,
            # which would be smoothed a little by every linear interpolation
            ddf = compose(ddf, step, padding=padding)
        return ddf
    raise ValueError(f"method must be 'scaling_squaring' or 'compose', got {method!r}")
