"""Tests for drdm.data.phantoms: shapes, ranges, labels, seeding and anatomical sanity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from drdm.data import (
    CARDIAC_LABELS,
    THORAX_LABELS,
    Phantom,
    cardiac_batch,
    cardiac_phantom_2d,
    thorax_batch,
    thorax_phantom_3d,
)

SEEDS = range(8)


@pytest.fixture(scope="module")
def hearts() -> list[Phantom]:
    return [cardiac_phantom_2d(128, seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def thoraces() -> list[Phantom]:
    return [thorax_phantom_3d(64, seed) for seed in range(3)]


def _dilate(mask: torch.Tensor, r: int = 1) -> torch.Tensor:
    """Dilation of a boolean mask by a (2r+1)-wide square/cube (r=1: 8-/26-neighbourhood)."""
    pool = F.max_pool2d if mask.dim() == 2 else F.max_pool3d
    return pool(mask[None, None].float(), 2 * r + 1, 1, r)[0, 0] > 0


def _centroid(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().float().mean(0)


# ---------------------------------------------------------------------------- basic contract


@pytest.mark.parametrize("size, shape", [(256, (256, 256)), ((96, 128), (96, 128)), (64, (64, 64))])
def test_cardiac_shapes_dtypes_range(size, shape):
    p = cardiac_phantom_2d(size, 3)
    assert isinstance(p, Phantom)
    assert p.image.shape == shape and p.label.shape == shape
    assert p.image.dtype == torch.float32 and p.label.dtype == torch.int64
    assert torch.isfinite(p.image).all()
    assert p.image.min() >= 0.0 and p.image.max() <= 1.0
    assert p.image.max() > 0.9  # normalised, not squashed
    assert p.label_names == CARDIAC_LABELS
    assert len(p.spacing) == 2 and all(s > 0 for s in p.spacing)
    for m in p.masks.values():
        assert m.shape == shape and m.dtype == torch.bool


@pytest.mark.parametrize("size, shape", [(64, (64, 64, 64)), ((40, 48, 56), (40, 48, 56))])
def test_thorax_shapes_dtypes_range(size, shape):
    p = thorax_phantom_3d(size, 1)
    assert p.image.shape == shape and p.label.shape == shape
    assert p.image.dtype == torch.float32 and p.label.dtype == torch.int64
    assert torch.isfinite(p.image).all()
    assert p.image.min() >= 0.0 and p.image.max() <= 1.0
    assert p.label_names == THORAX_LABELS == {0: "background", 1: "left_lung", 2: "right_lung"}
    assert len(p.spacing) == 3 and len(set(p.spacing)) == 1
    for m in p.masks.values():
        assert m.shape == shape and m.dtype == torch.bool


def test_cardiac_label_set(hearts):
    for p in hearts:
        assert set(p.label.unique().tolist()) == {0, 1, 2, 3}
    assert set(cardiac_phantom_2d(256, 11).label.unique().tolist()) == {0, 1, 2, 3}


def test_thorax_label_set(thoraces):
    for p in thoraces:
        assert set(p.label.unique().tolist()) == {0, 1, 2}


def test_batches():
    img, lab = cardiac_batch(3, 64, 5)
    assert img.shape == (3, 1, 64, 64) and lab.shape == (3, 1, 64, 64)
    assert img.dtype == torch.float32 and lab.dtype == torch.int64
    assert not torch.equal(img[0], img[1])
    img2, lab2 = cardiac_batch(3, 64, 5)
    assert torch.equal(img, img2) and torch.equal(lab, lab2)
    img, lab = thorax_batch(2, (24, 32, 32), 5)
    assert img.shape == (2, 1, 24, 32, 32) and lab.shape == (2, 1, 24, 32, 32)
    assert not torch.equal(img[0], img[1])


def test_bad_arguments():
    with pytest.raises(TypeError):
        cardiac_phantom_2d(64, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cardiac_phantom_2d((64, 64, 64))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        thorax_phantom_3d(4)


# ---------------------------------------------------------------------------- randomness


def test_same_seed_is_bit_identical():
    a, b = cardiac_phantom_2d(128, 42), cardiac_phantom_2d(128, 42)
    assert torch.equal(a.image, b.image) and torch.equal(a.label, b.label)
    g = torch.Generator().manual_seed(42)
    c = cardiac_phantom_2d(128, g)
    assert torch.equal(a.image, c.image) and torch.equal(a.label, c.label)
    assert torch.equal(cardiac_phantom_2d(64).image, cardiac_phantom_2d(64, 0).image)
    t1, t2 = thorax_phantom_3d(32, 7), thorax_phantom_3d(32, 7)
    assert torch.equal(t1.image, t2.image) and torch.equal(t1.label, t2.label)


def test_different_seeds_differ():
    a, b = cardiac_phantom_2d(128, 1), cardiac_phantom_2d(128, 2)
    assert not torch.equal(a.image, b.image) and not torch.equal(a.label, b.label)
    t1, t2 = thorax_phantom_3d(32, 1), thorax_phantom_3d(32, 2)
    assert not torch.equal(t1.image, t2.image) and not torch.equal(t1.label, t2.label)


def test_generator_is_advanced():
    g = torch.Generator().manual_seed(3)
    a, b = cardiac_phantom_2d(64, g), cardiac_phantom_2d(64, g)
    assert not torch.equal(a.image, b.image)


def test_global_rng_untouched():
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()  # noqa: NPY002 - inspecting the legacy global state
    cardiac_phantom_2d(64, 5)
    cardiac_batch(2, 32, None)
    thorax_phantom_3d(32, 5)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    after = np.random.get_state()  # noqa: NPY002
    assert np.array_equal(after[1], np_state[1]) and after[2] == np_state[2]


def test_anatomy_is_resolution_independent():
    """One seed gives the same anatomy (in mm) at every grid size."""
    lo, hi = cardiac_phantom_2d(128, 9), cardiac_phantom_2d(256, 9)
    for k in (1, 2, 3):
        c_lo = (_centroid(lo.label == k) + 0.5) * 2.0  # in 256-grid pixels
        c_hi = _centroid(hi.label == k) + 0.5
        assert (c_lo - c_hi).abs().max() < 1.5
    area_lo = (lo.label == 3).sum() * 4
    area_hi = (hi.label == 3).sum()
    assert abs(area_lo - area_hi) / area_hi < 0.05


# ---------------------------------------------------------------------------- cardiac anatomy


def test_myocardium_encloses_lv_cavity(hearts):
    for p in hearts:
        lv = p.label == 3
        ring = _dilate(lv) & ~lv
        assert (p.label[ring] == 2).all(), "LV cavity touches something other than myocardium"
        # one connected cavity, away from the image border
        _, n = ndimage.label(lv.numpy())
        assert n == 1
        assert not lv[0].any() and not lv[-1].any() and not lv[:, 0].any() and not lv[:, -1].any()


def test_lv_centroid_inside_myocardial_ring(hearts):
    for p in hearts:
        cy, cx = _centroid(p.label == 3).tolist()
        assert p.label[round(cy), round(cx)] == 3
        H, W = p.label.shape
        # every ray from the centroid leaves the cavity into the myocardium
        for ang in np.linspace(0.0, 2 * math.pi, 32, endpoint=False):
            r = 0.0
            while True:
                r += 0.25
                y, x = round(cy + r * math.sin(ang)), round(cx + r * math.cos(ang))
                assert 0 <= y < H and 0 <= x < W
                if p.label[y, x] != 3:
                    assert p.label[y, x] == 2
                    break


def test_rv_is_a_septal_crescent(hearts):
    for p in hearts:
        rv, myo, lv = p.label == 1, p.label == 2, p.label == 3
        assert (_dilate(rv) & myo).any(), "RV does not touch the myocardium"
        # the RV lies on the patient's right (image left) of the LV
        assert _centroid(rv)[1] < _centroid(lv)[1]
        # the septum (myocardium) always separates the two cavities
        assert not (_dilate(rv) & lv).any()


def test_cardiac_sizes_plausible_and_varied():
    diam, myo_ratio = [], []
    for seed in range(16):
        lab = cardiac_phantom_2d(96, 100 + seed).label
        lv = (lab == 3).sum().item()
        diam.append(2 * math.sqrt(lv / math.pi) / 96)
        myo_ratio.append((lab == 2).sum().item() / lv)
    diam_t = torch.tensor(diam)
    assert 0.1 < diam_t.min() and diam_t.max() < 0.3  # LV cavity ~15-25 % of the width
    assert 0.15 < diam_t.median() < 0.22
    assert diam_t.std() / diam_t.mean() > 0.08  # size varies across seeds
    assert 0.3 < min(myo_ratio) and max(myo_ratio) < 3.0


def test_cardiac_contrast(hearts):
    for p in hearts:
        img, lab = p.image, p.label
        blood = img[lab == 3].median()
        myo = img[lab == 2].median()
        assert blood > myo + 0.3  # bright-blood SSFP
        assert img[lab == 1].median() > myo + 0.25
        outside = ~_dilate(p.masks["body"])
        assert img[outside].median() < 0.1  # air is dark (Rician floor only)
        assert p.masks["lungs"].any() and img[p.masks["lungs"]].median() < myo


def test_cardiac_noise_and_bias_switches():
    clean = cardiac_phantom_2d(128, 4, noise=0.0, bias=0.0)
    noisy = cardiac_phantom_2d(128, 4)
    assert torch.equal(clean.label, noisy.label)
    outside = ~_dilate(clean.masks["body"], 4)
    assert clean.image[outside].max() < 1e-3 < noisy.image[outside].std()


# ---------------------------------------------------------------------------- thorax anatomy


def test_lungs_left_and_right(thoraces):
    for p in thoraces:
        W = p.label.shape[2]
        left, right = p.label == 1, p.label == 2
        # axis 2 runs from the patient's right (index 0) to the left
        assert _centroid(left)[2] > W / 2 > _centroid(right)[2]
        assert (left.nonzero()[:, 2] > W / 2 - 2).float().mean() > 0.98
        assert (right.nonzero()[:, 2] < W / 2 + 2).float().mean() > 0.98
        assert 0.5 < left.sum() / right.sum() < 2.0


def test_lungs_inside_body_and_fov(thoraces):
    for p in thoraces:
        lungs = p.label > 0
        assert not (lungs & ~p.masks["body"]).any()
        assert not lungs[0].any() and not lungs[-1].any()  # apex and bases inside the FOV
        assert not (lungs & p.masks["heart"]).any()
        litres = lungs.sum().item() * math.prod(p.spacing) / 1e6
        assert 2.0 < litres < 8.0  # adult lungs at CT inspiration: a few litres


def test_thorax_intensities(thoraces):
    for p in thoraces:
        img, lab, masks = p.image, p.label, p.masks
        lungs = lab > 0
        parenchyma = lungs & ~_dilate(masks["vessels"])
        lung_level = img[parenchyma].median()
        assert 0.05 < lung_level < 0.25
        assert masks["vessels"].any()
        assert img[masks["vessels"]].mean() > lung_level + 0.1
        soft = masks["body"] & ~_dilate(lungs | masks["bone"] | masks["airways"])
        assert 0.4 < img[soft].median() < 0.65
        assert img[masks["bone"]].mean() > img[soft].median() + 0.05
        air = ~_dilate(masks["body"])
        assert img[air].median() < 0.02
        assert img[masks["airways"]].median() < lung_level + 0.1


# ------------------------------------------------------------------ the cardiac phantom's parts
def test_the_cardiac_parts_compose_to_the_phantom():
    from drdm.data.phantoms import cardiac as c
    from drdm.data.phantoms._common import _as_generator, _Rng, _Waves

    H, W, s = 64, 72, 4.0
    rng = _Rng(_as_generator(3))
    ngen = rng.fork()
    pl = c._Plane(H, W, s, s, [_Waves(rng, 2, 6, (70.0, 220.0), 2.0) for _ in range(2)])
    heart = c._draw_heart(rng, s)
    sur = c._draw_surroundings(rng, heart)
    con = c._draw_contrast(rng, None, None)
    dist = c._distances(pl, s, heart, sur)
    img, papillary = c._draw_anatomy(pl, 0.3 * s, s, heart, sur, con, dist, ngen)
    img = c._acquire(img, pl, s, con, ngen)
    label, rv_wall = c._labels(pl, dist)
    ph = c.cardiac_phantom_2d((H, W), 3, spacing=s)
    assert torch.equal(img, ph.image) and torch.equal(label, ph.label)
    assert torch.equal(rv_wall, ph.masks["rv_wall"]) and torch.equal(
        papillary, ph.masks["papillary"]
    )


@pytest.mark.parametrize("seed", range(6))
def test_cardiac_heart_geometry_is_in_the_documented_ranges(seed):
    from drdm.data.phantoms import cardiac as c
    from drdm.data.phantoms._common import _as_generator, _Rng

    heart = c._draw_heart(_Rng(_as_generator(seed)), 1.0)
    assert 0.0 <= heart.phase <= 1.0 and 0.0 <= heart.level <= 1.0
    assert 16.0 <= heart.R <= 33.0  # LV cavity radius (mm)
    assert 6.0 <= heart.T0 <= 15.2  # myocardial wall (mm)
    assert heart.R_epi == heart.R + heart.T0
    assert len(heart.pms) == 2


def test_cardiac_labels_are_the_hard_shapes():
    from drdm.data.phantoms import cardiac as c

    ph = c.cardiac_phantom_2d(48, 1)
    lv = ph.label == 3
    # the myocardium (2) surrounds the LV cavity: no LV voxel touches the RV or background
    ring = torch.nn.functional.max_pool2d(lv[None, None].float(), 3, 1, 1)[0, 0] > 0
    assert set(ph.label[ring & ~lv].unique().tolist()) <= {2}


# ------------------------------------------------------------------ the thorax phantom's parts
def test_the_thorax_parts_compose_to_the_phantom():
    from drdm.data.phantoms import thorax as t
    from drdm.data.phantoms._common import _as_generator, _Rng, _Waves

    D, H, W, s = 20, 24, 28, 14.0
    rng = _Rng(_as_generator(2))
    ngen = rng.fork()
    w = 0.3 * s
    grid = t._Grid3((D, H, W), s, [_Waves(rng, 3, 5, (90.0, 300.0), 3.0) for _ in range(3)])
    Z, Y, X = grid.Z, grid.Y, grid.X
    frame = t._draw_frame(rng)
    heart = t._draw_heart(rng, frame)
    tubes = t._draw_tubes(rng, frame, heart)
    lungs = t._draw_lungs_and_abdomen(rng, frame, tubes)
    trees = t._draw_vessel_trees(rng, heart, tubes, lungs)
    hu = t._draw_intensities(rng, None)
    wall = t._wall_shapes(Z, Y, X, grid, w, frame, lungs)
    spine = t._spine_shapes(grid, frame)
    organs = t._organ_shapes(X, grid, s, frame, heart, tubes, lungs, trees, wall, spine)
    window = (-1000.0, 900.0)
    img = t._compose(D, H, W, Y, X, grid, ngen, w, window, frame, lungs, hu, wall, spine, organs)
    ph = t._assemble(img, D, H, W, s, wall, spine, organs)
    ref = t.thorax_phantom_3d((D, H, W), 2, spacing=s)
    assert torch.equal(ph.image, ref.image) and torch.equal(ph.label, ref.label)
    assert all(torch.equal(ph.masks[k], ref.masks[k]) for k in ref.masks)


@pytest.mark.parametrize("seed", range(4))
def test_thorax_heart_sits_on_the_diaphragm(seed):
    from drdm.data.phantoms import thorax as t
    from drdm.data.phantoms._common import _as_generator, _Rng, _Waves

    rng = _Rng(_as_generator(seed))
    rng.fork()
    [_Waves(rng, 3, 5, (90.0, 300.0), 3.0) for _ in range(3)]
    frame = t._draw_frame(rng)
    heart = t._draw_heart(rng, frame)
    assert 55.0 <= heart.ha[0] <= 68.0 and 42.0 <= heart.ha[1] <= 52.0
    dz, hy, hx = heart.hc
    dome = max(frame.dome(frame.zl, 1.0, hx, hy), frame.dome(frame.zr, -1.0, hx, hy))
    assert 25.0 <= dz - dome <= 40.0  # centre 25-40 mm above the higher diaphragm dome
    e = torch.tensor(heart.frame)
    torch.testing.assert_close(e @ e.T, torch.eye(3), atol=1e-5, rtol=0)  # orthonormal axes
