"""Tests of the authors' forward-process preset (drdm.diffusion.official_process) and of running
their imported checkpoint end to end (skipped when ../shared is absent)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drdm.diffusion.official_process import OfficialForwardProcess, OfficialProcessConfig
from drdm.spatial import warp

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PTH = SHARED / "data" / "official_drdm" / "cmr_recresacnet_000000.pth"
SAMPLE = SHARED / "data" / "samples" / "mnms_OpenDataset_162867.nii.gz"


def constant(batch, ndim, grid, values, dtype=torch.float64):
    field = torch.zeros(batch, ndim, *([grid] * ndim), dtype=dtype)
    for axis, v in enumerate(values):
        field[:, axis] = v
    return field


def test_counts():
    p = OfficialForwardProcess()
    t = torch.arange(0, 81)
    expected_cum = [min(200, max(1, math.floor(2 * k**1.3 / 3))) for k in range(81)]
    expected_step = [math.floor(k**0.6) for k in range(81)]
    assert p.cumulative_counts(t).tolist() == expected_cum
    assert p.step_counts(t).tolist() == expected_step
    assert expected_cum[:4] == [1, 1, 1, 2] and expected_cum[80] == 198
    assert expected_step[:3] == [0, 1, 1] and expected_step[80] == 13
    big = OfficialForwardProcess(OfficialProcessConfig(num_steps=300))
    assert big.cumulative_counts(torch.tensor([150, 300])).tolist() == [200, 200]


@pytest.mark.parametrize("ndim,size", [(2, (40, 40)), (2, (32, 48)), (3, (12, 12, 12))])
def test_shapes(ndim, size):
    p = OfficialForwardProcess(OfficialProcessConfig(ndim=ndim))
    t = torch.tensor([3, 20] if ndim == 2 else [2, 4])  # 3D: 64^3 control grid, fewer steps
    fields = p.sample_fields(size, t, torch.Generator().manual_seed(0))
    for field in fields:
        assert field.shape == (2, ndim, *size) and field.dtype == torch.float32
        assert torch.isfinite(field).all()
    assert p.random_velocity(3, torch.Generator().manual_seed(0)).shape == (3, ndim, *[64] * ndim)


@pytest.mark.parametrize("t", [1, 7, 30, 80])
def test_constant_velocity_displacement_is_count_times_velocity(t):
    """Composing a constant field n times gives exactly n times it; x (S/64) * S to voxels."""
    p = OfficialForwardProcess()
    v = (0.3, -0.1)  # control-grid voxels
    size = (64, 64)
    fields = p.fields_from_velocity(constant(1, 2, 64, v), None, t, size)
    n_cum = p.cumulative_counts(torch.tensor(t)).item()
    n_step = p.step_counts(torch.tensor(t)).item()
    for axis, value in enumerate(v):
        # at S = 64 = grid size the factor (S / 64) * (S / 64) is 1
        torch.testing.assert_close(
            fields.cumulative[:, axis], torch.full((1, *size), n_cum * value, dtype=torch.float64)
        )
        torch.testing.assert_close(
            fields.step[:, axis], torch.full((1, *size), n_step * value, dtype=torch.float64)
        )


@pytest.mark.parametrize("size", [(32, 32), (128, 128), (256, 256), (96, 160)])
def test_scaling_by_size_over_64(size):
    """Values are multiplied by S / 64 in image-size units, i.e. by (S / 64)**2 in control-grid
    voxels -> image voxels; 'geometric' uses the grid's own factor 2 S / 64 instead."""
    v = (0.25, 0.5)
    t = 10
    n = OfficialForwardProcess().cumulative_counts(torch.tensor(t)).item()
    for scale in ("official", "geometric"):
        p = OfficialForwardProcess(OfficialProcessConfig(displacement_scale=scale))
        field = p.fields_from_velocity(constant(1, 2, 64, v), None, t, size).cumulative
        for axis, value in enumerate(v):
            s = size[axis]
            factor = (s / 64) ** 2 if scale == "official" else 2 * s / 64
            assert torch.allclose(
                field[:, axis], torch.tensor(n * value * factor, dtype=field.dtype)
            )
    # in image-extent units: official = (S / 64) x control-grid extents, twice the geometric
    # 2 x at S = 256, i.e. double what the grid (spanning twice the image) implies
    off = OfficialForwardProcess().fields_from_velocity(constant(1, 2, 64, v), None, t, (256, 256))
    geo = OfficialForwardProcess(
        OfficialProcessConfig(displacement_scale="geometric")
    ).fields_from_velocity(constant(1, 2, 64, v), None, t, (256, 256))
    torch.testing.assert_close(off.cumulative, 2 * geo.cumulative)


@pytest.mark.parametrize("size", [(40, 40), (256, 256), (30, 50)])
def test_crop_equals_literal_upsample_and_centre_crop(size):
    """The cropped sampling equals F.interpolate to 2 S (edge-aligned) then the centre crop."""
    p = OfficialForwardProcess()
    v = p.random_velocity(2, torch.Generator().manual_seed(1), dtype=torch.float64) * 50
    fields = p.fields_from_velocity(v, None, torch.tensor([5, 9]), size)
    ddf = p._repeat_compose(v, p.cumulative_counts(torch.tensor([5, 9])))
    big = F.interpolate(ddf, size=tuple(2 * s for s in size), mode="bilinear", align_corners=False)
    lo = [s // 2 for s in size]
    crop = big[..., lo[0] : lo[0] + size[0], lo[1] : lo[1] + size[1]]
    factor = torch.tensor([(s / 64) ** 2 for s in size], dtype=torch.float64).view(1, 2, 1, 1)
    torch.testing.assert_close(fields.cumulative, crop * factor, rtol=1e-10, atol=1e-10)


def test_per_sample_counts():
    p = OfficialForwardProcess()
    t = torch.tensor([1, 10, 80])
    fields = p.fields_from_velocity(constant(3, 2, 64, (0.1, 0.2)), None, t, (64, 64))
    for i, n in enumerate(p.cumulative_counts(t).tolist()):
        assert torch.allclose(fields.cumulative[i, 1], torch.tensor(0.2 * n, dtype=torch.float64))
    for i, n in enumerate(p.step_counts(t).tolist()):
        assert torch.allclose(fields.step[i, 0], torch.tensor(0.1 * n, dtype=torch.float64))


def test_composition_order_is_velocity_after_accumulated():
    """phi <- compose(v, phi): phi_{k+1}(x) = v(x) + phi_k(x + v(x))."""
    p = OfficialForwardProcess()
    v = p.random_velocity(1, torch.Generator().manual_seed(5), dtype=torch.float64) * 100
    two = p._repeat_compose(v, torch.tensor([2]))
    torch.testing.assert_close(two, v + warp(v, v, padding="border"))


def test_perturbation_enters_the_cumulative_field_only():
    size, t = (48, 48), torch.tensor([20, 40])
    plain = OfficialForwardProcess(OfficialProcessConfig(always_perturb=False))
    perturbed = OfficialForwardProcess()  # always_perturb=True, as the authors' code
    a = plain.sample_fields(size, t, torch.Generator().manual_seed(3))
    b = perturbed.sample_fields(size, t, torch.Generator().manual_seed(3))
    c = plain.sample_fields(size, t, torch.Generator().manual_seed(3), perturb=True)
    assert torch.equal(a.step, b.step)  # the velocity is drawn first, the step is unperturbed
    assert not torch.equal(a.cumulative, b.cumulative)
    assert torch.equal(b.cumulative, c.cumulative)
    # the perturbed velocity is v + p(x + v(x)) with p of 8 % of v's scale
    gen = torch.Generator().manual_seed(3)
    v = perturbed.random_velocity(2, gen)
    noise = perturbed.random_velocity(2, gen, scale=0.08)
    expected = perturbed.fields_from_velocity(v, noise, t, size)
    torch.testing.assert_close(b.cumulative, expected.cumulative, rtol=0, atol=0)
    ratio = noise.std() / v.std()
    assert 0.06 < ratio < 0.1


def test_velocity_statistics():
    config = OfficialProcessConfig(resolutions=(64,), v_scale=1e-3)
    v = OfficialForwardProcess(config).random_velocity(8, torch.Generator().manual_seed(0))
    assert v.std().item() == pytest.approx(1e-3 * 64, rel=0.02)  # extents -> control voxels
    assert abs(v.mean().item()) < 2e-3
    full = OfficialForwardProcess()
    assert full.expected_velocity_std() == pytest.approx(4e-5 * math.sqrt(1 + 4 + 16 + 64))


def test_seeds_reproduce():
    p = OfficialForwardProcess()
    a = p.sample_fields((64, 64), 30, torch.Generator().manual_seed(7), batch=2)
    b = p.sample_fields((64, 64), 30, torch.Generator().manual_seed(7), batch=2)
    c = p.sample_fields((64, 64), 30, torch.Generator().manual_seed(8), batch=2)
    assert torch.equal(a.cumulative, b.cumulative) and torch.equal(a.step, b.step)
    assert not torch.equal(a.cumulative, c.cumulative)
    assert not torch.equal(a.cumulative[0], a.cumulative[1])


def test_magnitude_grows_with_t():
    p = OfficialForwardProcess()
    gen = torch.Generator().manual_seed(0)
    means = [
        p.sample_fields((128, 128), t, gen, batch=4).cumulative.norm(dim=1).mean().item()
        for t in (5, 30, 70)
    ]
    assert means[0] < means[1] < means[2]


def test_sample_warps_bicubically():
    p = OfficialForwardProcess()
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = p.sample(images, torch.tensor([10, 20]), torch.Generator().manual_seed(1))
    fields = p.sample_fields((32, 32), torch.tensor([10, 20]), torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.cumulative, fields.cumulative, rtol=0, atol=0)
    torch.testing.assert_close(out.images, warp(images, fields.cumulative, mode="cubic"))


def test_validation():
    p = OfficialForwardProcess()
    with pytest.raises(ValueError, match="0..80"):
        p.sample_fields((32, 32), 81)
    with pytest.raises(ValueError, match="0..80"):
        p.sample_fields((32, 32), -1)
    with pytest.raises(TypeError, match="integers"):
        p.sample_fields((32, 32), torch.tensor([2.5]))
    with pytest.raises(ValueError, match="2 positive sizes"):
        p.sample_fields((32, 32, 32), 3)
    with pytest.raises(ValueError, match="one timestep per sample"):
        p.sample_fields((32, 32), torch.tensor([1, 2]), batch=3)
    with pytest.raises(ValueError, match="displacement_scale"):
        OfficialProcessConfig(displacement_scale="double")
    with pytest.raises(ValueError, match="unknown"):
        OfficialProcessConfig.from_dict({"vscale": 1.0})
    config = OfficialProcessConfig(ndim=3, resolutions=[32, 16])
    assert OfficialProcessConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["resolutions"] == [32, 16]


def test_official_checkpoint_generates_on_the_real_sample(tmp_path):
    """Import the authors' checkpoint with the CLI, then run it as the authors do."""
    if not PTH.is_file() or not SAMPLE.is_file():
        pytest.skip("../shared/data (official checkpoint, sample) is not available")
    from drdm import DRDM
    from drdm.cli.main import main
    from drdm.io import read_volume

    out_dir = tmp_path / "official"
    assert main(["import-official", str(PTH), str(out_dir)]) == 0
    model = DRDM.from_pretrained(out_dir)
    assert model.preset == "official" and model.image_size == (256, 256)
    assert model.sampler.compose_padding == "zeros" and model.sampler.image_mode == "cubic"
    assert isinstance(model.process, OfficialForwardProcess)
    image = read_volume(SAMPLE).array
    assert image.shape == (256, 256)
    out = model.generate(image, level=10, generator=torch.Generator().manual_seed(0))
    assert out.ddf.shape == (1, 2, 256, 256) and out.images.shape == (1, 1, 256, 256)
    assert torch.isfinite(out.ddf).all() and torch.isfinite(out.images).all()
    # a real deformation, recovered towards plausibility: smaller than the random start
    assert 0 < out.ddf.norm(dim=1).mean() < out.initial_ddf.norm(dim=1).mean()
    assert np.isfinite(out.images.numpy()).all()
