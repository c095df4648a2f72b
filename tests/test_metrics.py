"""drdm.metrics against hand-computed cases and a brute-force surface-distance reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drdm import metrics
from drdm.spatial import fold_ratio as spatial_fold_ratio


def square(shape, start, size):
    m = np.zeros(shape, dtype=np.uint8)
    m[tuple(slice(s, s + size) for s in start)] = 1
    return m


def ball(shape, centre, radius, spacing=None):
    spacing = spacing or [1.0] * len(shape)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True))
    return (r2 <= radius**2).astype(np.uint8)


def brute_force(a, b, spacing):
    """Reference: surface voxels by explicit neighbour checks, all pairwise distances."""

    def surface(m):
        m = m.astype(bool)
        padded = np.pad(m, 1)
        inner = np.ones_like(m)
        for axis in range(m.ndim):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=axis)[
                    tuple(slice(1, -1) for _ in range(m.ndim))
                ]
        return np.argwhere(m & ~inner) * np.asarray(spacing)

    pa, pb = surface(a), surface(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1), d.min(axis=0)


# --- overlap ---------------------------------------------------------------------------------


def test_dice_sensitivity_precision_shifted_squares():
    a = square((32, 32), (5, 5), 10)  # 100 voxels
    b = square((32, 32), (8, 5), 10)  # shifted by 3 rows: overlap 70
    assert metrics.dice(a, b, labels=1) == pytest.approx(0.7)
    c = square((32, 32), (5, 5), 5)  # 25 voxels inside a
    assert metrics.sensitivity(c, a, labels=1) == pytest.approx(0.25)
    assert metrics.precision(c, a, labels=1) == pytest.approx(1.0)
    assert metrics.dice(c, a, labels=1) == pytest.approx(2 * 25 / 125)


def test_multi_label_maps_and_label_selection():
    pred = np.zeros((20, 20), dtype=np.int16)
    target = np.zeros((20, 20), dtype=np.int16)
    pred[2:6, 2:6] = 1
    target[2:6, 2:6] = 1  # identical
    pred[10:14, 10:14] = 3
    target[10:14, 12:16] = 3  # half overlap: 8 of 16
    target[0, 0] = 2  # only in the target
    d = metrics.dice(pred, target)
    assert set(d) == {1, 2, 3}
    assert d[1] == 1.0 and d[2] == 0.0 and d[3] == pytest.approx(0.5)
    assert metrics.dice(pred, target, labels=[3]) == {3: pytest.approx(0.5)}
    assert metrics.dice(pred, target, labels=3) == pytest.approx(0.5)
    # float maps holding integer values, tensors, booleans
    assert metrics.dice(torch.from_numpy(pred).float(), target.astype(np.float32), 3) == 0.5
    assert metrics.dice(pred == 3, target == 3, labels=1) == 0.5


def test_overlap_empty_masks():
    empty = np.zeros((8, 8), dtype=np.uint8)
    full = square((8, 8), (2, 2), 3)
    assert metrics.dice(empty, empty, labels=1) == 1.0
    assert metrics.dice(full, empty, labels=1) == 0.0
    assert metrics.dice(empty, full, labels=1) == 0.0
    assert metrics.sensitivity(empty, empty, labels=1) == 1.0
    assert metrics.sensitivity(empty, full, labels=1) == 0.0  # missed everything
    assert math.isnan(metrics.sensitivity(full, empty, labels=1))  # nothing to find
    assert metrics.precision(empty, empty, labels=1) == 1.0
    assert metrics.precision(full, empty, labels=1) == 0.0  # all false positives
    assert math.isnan(metrics.precision(empty, full, labels=1))  # predicted nothing
    assert metrics.dice(empty, empty) == {}


def test_overlap_symmetries():
    g = np.random.default_rng(0)
    a = g.integers(0, 3, size=(16, 16))
    b = g.integers(0, 3, size=(16, 16))
    assert metrics.dice(a, b) == pytest.approx(metrics.dice(b, a))
    assert metrics.sensitivity(a, b) == pytest.approx(metrics.precision(b, a))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        metrics.dice(np.zeros((4, 4)), np.zeros((4, 5)))


# --- surface distances -----------------------------------------------------------------------


def test_shifted_squares_hausdorff_equals_shift():
    a = square((40, 40), (10, 10), 10)
    for shift in (1, 3, 5):
        b = square((40, 40), (10 + shift, 10), 10)
        assert metrics.hausdorff(a, b, labels=1) == pytest.approx(shift)
        assert metrics.hausdorff(b, a, labels=1) == pytest.approx(shift)
        assert metrics.hausdorff95(a, b, labels=1) <= shift + 1e-9
    assert metrics.hausdorff(a, a, labels=1) == 0.0
    assert metrics.average_surface_distance(a, a, labels=1) == 0.0


def test_shifted_squares_asd_by_hand():
    # a: rows 5..14, b: rows 6..15 (columns 5..14). 36 surface voxels each. From a's surface
    # to b's: the top row (10 voxels) is 1 away; the bottom row's 8 inner voxels are 1 away
    # (b's bottom row or side columns); the rest lies on b's surface. Sum 18 each way, by
    # symmetry: ASD = 36 / 72; 36 of the 72 pooled distances are 1, so HD95 = 1.
    a = square((30, 30), (5, 5), 10)
    b = square((30, 30), (6, 5), 10)
    d = metrics.surface_distances(a, b)
    assert d.a_to_b.size == 36 and d.b_to_a.size == 36
    assert d.a_to_b.sum() == pytest.approx(18) and d.b_to_a.sum() == pytest.approx(18)
    assert metrics.average_surface_distance(a, b, labels=1) == pytest.approx(0.5)
    assert metrics.hausdorff95(a, b, labels=1) == pytest.approx(1.0)
    assert metrics.hausdorff(a, b, labels=1) == pytest.approx(1.0)
    # spacing (2, 1) mm: the top row is 2 mm away; bottom-row voxel in column c is
    # min(2, c - 5, 14 - c) mm away: 1 + 2 * 6 + 1 = 14. Sum 34 each way.
    asd = metrics.average_surface_distance(a, b, labels=1, spacing=(2.0, 1.0))
    assert asd == pytest.approx(68 / 72)
    assert metrics.hausdorff(a, b, labels=1, spacing=(2.0, 1.0)) == pytest.approx(2.0)


def test_hd95_definition_is_max_of_directed_percentiles():
    a = ball((48, 48), (24, 24), 10)
    b = ball((48, 48), (27, 22), 12)
    d = metrics.surface_distances(a, b)
    pooled = np.concatenate([d.a_to_b, d.b_to_a])
    directed = max(np.percentile(d.a_to_b, 95), np.percentile(d.b_to_a, 95))
    assert metrics.hausdorff95(a, b, labels=1) == pytest.approx(directed)
    assert metrics.hausdorff95_pooled(a, b, labels=1) == pytest.approx(np.percentile(pooled, 95))
    # the two definitions differ here, and the pooled one is the smaller
    assert metrics.hausdorff95_pooled(a, b, labels=1) < metrics.hausdorff95(a, b, labels=1) - 0.05
    assert metrics.hausdorff(a, b, labels=1) == pytest.approx(pooled.max())
    assert metrics.average_surface_distance(a, b, labels=1) == pytest.approx(pooled.mean())


def _random_blobs(shape, seed):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    out = np.zeros(shape, dtype=np.int64)
    for label in (1, 2):
        centre = [rng.uniform(0.3 * n, 0.7 * n) for n in shape]
        radii = [rng.uniform(0.1 * n, 0.3 * n) for n in shape]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True))
        out[inside <= 1] = label
    return out


@pytest.mark.parametrize(
    "shape, spacing",
    [((40, 48), (1.0, 1.0)), ((40, 48), (1.56, 0.8)), ((20, 24, 12), (1.2, 1.0, 3.0))],
)
def test_hd95_matches_monai(shape, spacing):
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    for seed in range(3):
        pred, target = _random_blobs(shape, seed), _random_blobs(shape, seed + 10)
        ours = metrics.hausdorff95(pred, target, labels=[1, 2], spacing=spacing)
        onehot = [np.stack([m == k for k in (0, 1, 2)])[None] for m in (pred, target)]
        theirs = monai_metrics.compute_hausdorff_distance(
            torch.from_numpy(onehot[0]).float(),
            torch.from_numpy(onehot[1]).float(),
            percentile=95,
            spacing=list(spacing),
        )[0]
        for k, label in enumerate((1, 2)):
            assert ours[label] == pytest.approx(float(theirs[k]), rel=1e-5, abs=1e-5)
        # the plain Hausdorff distance agrees too
        full = monai_metrics.compute_hausdorff_distance(
            torch.from_numpy(onehot[0]).float(),
            torch.from_numpy(onehot[1]).float(),
            spacing=list(spacing),
        )[0]
        hd = metrics.hausdorff(pred, target, labels=[1, 2], spacing=spacing)
        assert [hd[1], hd[2]] == pytest.approx(full.tolist(), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (2.0, 0.5), (0.7, 1.3)])
def test_surface_distances_match_brute_force(spacing):
    g = np.random.default_rng(1)
    a = ball((30, 30), (14, 15), 8)
    b = ball((30, 30), (16, 13), 6) | (g.random((30, 30)) > 0.97).astype(np.uint8)
    d = metrics.surface_distances(a, b, spacing)
    ref_ab, ref_ba = brute_force(a, b, spacing)
    np.testing.assert_allclose(np.sort(d.a_to_b), np.sort(ref_ab))
    np.testing.assert_allclose(np.sort(d.b_to_a), np.sort(ref_ba))


def test_concentric_circles_distance_is_radius_difference():
    inner = ball((64, 64), (31.5, 31.5), 10)
    outer = ball((64, 64), (31.5, 31.5), 16)
    # discretisation: surfaces are voxel centres within one voxel inside the true circle
    assert metrics.average_surface_distance(inner, outer, labels=1) == pytest.approx(6, abs=1)
    assert metrics.hausdorff(inner, outer, labels=1) == pytest.approx(6, abs=1)
    assert metrics.hausdorff95(inner, outer, labels=1) == pytest.approx(6, abs=1)


def test_concentric_spheres_3d_and_anisotropic_spacing():
    shape = (24, 24, 24)
    c = (11.5, 11.5, 11.5)
    inner, outer = ball(shape, c, 5), ball(shape, c, 9)
    assert metrics.average_surface_distance(inner, outer, labels=1) == pytest.approx(4, abs=1)
    assert metrics.hausdorff(inner, outer, labels=1) == pytest.approx(4, abs=1)
    # the same physical spheres on an anisotropic grid: 2 mm along axis 0
    spacing = (2.0, 1.0, 1.0)
    shape = (14, 28, 28)
    c = (6.5, 13.5, 13.5)  # voxels

    def mm_ball(radius):
        return ball(shape, c, radius, spacing)

    asd = metrics.average_surface_distance(mm_ball(6), mm_ball(11), labels=1, spacing=spacing)
    assert asd == pytest.approx(5, abs=1.5)


def test_anisotropic_spacing_scales_the_shift():
    a = square((40, 40), (10, 10), 10)
    down = square((40, 40), (13, 10), 10)  # 3 voxels along axis 0
    right = square((40, 40), (10, 13), 10)  # 3 voxels along axis 1
    spacing = (2.0, 0.5)
    assert metrics.hausdorff(a, down, labels=1, spacing=spacing) == pytest.approx(6.0)
    assert metrics.hausdorff(a, right, labels=1, spacing=spacing) == pytest.approx(1.5)
    iso = metrics.average_surface_distance(a, down, labels=1)
    assert metrics.average_surface_distance(a, down, labels=1, spacing=(2.0, 2.0)) == (
        pytest.approx(2 * iso)
    )


def test_surface_distance_empty_masks():
    empty = np.zeros((10, 10), dtype=np.uint8)
    m = square((10, 10), (2, 2), 4)
    for fn in (
        metrics.average_surface_distance,
        metrics.hausdorff,
        metrics.hausdorff95,
        metrics.hausdorff95_pooled,
    ):
        assert fn(empty, empty, labels=1) == 0.0
        assert fn(m, empty, labels=1) == math.inf
        assert fn(empty, m, labels=1) == math.inf
    d = metrics.surface_distances(m, empty)
    assert d.b_to_a.size == 0 and np.all(np.isinf(d.a_to_b)) and d.a_to_b.size == 12


def test_surface_of_mask_touching_border_and_single_voxel():
    a = np.zeros((6, 6), dtype=np.uint8)
    a[:, :3] = 1  # touches three borders: columns 0 and 2, and column 1 in rows 0 and 5
    d = metrics.surface_distances(a, a)
    assert d.a_to_b.size == 6 + 6 + 2
    dot = np.zeros((9, 9), dtype=np.uint8)
    dot[4, 4] = 1
    other = np.zeros((9, 9), dtype=np.uint8)
    other[1, 0] = 1
    assert metrics.hausdorff(dot, other, labels=1) == pytest.approx(5.0)


def test_surface_metrics_symmetric_and_per_label():
    pred = np.zeros((32, 32), dtype=np.int64)
    target = np.zeros((32, 32), dtype=np.int64)
    pred[4:12, 4:12] = 1
    target[6:12, 4:12] = 1
    pred[20:28, 20:28] = 2
    target[20:28, 20:28] = 2
    for fn in (metrics.average_surface_distance, metrics.hausdorff, metrics.hausdorff95):
        ab, ba = fn(pred, target), fn(target, pred)
        assert set(ab) == {1, 2}
        assert ab[1] == pytest.approx(ba[1]) and ab[2] == 0.0
    assert metrics.hausdorff(pred, target)[1] == pytest.approx(2.0)


def test_surface_distances_validation():
    with pytest.raises(ValueError, match="spacing"):
        metrics.surface_distances(np.ones((4, 4)), np.ones((4, 4)), spacing=(1.0,))
    with pytest.raises(ValueError, match="2D or 3D"):
        metrics.surface_distances(np.ones(4), np.ones(4))


# --- displacement fields ---------------------------------------------------------------------


def test_fold_ratio_wraps_spatial():
    g = torch.Generator().manual_seed(0)
    ddf = torch.randn(3, 2, 16, 16, generator=g, dtype=torch.float64) * 1.5
    expected = spatial_fold_ratio(ddf).numpy()
    np.testing.assert_allclose(metrics.fold_ratio(ddf, batched=True), expected)
    assert metrics.fold_ratio(ddf[1].numpy()) == pytest.approx(expected[1])
    assert metrics.fold_ratio(np.zeros((3, 4, 4, 4))) == 0.0
    # a reflection along axis 0 folds every voxel: u_0(x) = -2 x + const
    flip = np.zeros((2, 8, 8))
    flip[0] = (7 - 2 * np.arange(8))[:, None]
    assert metrics.fold_ratio(flip) == 1.0
    with pytest.raises(ValueError, match="ndim"):
        metrics.fold_ratio(np.zeros((3, 8, 8)))


def test_displacement_magnitude_voxels_mm_percent():
    ddf = np.zeros((2, 10, 20))
    ddf[0] = 3.0  # 3 voxels along axis 0 everywhere
    ddf[1, 0, 0] = 4.0  # one voxel also moves 4 along axis 1: length 5
    m = metrics.displacement_magnitude(ddf)
    assert m.unit == "voxel"
    assert m.max == pytest.approx(5.0)
    assert m.mean == pytest.approx((199 * 3 + 5) / 200)
    assert m.mean_percent == pytest.approx(100 * 3 / 10, rel=0.01)
    mm = metrics.displacement_magnitude(ddf, spacing=(2.0, 0.5))
    assert mm.unit == "mm"
    assert mm.max == pytest.approx(math.hypot(6.0, 2.0))
    assert mm.mean == pytest.approx((199 * 6 + math.hypot(6.0, 2.0)) / 200)
    batch = metrics.displacement_magnitude(torch.from_numpy(np.stack([ddf, 2 * ddf])), batched=True)
    np.testing.assert_allclose(batch.max, [5.0, 10.0])


def test_surface_matches_the_erosion_definition_also_at_the_image_border():
    from scipy import ndimage

    rng = np.random.default_rng(4)
    for shape in ((17, 23), (9, 11, 7)):
        mask = ndimage.binary_opening(rng.random(shape) > 0.4)
        mask[0] = True  # touches the image border
        structure = ndimage.generate_binary_structure(mask.ndim, 1)
        expected = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)
        np.testing.assert_array_equal(metrics._surface(mask), expected)


def test_surface_distances_work_on_the_masks_bounding_box(monkeypatch):
    # HD95 was 4.6x (3D: 11x) slower than MONAI's: the distance transforms ran on the whole
    # image; they now run on the bounding box of both masks plus one voxel, same values
    from scipy import ndimage

    shapes = []
    edt = ndimage.distance_transform_edt

    def recording(mask, sampling=None):
        shapes.append(mask.shape)
        return edt(mask, sampling=sampling)

    a = np.zeros((60, 70, 50), np.uint8)
    b = np.zeros_like(a)
    a[20:30, 10:25, 5:15] = 1
    b[22:33, 12:24, 0:12] = 1  # b touches the image border
    full = metrics.surface_distances(a, b, spacing=(1.5, 1.0, 2.0))
    monkeypatch.setattr(metrics.ndimage, "distance_transform_edt", recording)
    again = metrics.surface_distances(a, b, spacing=(1.5, 1.0, 2.0))
    assert shapes == [(15, 17, 16)] * 2
    brute = []
    for src, dst in ((a, b), (b, a)):
        ps = np.argwhere(metrics._surface(src.astype(bool))) * (1.5, 1.0, 2.0)
        qs = np.argwhere(metrics._surface(dst.astype(bool))) * (1.5, 1.0, 2.0)
        brute.append(np.sqrt(((ps[:, None] - qs[None]) ** 2).sum(-1)).min(1))
    np.testing.assert_allclose(again.a_to_b, brute[0])
    np.testing.assert_allclose(again.b_to_a, brute[1])
    np.testing.assert_array_equal(again.a_to_b, full.a_to_b)
