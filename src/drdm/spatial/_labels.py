"""One-hot label warping at a cost independent of the number of labels.

``warp_labels(labels, ddf, "onehot")`` interpolates the indicator of every label linearly and
takes the arg-max: its cost grows linearly with the number of labels (thousands of labels in
parcellations). Linear interpolation at a point only mixes the ``2**ndim`` voxels around it, so
the score of label ``v`` there is the summed weight of the corners holding ``v``, and the
arg-max is always one of the corner labels. :func:`warp_labels_onehot` computes exactly that:
per point it gathers the corner labels and weights, sums the weights of equal labels and picks
the best, with the same tie rule as ``warp_labels`` (the smaller label wins; with zero padding
label 0 first, and 0 where no corner lies inside). Cost: ``4**ndim`` comparisons per voxel,
whatever the number of labels.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from ..choices import LabelMethod, Padding
from ._grid import check_field, identity_grid
from ._sample import check_padding, reflect, warp_labels
from ._slices import check_slice_axis, field_to_slices, from_slices, to_slices

__all__ = ["warp_label_maps", "warp_labels_onehot"]

#: points handled at once (bounds the memory of the ``(P, 2**ndim)`` corner tables)
_CHUNK = 1 << 18
#: up to this many distinct label values :func:`warp_label_maps` lets ``warp_labels`` interpolate
#: the indicators (two passes of its 8-label chunks at most: 2-4x faster than
#: :func:`warp_labels_onehot` for 4-16 labels on a 256 x 256 map); beyond, the
#: label-count-independent :func:`warp_labels_onehot`. Both take the same arg-max with the same
#: tie rule; they can differ only where two labels' scores tie up to float rounding.
_FEW_LABELS = 16


def warp_label_maps(
    labels: Tensor,
    ddf: Tensor,
    method: LabelMethod = "onehot",
    padding: Padding = "zeros",
    slice_axis: int | None = None,
) -> Tensor:
    """Warp label maps ``(L, *spatial)`` by one field ``ddf`` ``(ndim, *spatial)`` (pull-back,
    voxels), each channel as its own label map.

    ``"onehot"``: each label's indicator interpolated linearly, arg-max (``warp_labels``' rule,
    computed by ``warp_labels`` for up to 16 label values and by :func:`warp_labels_onehot`
    beyond); ``"nearest"``: the nearest voxel's label. ``slice_axis``: for a slice-wise 3D field
    (component along the axis zero), the maps are warped slice by slice, exactly in-plane.

    Returns:
        ``(L, *spatial)`` of ``labels.dtype``; every value occurs in ``labels`` (or is 0).
    """
    axis = check_slice_axis(ddf, slice_axis)
    count = labels.shape[0]
    if axis is None:
        field = ddf[None].expand(count, *ddf.shape)
        return _warp_batch(labels[:, None], field, method, padding)[:, 0]
    plane = field_to_slices(ddf, axis)  # (n, 2, h, w)
    # (n, L, h, w) -> (n * L, 1, h, w), each slice's field repeated L times
    stacked = to_slices(labels, axis).reshape(-1, 1, *plane.shape[2:])
    moved = _warp_batch(stacked, plane.repeat_interleave(count, 0), method, padding)
    return from_slices(moved.reshape(-1, count, *plane.shape[2:]), axis)


def _warp_batch(labels: Tensor, ddf: Tensor, method: str, padding: Padding) -> Tensor:
    """``(B, 1, *spatial)`` label maps by ``(B, ndim, *spatial)``: the faster of the two
    one-hot paths for their number of label values (:data:`_FEW_LABELS`)."""
    if method == "onehot" and int(torch.unique(labels).numel()) > _FEW_LABELS:
        return warp_labels_onehot(labels, ddf, padding)
    return warp_labels(labels, ddf, method, padding)  # type: ignore[arg-type]


def warp_labels_onehot(labels: Tensor, ddf: Tensor, padding: Padding = "zeros") -> Tensor:
    """Warp an integer label map by ``ddf`` (pull-back, voxels): the arg-max of the linearly
    interpolated one-hot indicators, as ``warp_labels(labels, ddf, "onehot", padding)``.

    Args:
        labels: ``(B, 1, *spatial)`` integer (or integral floating) label map.
        ddf: ``(B, ndim, *spatial)`` displacement in voxels.
        padding: ``"zeros"``: outside the image nothing (every label scores 0 there, label 0
            wins ties); ``"border"``: the edge labels repeat; ``"reflection"``: the map
            mirrored about its edge voxel centres (as ``grid_sample``'s reflection).

    Returns:
        ``(B, 1, *spatial)`` of ``labels.dtype``; every value occurs in ``labels`` (or is 0).
    """
    ndim = check_field(ddf)
    if labels.dim() != ndim + 2 or labels.shape[1] != 1 or labels.shape[2:] != ddf.shape[2:]:
        raise ValueError(
            f"labels must be (B, 1, *spatial) on the grid of ddf {tuple(ddf.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    check_padding(padding)
    size = list(ddf.shape[2:])
    batch = ddf.shape[0]
    dtype = torch.float64 if ddf.dtype == torch.float64 else torch.float32
    ids = labels.to(torch.int64) if labels.is_floating_point() else labels.long()
    flat_ids = ids.reshape(batch, -1)
    strides = [1] * ndim
    for axis in range(ndim - 2, -1, -1):
        strides[axis] = strides[axis + 1] * size[axis + 1]
    grid = identity_grid(size, device=ddf.device, dtype=dtype).reshape(ndim, -1)
    field = ddf.to(dtype).reshape(batch, ndim, -1)
    out = torch.empty_like(flat_ids)
    total = grid.shape[1]
    corners = list(itertools.product((0, 1), repeat=ndim))
    for b in range(batch):
        for start in range(0, total, _CHUNK):
            stop = min(start + _CHUNK, total)
            pos = grid[:, start:stop] + field[b, :, start:stop]  # (ndim, P)
            out[b, start:stop] = _vote(flat_ids[b], pos, size, strides, corners, padding)
    return out.reshape(labels.shape).to(labels.dtype)


def _vote(
    flat_ids: Tensor,
    pos: Tensor,
    size: list[int],
    strides: list[int],
    corners: list[tuple[int, ...]],
    padding: str,
) -> Tensor:
    """The winning label at each of the ``P`` points ``pos`` ``(ndim, P)``."""
    ndim = len(size)
    if padding == "border":
        pos = torch.stack([pos[a].clamp(0, size[a] - 1) for a in range(ndim)])
    if padding == "reflection":  # the position mirrored into the image, then as inside
        pos = torch.stack([reflect(pos[a], size[a]) for a in range(ndim)])
    base = torch.floor(pos)
    frac = pos - base
    base = base.long()
    ids, weights = [], []
    for corner in corners:
        index = torch.zeros_like(base[0])
        weight = torch.ones_like(frac[0])
        inside = torch.ones_like(base[0], dtype=torch.bool)
        for axis, bit in enumerate(corner):
            i = base[axis] + bit
            inside &= (i >= 0) & (i < size[axis])
            index += i.clamp(0, size[axis] - 1) * strides[axis]
            weight = weight * (frac[axis] if bit else 1 - frac[axis])
        ids.append(flat_ids[index])
        weights.append(torch.where(inside, weight, torch.zeros_like(weight)))
    cid = torch.stack(ids, 1)  # (P, K)
    w = torch.stack(weights, 1)
    # score of each corner's label: the summed weight of the corners holding the same label
    score = ((cid[:, :, None] == cid[:, None, :]) * w[:, None, :]).sum(-1)
    # ties go to the smaller label (label 0 first with zero padding), as warp_labels
    key = cid.clone()
    if padding == "zeros":
        key[cid == 0] = torch.iinfo(torch.int64).min
    best = score.max(dim=1, keepdim=True).values
    candidates = torch.where(score == best, key, torch.iinfo(torch.int64).max)
    pick = candidates.argmin(dim=1, keepdim=True)
    winner = cid.gather(1, pick)[:, 0]
    if padding == "zeros":  # no corner inside (every score 0): label 0, as warp_labels
        winner = torch.where(best[:, 0] > 0, winner, torch.zeros_like(winner))
    return winner
