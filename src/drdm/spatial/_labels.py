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

from ._grid import check_field, identity_grid
from ._sample import Padding, check_padding, reflect

__all__ = ["warp_labels_onehot"]

#: points handled at once (bounds the memory of the ``(P, 2**ndim)`` corner tables)
_CHUNK = 1 << 18


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
