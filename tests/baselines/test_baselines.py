"""drdm.baselines: elastic, MRBS and BigAug behind the FieldSampler/IntensityTransform API."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drdm import metrics
from drdm.baselines import (
    INTENSITY,
    SPATIAL,
    BigAug,
    BigAugConfig,
    ElasticSampler,
    MRBSSampler,
)
from drdm.baselines._common import gaussian_kernel, smooth, smoothing_gain
from drdm.baselines.bigaug import content_rotation
from drdm.baselines.mrbs import bspline_matrix
from drdm.errors import InputError
from drdm.pipelines.registry import METHODS, make_method
from drdm.spatial import fold_ratio, identity_grid, magnitude_stats, warp, warp_labels


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SIZES = {2: (24, 20), 3: (12, 10, 8)}


def samplers(ndim):
    return {
        "elastic": ElasticSampler(ndim),
        "mrbs": MRBSSampler(ndim),
        "bigaug": BigAug(ndim).field_sampler(),
    }


# --- common FieldSampler behaviour -----------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", ["elastic", "mrbs", "bigaug"])
def test_shapes_dtype_reproducible(ndim, name):
    sampler = samplers(ndim)[name]
    assert sampler.ndim == ndim
    images = torch.rand(3, 2, *SIZES[ndim], generator=gen(9))
    a = sampler.sample_ddf(images, gen(1))
    assert a.shape == (3, ndim, *SIZES[ndim]) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, sampler.sample_ddf(images, gen(1)))
    assert not torch.equal(a, sampler.sample_ddf(images, gen(2)))
    if name != "bigaug":  # BigAug may leave two samples untransformed (both zero)
        assert not torch.equal(a[0], a[1])
    b = sampler.sample_ddf(images.double(), gen(1))
    assert b.dtype == torch.float64
    ints = sampler.sample_ddf((images * 10).long(), gen(1))
    assert ints.dtype == torch.float32
    with pytest.raises(ValueError, match="spatial axes"):
        sampler.sample_ddf(torch.zeros(1, 1, *[8] * (5 - ndim)), gen(0))


@pytest.mark.parametrize("ndim", [2, 3])
def test_default_fields_are_small_and_do_not_fold(ndim):
    size = (48, 48) if ndim == 2 else (20, 20, 20)
    images = torch.zeros(6, 1, *size)
    for name in ("elastic", "mrbs"):
        ddf = samplers(ndim)[name].sample_ddf(images, gen(3))
        assert float(fold_ratio(ddf).max()) < 1e-3, name
        stats = magnitude_stats(ddf)
        assert 1.0 < float(stats.mean_percent.mean()) < 4.0, name
        assert float(stats.max_percent.max()) < 15.0, name


def test_fields_follow_the_images_device_and_generator_is_the_only_randomness():
    images = torch.rand(2, 1, 16, 16)
    torch.manual_seed(0)
    a = ElasticSampler(2).sample_ddf(images, gen(5))
    torch.manual_seed(1)  # global state must not matter
    b = ElasticSampler(2).sample_ddf(images, gen(5))
    assert torch.equal(a, b)


# --- elastic ---------------------------------------------------------------------------------


def test_elastic_std_matches_alpha_in_voxels_and_relative_units():
    images = torch.zeros(16, 1, 64, 64)
    ddf = ElasticSampler(2, sigma=4.0, alpha=1.5, units="voxels").sample_ddf(images, gen(0))
    inner = ddf[..., 12:-12, 12:-12]  # away from the mirrored edges
    assert float(inner.std()) == pytest.approx(1.5, rel=0.1)
    rel = ElasticSampler(2, sigma=0.0625, alpha=0.02).sample_ddf(images, gen(0))
    assert float(rel[..., 12:-12, 12:-12].std()) == pytest.approx(0.02 * 64, rel=0.1)
    # anisotropic grid, relative units: component i scales with size i
    wide = ElasticSampler(2, sigma=0.1, alpha=0.02).sample_ddf(torch.zeros(16, 1, 32, 96), gen(0))
    ratio = float(wide[:, 1].std() / wide[:, 0].std())
    assert ratio == pytest.approx(3.0, rel=0.25)


def test_elastic_mm_units_and_ranges():
    images = torch.zeros(8, 1, 40, 40)
    mm = ElasticSampler(2, sigma=8.0, alpha=2.0, units="mm", spacing=(2.0, 1.0))
    ddf = mm.sample_ddf(images, gen(0))
    # 2 mm std: 1 voxel along axis 0 (2 mm voxels), 2 voxels along axis 1
    ratio = float(ddf[:, 1, 8:-8, 8:-8].std() / ddf[:, 0, 8:-8, 8:-8].std())
    assert ratio == pytest.approx(2.0, rel=0.2)
    ranged = ElasticSampler(2, sigma=(0.05, 0.15), alpha=(0.0, 0.03)).sample_ddf(images, gen(1))
    stds = ranged.flatten(1).std(dim=1)
    assert float(stds.max() / stds.min()) > 1.5  # per-sample magnitudes
    zero = ElasticSampler(2, alpha=0.0).sample_ddf(images, gen(1))
    assert torch.equal(zero, torch.zeros_like(zero))
    with pytest.raises(ValueError, match="spacing"):
        ElasticSampler(2, units="mm")
    with pytest.raises(ValueError, match="units"):
        ElasticSampler(2, units="cm")
    with pytest.raises(ValueError, match="sigma"):
        ElasticSampler(2, sigma=(0.2, 0.1))


@pytest.mark.parametrize(
    ("shape", "sigmas"),
    [((2, 3, 20, 7, 33), (1.5, 3.0, 2.0)), ((1, 1, 5, 4), (4.0, 0.3)), ((1, 2, 64, 1), (6.0, 0.0))],
)
def test_smooth_equals_mirrored_convolution(shape, sigmas):
    x = torch.randn(*shape, generator=gen(0), dtype=torch.float64)
    ref = x
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0:
            continue
        k = gaussian_kernel(sigma, torch.float64)
        r = (k.numel() - 1) // 2
        moved = ref.movedim(2 + axis, -1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        mode = "reflect" if r < moved.shape[-1] else "replicate"
        flat = torch.nn.functional.pad(flat, (r, r), mode=mode)
        out = torch.nn.functional.conv1d(flat, k.view(1, 1, -1))
        ref = out.reshape(moved.shape).movedim(-1, 2 + axis)
    assert torch.allclose(smooth(x, sigmas), ref, atol=1e-12)


def test_smoothing_gain_is_the_noise_std_after_smoothing():
    noise = torch.randn(1, 1, 200, 200, generator=gen(0), dtype=torch.float64)
    out = smooth(noise, [3.0, 3.0])[..., 20:-20, 20:-20]
    assert float(out.std()) == pytest.approx(smoothing_gain([3.0, 3.0]), rel=0.1)
    const = torch.full((1, 1, 9, 5), 2.0)
    assert torch.allclose(smooth(const, [2.0, 4.0]), const)  # normalised, edges too


# --- MRBS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "spacing"), [(32, 8.0), (33, 8.0), (20, 7.3), (5, 16.0), (1, 4)])
def test_bspline_matrix_partition_of_unity_and_linear_precision(size, spacing):
    m = bspline_matrix(size, spacing, torch.float64)
    assert (m >= 0).all()
    assert torch.allclose(m.sum(dim=1), torch.ones(size, dtype=torch.float64))
    # cubic B-splines reproduce linear functions: control values at the control positions
    n = m.shape[1]
    intervals = n - 3
    origin = ((size - 1) - intervals * spacing) / 2
    positions = origin + (torch.arange(n, dtype=torch.float64) - 1) * spacing
    assert torch.allclose(m @ positions, torch.arange(size, dtype=torch.float64))


def test_mrbs_bound_levels_and_units():
    images = torch.zeros(8, 1, 40, 30)
    sampler = MRBSSampler(
        2, grid_spacings=(10.0, 5.0), max_displacements=(2.0, 1.0), units="voxels"
    )
    ddf = sampler.sample_ddf(images, gen(0))
    assert float(ddf.abs().max()) <= 3.0 + 1e-5
    assert float(ddf.abs().max()) > 1.5  # the bound is approached
    one = MRBSSampler(2, grid_spacings=(0.5,), max_displacements=(0.05,)).sample_ddf(images, gen(0))
    assert float(one[:, 0].abs().max()) <= 0.05 * 40 + 1e-5
    assert float(one[:, 1].abs().max()) <= 0.05 * 30 + 1e-5
    # a coarse grid gives a smoother field than a fine one with the same amplitude
    coarse = MRBSSampler(2, (0.5,), (0.05,)).sample_ddf(images, gen(1))
    fine = MRBSSampler(2, (0.1,), (0.05,)).sample_ddf(images, gen(1))
    assert float(coarse.diff(dim=2).abs().mean()) < float(fine.diff(dim=2).abs().mean())
    with pytest.raises(ValueError, match="one value per level"):
        MRBSSampler(2, grid_spacings=(0.5, 0.25), max_displacements=(0.1,))


# --- BigAug ----------------------------------------------------------------------------------


def only(ndim, name, **options):
    return BigAug(ndim, probability=0.0, probabilities={name: 1.0}, **options)


@pytest.mark.parametrize("ndim", [2, 3])
def test_bigaug_identity_when_probabilities_are_zero(ndim):
    aug = BigAug(ndim, probability=0.0)
    images = torch.rand(4, 1, *SIZES[ndim], generator=gen(0))
    ddf = aug.field_sampler().sample_ddf(images, gen(1))
    assert torch.equal(ddf, torch.zeros_like(ddf))
    assert torch.equal(aug.intensity_transform()(images, gen(1)), images)


def test_bigaug_rotation_only_is_the_analytic_rotation_2d():
    size = (33, 41)
    images = torch.zeros(2, 1, *size, dtype=torch.float64)
    ddf = only(2, "rotation", rotation_deg=(25.0, 25.0)).field_sampler().sample_ddf(images, gen(0))
    t = math.radians(25.0)
    x = identity_grid(size, dtype=torch.float64)
    c = torch.tensor([16.0, 20.0], dtype=torch.float64).view(2, 1, 1)
    q = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=torch.float64)
    expected = torch.einsum("ij,jhw->ihw", q.T, x - c) + c - x
    assert torch.allclose(ddf[0], expected, atol=1e-10) and torch.allclose(ddf[1], expected)
    # direction: a blob on axis 0 (20 voxels from the centre) turns towards axis 1
    n, mid = 65, 32
    blob = torch.zeros(1, 1, n, n, dtype=torch.float64)
    blob[0, 0, mid + 19 : mid + 22, mid - 1 : mid + 2] = 1.0
    sampler = only(2, "rotation", rotation_deg=(30.0, 30.0)).field_sampler()
    moved = warp(blob, sampler.sample_ddf(blob, gen(0)))[0, 0]
    grid = identity_grid((n, n), dtype=torch.float64)
    centroid = (grid * moved).sum(dim=(1, 2)) / moved.sum()
    target = [mid + 20 * math.cos(math.pi / 6), mid + 20 * math.sin(math.pi / 6)]
    assert centroid.tolist() == pytest.approx(target, abs=0.1)


def test_bigaug_rotation_only_3d_preserves_distances_and_matches_matrix():
    size = (15, 13, 11)
    images = torch.zeros(1, 1, *size, dtype=torch.float64)
    ddf = only(3, "rotation", rotation_deg=(20.0, 20.0)).field_sampler().sample_ddf(images, gen(0))
    x = identity_grid(size, dtype=torch.float64)
    c = torch.tensor([7.0, 6.0, 5.0], dtype=torch.float64).view(3, 1, 1, 1)
    phi = x + ddf[0]
    assert torch.allclose((phi - c).norm(dim=0), (x - c).norm(dim=0), atol=1e-9)
    q = content_rotation(torch.full((1, 3), math.radians(20.0), dtype=torch.float64))[0]
    assert torch.allclose(phi - c, torch.einsum("ij,j...->i...", q.T, x - c), atol=1e-9)
    # content_rotation: angle k turns about array axis k; about axis 2 = plane (0, 1)
    about2 = content_rotation(torch.tensor([[0.0, 0.0, 0.3]], dtype=torch.float64))[0]
    assert about2[2].tolist() == [0.0, 0.0, 1.0]
    assert about2[1, 0] == pytest.approx(math.sin(0.3))
    assert torch.allclose(q @ q.T, torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_bigaug_rotation_in_mm_and_scaling():
    size = (21, 31)
    images = torch.zeros(1, 1, *size, dtype=torch.float64)
    spacing = (2.0, 1.0)
    aug = only(2, "rotation", rotation_deg=(40.0, 40.0), spacing=spacing)
    ddf = aug.field_sampler().sample_ddf(images, gen(0))[0]
    x = identity_grid(size, dtype=torch.float64)
    c = torch.tensor([10.0, 15.0], dtype=torch.float64).view(2, 1, 1)
    d = torch.tensor(spacing, dtype=torch.float64).view(2, 1, 1)
    # physical distances to the centre are preserved
    assert torch.allclose(((x + ddf - c) * d).norm(dim=0), ((x - c) * d).norm(dim=0))
    zoom = only(2, "scaling", scaling=(1.25, 1.25)).field_sampler().sample_ddf(images, gen(0))[0]
    assert torch.allclose(zoom, (x - c) * (1 / 1.25 - 1), atol=1e-12)


def test_bigaug_deformation_only_is_an_elastic_field():
    images = torch.zeros(4, 1, 40, 40)
    ddf = only(2, "deformation").field_sampler().sample_ddf(images, gen(0))
    assert float(ddf.abs().max()) > 0
    assert float(fold_ratio(ddf).max()) < 1e-3
    assert float(magnitude_stats(ddf).max_percent.max()) < 15.0


def test_bigaug_probability_half_applies_about_half():
    images = torch.zeros(400, 1, 8, 8)
    ddf = BigAug(2, probability=0.0, probabilities={"rotation": 0.5}).sample_ddf(images, gen(0))
    moved = (ddf.flatten(1).abs().amax(dim=1) > 0).float().mean()
    assert 0.4 < float(moved) < 0.6


def test_labels_warped_by_the_combined_field_stay_integer():
    labels = torch.zeros(3, 1, 40, 40, dtype=torch.int64)
    labels[:, :, 10:30, 12:28] = 1
    labels[:, :, 15:25, 16:24] = 3
    ddf = BigAug(2, probability=1.0).field_sampler().sample_ddf(labels.float(), gen(2))
    out = warp_labels(labels, ddf)
    assert out.dtype == torch.int64
    assert set(torch.unique(out).tolist()) <= {0, 1, 3}
    assert (out != labels).any()
    # consistency: the warped image's bright region is the warped label region
    image = (labels > 0).double()
    warped = warp(image, ddf.double())
    agreement = metrics.dice((warped > 0.5).numpy(), (out > 0).numpy(), labels=1)
    assert agreement > 0.95


@pytest.mark.parametrize("ndim", [2, 3])
def test_bigaug_intensity_keeps_shape_dtype_finite(ndim):
    images = torch.rand(6, 2, *SIZES[ndim], generator=gen(0))
    images[0] = 0.5  # a constant image: no division by a zero range
    out = BigAug(ndim, probability=1.0).intensity_transform()(images, gen(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.isfinite(out).all()
    assert not torch.equal(out, images)
    again = BigAug(ndim, probability=1.0).intensity_transform()(images, gen(1))
    assert torch.equal(out, again)
    out64 = BigAug(ndim).intensity_transform()(images.double(), gen(3))
    assert out64.dtype == torch.float64 and torch.isfinite(out64).all()
    with pytest.raises(TypeError, match="floating"):
        BigAug(ndim).intensity_transform()((images * 9).long(), gen(0))
    # the intensity part does not depend on ndim (it may follow a slice-wise 2D sampler)
    other = torch.rand(2, 1, *SIZES[5 - ndim], generator=gen(0))
    assert BigAug(ndim, probability=1.0).intensity_transform()(other, gen(0)).shape == other.shape


def test_bigaug_each_intensity_transform():
    g = gen(0)
    images = torch.rand(4, 1, 24, 24, generator=g, dtype=torch.float64) * 2.0 + 1.0
    span = (images.flatten(1).amax(1) - images.flatten(1).amin(1)).view(4, 1, 1, 1)
    for name in INTENSITY:
        out = only(2, name).intensity_transform()(images, gen(1))
        assert torch.isfinite(out).all() and not torch.allclose(out, images), name
    # brightness: a constant shift of at most 0.1 x range per image
    shift = only(2, "brightness").intensity_transform()(images, gen(1)) - images
    flat = shift.flatten(1)
    assert torch.allclose(flat.amax(1), flat.amin(1))
    assert (flat.abs().amax(1) <= 0.1 * span.flatten() + 1e-12).all()
    # perturbation: an affine map a I + c with a in [0.9, 1.1]
    out = only(2, "intensity_perturbation").intensity_transform()(images, gen(1))
    a = (out[:, :, 0, 1] - out[:, :, 0, 0]) / (images[:, :, 0, 1] - images[:, :, 0, 0])
    assert ((a >= 0.9 - 1e-9) & (a <= 1.1 + 1e-9)).all()
    assert torch.allclose(out, images * a.view(4, 1, 1, 1) + (out - images * a.view(4, 1, 1, 1)))
    # contrast: gamma keeps the minimum and maximum and the order of intensities
    out = only(2, "contrast").intensity_transform()(images, gen(1))
    assert torch.allclose(out.flatten(1).amin(1), images.flatten(1).amin(1))
    assert torch.allclose(out.flatten(1).amax(1), images.flatten(1).amax(1))
    order = images.flatten(1).argsort(dim=1)
    assert (out.flatten(1).gather(1, order).diff(dim=1) >= -1e-12).all()
    # blur lowers the variance; noise raises it by about (0.1..0.2 x range)^2
    blurred = only(2, "blurriness").intensity_transform()(images, gen(1))
    assert (blurred.flatten(1).var(1) < images.flatten(1).var(1)).all()
    noisy = only(2, "noise").intensity_transform()(images, gen(1))
    added = (noisy - images).flatten(1).std(1) / span.flatten()
    assert ((added > 0.08) & (added < 0.23)).all()


def test_bigaug_config_validation():
    assert BigAugConfig().prob("noise") == 0.5
    assert BigAug(2, probabilities={"noise": 0.2}).config.prob("noise") == 0.2
    assert set(SPATIAL) | set(INTENSITY) == {
        "sharpness",
        "blurriness",
        "noise",
        "brightness",
        "contrast",
        "intensity_perturbation",
        "rotation",
        "scaling",
        "deformation",
    }
    with pytest.raises(ValueError, match="unknown BigAug transforms"):
        BigAug(2, probabilities={"flip": 1.0})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BigAug(2, probability=1.5)
    with pytest.raises(TypeError, match="unknown BigAug option"):
        BigAug(2, rotation=5)
    with pytest.raises(ValueError, match="min, max"):
        BigAug(2, scaling=(1.5, 0.5))


# --- make_method -----------------------------------------------------------------------------


def test_make_method_names_and_errors():
    assert METHODS == ("none", "elastic", "mrbs", "bigaug", "drdm")
    assert make_method("none", 2) == (None, None)
    sampler, intensity = make_method("Elastic", 3, alpha=0.01)
    assert isinstance(sampler, ElasticSampler) and sampler.ndim == 3 and intensity is None
    assert sampler.alpha == (0.01, 0.01)
    sampler, intensity = make_method("mrbs", 2)
    assert isinstance(sampler, MRBSSampler) and intensity is None
    sampler, intensity = make_method("bigaug", 2, probability=0.0, noise_std=(0.0, 0.05))
    images = torch.rand(2, 1, 16, 16)
    assert torch.equal(intensity(images, gen(0)), images)
    assert sampler.sample_ddf(images, gen(0)).shape == (2, 2, 16, 16)
    with pytest.raises(InputError, match="unknown method 'flow'"):
        make_method("flow", 2)
    with pytest.raises(InputError, match=r"unknown option\(s\) \['sigmas'\]"):
        make_method("elastic", 2, sigmas=3)
    with pytest.raises(InputError, match="unknown option"):
        make_method("bigaug", 2, rotation=3)
    with pytest.raises(InputError, match="needs a model and a level"):
        make_method("drdm", 2)
    with pytest.raises(InputError, match="needs a level"):
        make_method("drdm", 2, model=object())
    with pytest.raises(InputError, match="ndim"):
        make_method("elastic", 4)


def test_make_method_drdm_and_protocols():
    deform = pytest.importorskip("drdm.pipelines.core")
    from helpers import tiny_model

    model = tiny_model()
    sampler, intensity = make_method("drdm", 2, model=model, level=4)
    assert intensity is None and isinstance(sampler, deform.DRDMSampler)
    assert sampler.ndim == 2 and sampler.level == 4
    images = torch.rand(2, 1, 20, 24)
    assert sampler.sample_ddf(images, gen(0)).shape == (2, 2, 20, 24)
    for name in ("elastic", "mrbs", "bigaug"):
        s, t = make_method(name, 2)
        assert isinstance(s, deform.FieldSampler)
        assert t is None or isinstance(t, deform.IntensityTransform)


def test_end_to_end_with_deform_volume():
    deform = pytest.importorskip("drdm.pipelines.core")
    image = np.random.default_rng(0).random((20, 24, 6)).astype(np.float32)
    label = np.zeros((20, 24, 6), dtype=np.uint8)
    label[5:15, 6:18] = 2
    sampler, intensity = make_method("bigaug", 2, probability=1.0)
    result = deform.deform_volume(sampler, image, [label], gen(0), intensity=intensity)
    assert result.image.shape == image.shape and np.isfinite(result.image).all()
    assert result.labels[0].dtype == np.uint8
    assert set(np.unique(result.labels[0])) <= {0, 2}
    assert result.ddf.shape == (3, 20, 24, 6)
