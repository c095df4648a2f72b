"""Evaluation measures for segmentations and displacement fields (2D and 3D).

Overlap (per label of integer label maps):

* :func:`dice` ``2|P∩T| / (|P| + |T|)``, :func:`sensitivity` ``|P∩T| / |T|`` and
  :func:`precision` ``|P∩T| / |P|``, where ``P`` and ``T`` are the voxels carrying the label in
  the prediction and the target.

Surface distances (per label, in mm when ``spacing`` is given, else in voxels):

* the **surface** of a mask is its boundary voxels: voxels of the mask with at least one
  face-connected neighbour (4-connectivity in 2D, 6 in 3D) outside the mask; the space outside
  the array counts as outside the mask, so a mask touching the array border has surface there;
* :func:`surface_distances` returns, for every surface voxel of ``a``, the Euclidean distance
  (voxel centre to voxel centre, axes scaled by ``spacing``) to the nearest surface voxel of
  ``b``, and the same from ``b`` to ``a`` (exact Euclidean distance transforms of
  :func:`scipy.ndimage.distance_transform_edt` with ``sampling=spacing``);
* :func:`average_surface_distance` is the mean of all those distances pooled together (both
  directions): ``(sum(d_ab) + sum(d_ba)) / (n_a + n_b)``, the average symmetric surface
  distance;
* :func:`hausdorff` is their maximum;
* :func:`hausdorff95` is the larger of the two directed 95th percentiles:
  ``max(percentile(d_ab, 95), percentile(d_ba, 95))`` (linear interpolation between order
  statistics, numpy's default), the definition of
  ``monai.metrics.compute_hausdorff_distance(..., percentile=95)`` (same surfaces: MONAI's
  edges are ``mask ^ binary_erosion(mask)`` with the same face connectivity and border);
* :func:`hausdorff95_pooled` is the 95th percentile of both directions' distances pooled
  together, ``percentile(concatenate([d_ab, d_ba]), 95)`` (drdm's ``hausdorff95`` before
  0.1; never larger than :func:`hausdorff95`).

Empty masks (a label absent from one or both maps) give explicit values, never an exception:

====================  =====================  ==========================
measure               both empty             only one empty
====================  =====================  ==========================
dice                  1.0                    0.0
sensitivity           1.0                    0.0 if the target has the label, else nan
precision             1.0                    0.0 if the prediction has it, else nan
ASD, HD, HD95         0.0                    inf
====================  =====================  ==========================

(``nan`` marks a ratio that is undefined, ``0 / 0``, while the other map is not empty: the
sensitivity of a prediction for a label the target lacks, the precision of an empty
prediction. ``inf`` is the distance to an empty surface.)

Displacement fields (voxel units, ``(ndim, *spatial)``, see :mod:`drdm.spatial`):
:func:`fold_ratio` and :func:`displacement_magnitude` wrap :func:`drdm.spatial.fold_ratio`
and :func:`drdm.spatial.magnitude_stats`.

Every function accepts numpy arrays or torch tensors (moved to the CPU) and returns Python
floats (or dicts of them, or numpy arrays for batches).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

__all__ = [
    "DisplacementMagnitude",
    "SurfaceDistances",
    "average_surface_distance",
    "dice",
    "displacement_magnitude",
    "fold_ratio",
    "hausdorff",
    "hausdorff95",
    "hausdorff95_pooled",
    "precision",
    "sensitivity",
    "surface_distances",
]

Labels = int | Iterable[int] | None


def _to_numpy(x: Any) -> np.ndarray:
    """numpy view of an array-like or a torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _to_numpy(pred)
    t = _to_numpy(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} must have the same shape")
    return p, t


def _label_list(p: np.ndarray, t: np.ndarray, labels: Labels) -> tuple[list[int], bool]:
    """The labels to evaluate and whether a single value (not a dict) is wanted."""
    if labels is None:
        values = np.union1d(np.unique(p), np.unique(t))
        return [int(v) for v in values if v != 0], False
    if isinstance(labels, (int, np.integer)):
        return [int(labels)], True
    return [int(v) for v in labels], False


def _per_label(
    pred: Any, target: Any, labels: Labels, fn: Any, **kwargs: Any
) -> float | dict[int, float]:
    p, t = _pair(pred, target)
    if p.dtype == bool:
        p = p.astype(np.uint8)
    if t.dtype == bool:
        t = t.astype(np.uint8)
    wanted, single = _label_list(p, t, labels)
    out = {lab: float(fn(p == lab, t == lab, **kwargs)) for lab in wanted}
    return out[wanted[0]] if single else out


def _ratio(num: int, den: int, other_empty: bool) -> float:
    if den > 0:
        return num / den
    return 1.0 if other_empty else float("nan")


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / total


def _sensitivity(p: np.ndarray, t: np.ndarray) -> float:
    return _ratio(int(np.logical_and(p, t).sum()), int(t.sum()), not p.any())


def _precision(p: np.ndarray, t: np.ndarray) -> float:
    return _ratio(int(np.logical_and(p, t).sum()), int(p.sum()), not t.any())


def dice(pred: Any, target: Any, labels: Labels = None) -> float | dict[int, float]:
    """Dice similarity coefficient (0..1) per label.

    Args:
        pred, target: integer (or boolean) label maps of the same shape, any number of axes.
        labels: one label (returns a float), several (returns ``{label: value}``), or ``None``
            for every non-zero label present in either map (a dict). Boolean masks carry
            label 1.

    Both masks empty: 1.0; one empty: 0.0.
    """
    return _per_label(pred, target, labels, _dice)


def sensitivity(pred: Any, target: Any, labels: Labels = None) -> float | dict[int, float]:
    """Sensitivity (recall, true-positive rate) ``|P∩T| / |T|`` per label; see :func:`dice`
    for ``labels``. Target empty: 1.0 if the prediction is empty too, else nan."""
    return _per_label(pred, target, labels, _sensitivity)


def precision(pred: Any, target: Any, labels: Labels = None) -> float | dict[int, float]:
    """Precision (positive predictive value) ``|P∩T| / |P|`` per label; see :func:`dice` for
    ``labels``. Prediction empty: 1.0 if the target is empty too, else nan."""
    return _per_label(pred, target, labels, _precision)


class SurfaceDistances(NamedTuple):
    """Directed surface distances (mm with a spacing, else voxels), one per surface voxel."""

    a_to_b: np.ndarray
    b_to_a: np.ndarray


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or min(values) <= 0:
        raise ValueError(f"spacing must be {ndim} positive values, got {list(spacing)}")
    return values


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: in the mask with a face-connected neighbour outside (border = outside).

    The same as ``mask & ~binary_erosion(mask, face connectivity, border_value=0)``, by
    shifted views of a padded copy (several times faster than ``scipy.ndimage``)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shift in (0, 2):
            view = list(inner)
            view[axis] = slice(shift, shift + mask.shape[axis])
            interior &= padded[tuple(view)]
    return mask & ~interior


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` cut to the bounding box of ``a | b`` plus one voxel (within the image).

    Distances between the two surfaces do not change: every surface voxel and its nearest
    surface voxel of the other mask lie in the box, and a voxel of the margin is outside both
    masks, as the image border counts as outside."""
    both = a | b
    if not both.any():
        return a, b
    box = []
    for axis in range(both.ndim):
        others = tuple(k for k in range(both.ndim) if k != axis)
        hit = np.flatnonzero(both.any(axis=others))
        box.append(slice(max(int(hit[0]) - 1, 0), min(int(hit[-1]) + 2, both.shape[axis])))
    return a[tuple(box)], b[tuple(box)]


def surface_distances(a: Any, b: Any, spacing: Sequence[float] | None = None) -> SurfaceDistances:
    """Distances between the surfaces of two binary masks (2D or 3D).

    Args:
        a, b: masks of the same shape (non-zero = inside).
        spacing: voxel size per axis (mm); ``None`` measures in voxels.

    Returns:
        ``SurfaceDistances(a_to_b, b_to_a)``: for each surface voxel of ``a`` the distance to
        the nearest surface voxel of ``b``, and vice versa (1D float64 arrays). If exactly one
        mask is empty, the other's distances are ``inf`` and the empty one's array is empty;
        if both are empty, both arrays are empty.
    """
    ma, mb = _pair(a, b)
    ma = ma.astype(bool)
    mb = mb.astype(bool)
    if ma.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got shape {ma.shape}")
    sampling = _spacing(spacing, ma.ndim)
    ma, mb = _crop_to_union(ma, mb)
    sa, sb = _surface(ma), _surface(mb)
    empty = np.zeros(0, dtype=np.float64)
    if not sa.any() or not sb.any():
        return SurfaceDistances(
            np.full(int(sa.sum()), np.inf) if sa.any() else empty,
            np.full(int(sb.sum()), np.inf) if sb.any() else empty,
        )
    to_b = ndimage.distance_transform_edt(~sb, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~sa, sampling=sampling)
    return SurfaceDistances(
        np.asarray(to_b[sa], dtype=np.float64), np.asarray(to_a[sb], dtype=np.float64)
    )


def _pooled(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None) -> np.ndarray | None:
    """All symmetric distances, or None when both masks are empty; inf when one is empty."""
    d = surface_distances(a, b, spacing)
    if d.a_to_b.size == 0 and d.b_to_a.size == 0:
        return None
    if d.a_to_b.size == 0 or d.b_to_a.size == 0:
        return np.array([np.inf])
    return np.concatenate([d.a_to_b, d.b_to_a])


def _asd(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None) -> float:
    d = _pooled(a, b, spacing)
    return 0.0 if d is None else float(d.mean())


def _hd(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None) -> float:
    d = _pooled(a, b, spacing)
    return 0.0 if d is None else float(d.max())


def _hd95_pooled(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None) -> float:
    d = _pooled(a, b, spacing)
    if d is None:
        return 0.0
    return math.inf if np.isinf(d).any() else float(np.percentile(d, 95))


def _hd95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None) -> float:
    d = surface_distances(a, b, spacing)
    if d.a_to_b.size == 0 and d.b_to_a.size == 0:
        return 0.0
    if d.a_to_b.size == 0 or d.b_to_a.size == 0:
        return math.inf
    return float(max(np.percentile(d.a_to_b, 95), np.percentile(d.b_to_a, 95)))


def average_surface_distance(
    pred: Any, target: Any, labels: Labels = None, spacing: Sequence[float] | None = None
) -> float | dict[int, float]:
    """Average symmetric surface distance per label (mm with ``spacing``, else voxels).

    The mean of the pooled distances of both directions (see the module docstring); ``labels``
    as in :func:`dice`. Both masks empty: 0.0; one empty: inf.
    """
    return _per_label(pred, target, labels, _asd, spacing=spacing)


def hausdorff(
    pred: Any, target: Any, labels: Labels = None, spacing: Sequence[float] | None = None
) -> float | dict[int, float]:
    """Hausdorff distance between the surfaces per label (the maximum of the pooled
    distances). Both masks empty: 0.0; one empty: inf."""
    return _per_label(pred, target, labels, _hd, spacing=spacing)


def hausdorff95(
    pred: Any, target: Any, labels: Labels = None, spacing: Sequence[float] | None = None
) -> float | dict[int, float]:
    """95% Hausdorff distance per label (mm with ``spacing``, else voxels): the larger of the
    two directed 95th percentiles (``numpy.percentile``, linear), as
    ``monai.metrics.compute_hausdorff_distance(percentile=95)`` computes it. ``labels`` as in
    :func:`dice`. Both masks empty: 0.0; one empty: inf."""
    return _per_label(pred, target, labels, _hd95, spacing=spacing)


def hausdorff95_pooled(
    pred: Any, target: Any, labels: Labels = None, spacing: Sequence[float] | None = None
) -> float | dict[int, float]:
    """The 95th percentile (``numpy.percentile``, linear) of both directions' surface distances
    pooled together, per label; at most :func:`hausdorff95`. A symmetric summary that weights
    each surface voxel once; not MONAI's definition. Both masks empty: 0.0; one empty: inf."""
    return _per_label(pred, target, labels, _hd95_pooled, spacing=spacing)


def _field(ddf: Any, batched: bool) -> Any:
    import torch

    t = ddf if isinstance(ddf, torch.Tensor) else torch.as_tensor(np.asarray(ddf))
    t = t.detach().to("cpu", torch.float64)
    if not batched:
        t = t.unsqueeze(0)
    if t.dim() not in (4, 5) or t.shape[1] != t.dim() - 2:
        shape = "(B, ndim, *spatial)" if batched else "(ndim, *spatial)"
        raise ValueError(f"ddf must be {shape} with ndim 2 or 3, got {tuple(ddf.shape)}")
    return t


def fold_ratio(ddf: Any, batched: bool = False) -> float | np.ndarray:
    """Fraction (0..1) of voxels where the Jacobian determinant of ``x -> x + u(x)`` is negative.

    ``ddf``: one field ``(ndim, *spatial)`` in voxels (a float is returned), or with
    ``batched=True`` a batch ``(B, ndim, *spatial)`` (a ``(B,)`` array). Computed by
    :func:`drdm.spatial.fold_ratio` (central differences).
    """
    from .spatial import fold_ratio as _fold_ratio

    ratios = _fold_ratio(_field(ddf, batched)).numpy()
    return ratios if batched else float(ratios[0])


class DisplacementMagnitude(NamedTuple):
    """Size of a displacement field ``|u(x)|``: ``mean``/``max`` in mm when a spacing was given
    (else voxels), ``mean_percent``/``max_percent`` in % of the image size (each component
    divided by the grid length along its axis, as :func:`drdm.spatial.magnitude_stats`).
    Floats for one field, ``(B,)`` arrays for a batch."""

    mean: Any
    max: Any
    mean_percent: Any
    max_percent: Any
    unit: str


def displacement_magnitude(
    ddf: Any, spacing: Sequence[float] | None = None, batched: bool = False
) -> DisplacementMagnitude:
    """Mean and maximum displacement length of a field in voxels (or mm) and in % of the size.

    ``ddf``: ``(ndim, *spatial)`` in voxels, or ``(B, ndim, *spatial)`` with ``batched=True``.
    ``spacing``: voxel size per axis; component ``i`` is multiplied by ``spacing[i]`` before
    the length is taken, so ``mean``/``max`` are in mm.
    """
    from .spatial import magnitude_stats

    t = _field(ddf, batched)
    ndim = t.shape[1]
    stats = magnitude_stats(t)
    scale = np.array(_spacing(spacing, ndim)).reshape(1, ndim, *([1] * ndim))
    length = np.sqrt(((t.numpy() * scale) ** 2).sum(axis=1)).reshape(t.shape[0], -1)
    values = (
        length.mean(axis=1),
        length.max(axis=1),
        stats.mean_percent.numpy(),
        stats.max_percent.numpy(),
    )
    if not batched:
        values = tuple(float(v[0]) for v in values)
    return DisplacementMagnitude(*values, unit="mm" if spacing is not None else "voxel")


class NonrigidResidual(NamedTuple):
    """What an affine map cannot explain of a displacement field over one region (one organ).

    ``mean``/``rms``: mean and root-mean-square length of the residual ``r(x)`` over the
    region; ``displacement``: mean ``|u(x)|`` over the region; ``size``: the region's diameter
    ``2 * sqrt(2) * sqrt(mean |x - centroid|^2)`` (exactly the diameter of a disk, see
    :func:`nonrigid_residual`); ``percent``: ``100 * mean / size``.
    Lengths in voxels, or mm when a spacing was given. ``affine``: ``(ndim, ndim + 1)`` array
    ``[A | b]`` of the fitted map ``x + u(x) ≈ A x + b`` (same units).
    """

    mean: float
    rms: float
    displacement: float
    size: float
    percent: float
    affine: np.ndarray


def nonrigid_residual(
    ddf: Any, mask: Any, spacing: Sequence[float] | None = None
) -> NonrigidResidual:
    """Non-rigid (non-affine) part of a displacement field over a region, e.g. one organ.

    Fits, by least squares over the voxels ``x`` of ``mask``, the affine map ``A x + b`` closest
    to the transform ``x -> x + u(x)`` and returns the residual
    ``r(x) = x + u(x) - (A x + b)``: the shape change of the region that no rotation,
    scaling, shear or translation can produce. Adding any affine field to ``u`` leaves ``r``
    unchanged; a field that is affine over the region has ``r = 0``.

    Convention: ``ddf`` is ``(ndim, *spatial)`` in voxels along the array axes, pull-back
    (``warped(x) = image(x + u(x))``, :mod:`drdm.spatial`). For a deformed label map the region
    to pass is the *deformed* organ (``warp_labels(label, ddf) == k``): the voxels whose
    source point ``x + u(x)`` lies in the organ, so the fitted map takes the deformed organ
    onto the original one. ``spacing``: voxel size per axis; coordinates and displacements are
    then in mm (and so are the results), else voxels.

    ``size`` is the region's diameter ``D = 2 sqrt(2) rho``, with ``rho`` the RMS distance of
    its voxels from their centroid (a disk of diameter ``D`` has ``rho = D / (2 sqrt 2)``; for a
    ring-like organ such as the myocardium ``D`` exceeds the outer diameter by up to 41 %).

    Raises ``ValueError`` for a mask with fewer than ``ndim + 1`` voxels or lying in a line
    or plane (the affine fit is then undetermined) or shapes that do not match.
    """
    u = _field(ddf, batched=False)[0].numpy()
    ndim = u.shape[0]
    m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask).astype(bool)
    if m.shape != u.shape[1:]:
        raise ValueError(f"mask shape {m.shape} does not match the field's grid {u.shape[1:]}")
    scale = np.array(_spacing(spacing, ndim), dtype=np.float64)
    index = np.nonzero(m)
    x = np.stack(index, axis=1).astype(np.float64) * scale  # (N, ndim)
    disp = u[(slice(None), *index)].T * scale  # (N, ndim)
    if x.shape[0] < ndim + 1:
        raise ValueError(f"mask has {x.shape[0]} voxels; an affine fit needs at least {ndim + 1}")
    centroid = x.mean(axis=0)
    xc = x - centroid
    design = np.concatenate([xc, np.ones((x.shape[0], 1))], axis=1)
    if np.linalg.matrix_rank(design) < ndim + 1:
        raise ValueError("mask lies in a line or plane: the affine fit is undetermined")
    target = xc + disp  # centred coordinates keep the fit well conditioned
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)  # (ndim + 1, ndim)
    residual = np.linalg.norm(target - design @ coef, axis=1)
    a = coef[:ndim].T
    b = coef[ndim] + centroid - a @ centroid
    rho = math.sqrt(float((xc**2).sum(axis=1).mean()))
    size = 2.0 * math.sqrt(2.0) * rho
    mean = float(residual.mean())
    return NonrigidResidual(
        mean=mean,
        rms=float(np.sqrt((residual**2).mean())),
        displacement=float(np.linalg.norm(disp, axis=1).mean()),
        size=size,
        percent=100.0 * mean / size if size > 0 else float("nan"),
        affine=np.concatenate([a, b[:, None]], axis=1),
    )


__all__ += ["NonrigidResidual", "nonrigid_residual"]
