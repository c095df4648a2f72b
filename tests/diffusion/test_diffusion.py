from __future__ import annotations

import dataclasses

import pytest
import torch

from drdm.config import from_dict, load_config, save_config, to_dict
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig, cumulative_units, step_units
from drdm.spatial import fold_ratio, magnitude_stats, warp


def make(ndim=2, **kw):
    return ForwardDiffusion(ForwardDiffusionConfig(ndim=ndim, **kw))


def test_schedules_follow_the_paper():
    t = torch.arange(1, 81)
    n_t = step_units(t)
    assert n_t[0] == 1 and n_t[79] == int(80**0.6)  # floor(80^0.6) = 13
    assert torch.equal(n_t, torch.floor(t.double() ** 0.6).long())
    practical = cumulative_units(t)
    expected = torch.maximum(torch.floor(t.double() ** 1.3 / 1.5).long(), n_t)
    assert torch.equal(practical, expected)
    assert practical[79] == 198
    theoretical = cumulative_units(t, kind="theoretical")
    assert theoretical[79] == int(80**1.6 / 1.6)
    assert torch.all(practical.diff() >= 0) and torch.all(theoretical.diff() >= 0)
    assert torch.all(practical >= n_t)


def test_config_round_trips_yaml_and_json(tmp_path):
    config = ForwardDiffusionConfig(ndim=3, grid_size=None, cumulative="theoretical")
    for name in ("c.yaml", "c.json"):
        save_config(config, tmp_path / name)
        assert load_config(ForwardDiffusionConfig, tmp_path / name) == config
    assert from_dict(ForwardDiffusionConfig, to_dict(config)) == config
    with pytest.raises(ValueError, match="unknown"):
        from_dict(ForwardDiffusionConfig, {"nsteps": 3})
    with pytest.raises(ValueError, match="ndim"):
        ForwardDiffusionConfig(ndim=4)


@pytest.mark.parametrize("ndim,size", [(2, (40, 48)), (3, (16, 20, 18))])
def test_sample_shapes_and_deformed_images(ndim, size):
    process = make(ndim)
    images = torch.rand(3, 2, *size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1, 40, 80])
    out = process.sample(images, t, generator=torch.Generator().manual_seed(1))
    assert out.images.shape == images.shape
    assert out.step.shape == out.cumulative.shape == (3, ndim, *size)
    torch.testing.assert_close(out.images, warp(images, out.cumulative))
    # at t = 1 the cumulative field is the step itself (n_{1:1} = n_1 = 1)
    torch.testing.assert_close(out.cumulative[0], out.step[0])


def test_seed_reproduces_bit_for_bit_and_seeds_differ():
    process = make(2)
    images = torch.rand(2, 1, 32, 32)
    a = process.sample(images, 30, generator=torch.Generator().manual_seed(5))
    b = process.sample(images, 30, generator=torch.Generator().manual_seed(5))
    c = process.sample(images, 30, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.cumulative, b.cumulative) and torch.equal(a.step, b.step)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.cumulative, c.cumulative)
    # the global RNG is never touched
    state = torch.random.get_rng_state()
    process.sample(images, 30, generator=torch.Generator().manual_seed(5))
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("ndim,size", [(2, (64, 64)), (3, (24, 24, 24))])
def test_displacement_variance_grows_with_t_and_small_t_is_fold_free(ndim, size):
    process = make(ndim, grid_size=24)
    generator = torch.Generator().manual_seed(0)
    variances = []
    for t in (2, 10, 25, 50, 80):
        fields = process.sample_fields(size, torch.full((12,), t), generator)
        variances.append(fields.cumulative.var().item())
        if t <= 10:
            assert torch.all(fold_ratio(fields.cumulative) == 0)
            assert torch.all(fold_ratio(fields.step) == 0)
    assert all(b > a for a, b in zip(variances, variances[1:], strict=False)), variances


@pytest.mark.parametrize("t", [1, 20, 80])
def test_step_is_the_recoverable_share_of_the_cumulative_flow(t):
    process = make(2)
    fields = process.sample_fields((64, 64), torch.full((8,), t), torch.Generator().manual_seed(3))
    share = (process.step_units(torch.tensor(t)) / process.cumulative_units(torch.tensor(t))).item()
    if t == 1:
        torch.testing.assert_close(fields.step, fields.cumulative)
    # psi_t = exp(r V), phi_{t:1} = exp(V): psi_t points along phi_{t:1}, r times as long
    cosine = torch.nn.functional.cosine_similarity(
        fields.step.flatten(1), fields.cumulative.flatten(1)
    )
    assert torch.all(cosine > 0.9), cosine
    ratio = fields.step.norm() / fields.cumulative.norm()
    assert abs(ratio / share - 1) < 0.2, (ratio, share)
    # a field from another seed is unrelated
    other = process.sample_fields((64, 64), torch.full((8,), t), torch.Generator().manual_seed(4))
    cross = torch.nn.functional.cosine_similarity(
        other.step.flatten(1), fields.cumulative.flatten(1)
    )
    assert torch.all(cross.abs() < 0.6), cross


@pytest.mark.parametrize(
    "ndim,size,grid,t,samples",
    [(2, (64, 64), 32, 80, 32), (3, (24, 24, 24), 24, 40, 16)],
)
def test_fast_process_matches_step_by_step_reference(ndim, size, grid, t, samples):
    stats = {}
    for integration in ("exp", "compose"):
        process = make(ndim, grid_size=grid, integration=integration)
        fields = process.sample_fields(
            size, torch.full((samples,), t), torch.Generator().manual_seed(0)
        )
        mags = magnitude_stats(fields.cumulative)
        stats[integration] = (
            mags.mean_percent.mean().item(),
            mags.max_percent.mean().item(),
            fold_ratio(fields.cumulative).mean().item(),
        )
    fast, ref = stats["exp"], stats["compose"]
    for name, a, b in zip(("mean", "max"), fast[:2], ref[:2], strict=False):
        assert abs(a - b) / b < 0.10, (name, fast, ref)
    assert fast[2] < 1e-3 and ref[2] < 1e-3


def test_perturbation_changes_only_the_applied_field():
    process = make(2)
    out = process.sample(
        torch.rand(8, 1, 32, 32), 1, torch.Generator().manual_seed(0), perturb=True
    )
    # t = 1: phi_{1:1} is the perturbed step, 5 % away from the target psi_1
    rel = (out.cumulative - out.step).norm() / out.step.norm()
    assert 0.01 < rel.item() < 0.2
    plain = make(2, perturbation=0.0)
    out0 = plain.sample(torch.rand(8, 1, 32, 32), 1, torch.Generator().manual_seed(0), perturb=True)
    torch.testing.assert_close(out0.cumulative, out0.step)


def test_timestep_validation():
    process = make(2)
    images = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="1..80"):
        process.sample(images, 0)
    with pytest.raises(ValueError, match="1..80"):
        process.sample(images, torch.tensor([1, 81]))
    with pytest.raises(ValueError, match="one timestep per sample"):
        process.sample(images, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="spatial axes"):
        process.sample(torch.rand(2, 1, 8, 8, 8), 3)


def test_field_extent_and_grid_options():
    size = (32, 32)
    generator = torch.Generator().manual_seed(0)
    full = make(2, grid_size=None).sample_fields(size, 20, generator, batch=2)
    assert full.cumulative.shape == (2, 2, 32, 32)
    process = make(2)
    grid, spacing = process.control_grid((256, 128))
    assert grid == [64, 32] and spacing == [8.0, 8.0]
    float64 = process.sample_fields(size, 20, generator, batch=1, dtype=torch.float64)
    assert float64.cumulative.dtype == torch.float64


def test_theoretical_schedule_is_larger():
    generator = torch.Generator().manual_seed(0)
    practical = make(2).sample_fields((48, 48), torch.full((16,), 60), generator)
    generator = torch.Generator().manual_seed(0)
    theory = make(2, cumulative="theoretical").sample_fields(
        (48, 48), torch.full((16,), 60), generator
    )
    assert theory.cumulative.var() > practical.cumulative.var()
    assert dataclasses.asdict(ForwardDiffusionConfig())["num_steps"] == 80


def test_span_fields_cover_the_last_steps():
    process = ForwardDiffusion(ForwardDiffusionConfig(ndim=2))
    t = torch.tensor([10, 40])
    # the units of the last s steps, at most the whole cumulative field
    assert process.span_units(t, 1).tolist() == process.step_units(t).tolist()
    three = process.step_units(t) + process.step_units(t - 1) + process.step_units(t - 2)
    assert process.span_units(t, 3).tolist() == three.tolist()
    assert process.span_units(t, 80).tolist() == process.cumulative_units(t).tolist()

    def draw(span: int):
        g = torch.Generator().manual_seed(0)
        return process.sample_fields((24, 24), t, g, span=span)

    one, default = draw(1), process.sample_fields((24, 24), t, torch.Generator().manual_seed(0))
    torch.testing.assert_close(one.step, default.step)
    # spanning every step: the step field is the whole (unperturbed) cumulative field
    everything = draw(80)
    torch.testing.assert_close(everything.step, everything.cumulative, atol=1e-5, rtol=0)
    # a longer span is a larger part of the same flow
    norms = [draw(s).step.norm() for s in (1, 2, 4)]
    assert norms[0] < norms[1] < norms[2]
    with pytest.raises(ValueError, match="span"):
        draw(0)
