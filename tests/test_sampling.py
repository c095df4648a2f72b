"""Tests of the recovery loop (drdm.sampling.recover, paper Algorithm 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import smooth_field, smooth_image
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.nn import NetworkConfig, RecursiveUNet
from drdm.sampling import DEFAULT_STRIDE, SamplerConfig, official_sampler_config, recover
from drdm.spatial import compose, warp

T = 12


def tiny_network(ndim: int = 2, seed: int = 0, std: float = 1e-2) -> RecursiveUNet:
    config = NetworkConfig(
        ndim=ndim,
        widths=(4, 8, 8),
        bottleneck_width=4,
        num_steps=T,
        embed_dim=8,
        output_init_std=std,
    )
    return RecursiveUNet(config, generator=torch.Generator().manual_seed(seed)).eval()


def process(ndim: int = 2) -> ForwardDiffusion:
    return ForwardDiffusion(ForwardDiffusionConfig(ndim=ndim, num_steps=T))


class ConstantShift(nn.Module):
    """A stub network: returns the constant translation ``shift`` (voxels) and records calls."""

    def __init__(self, shift: tuple[float, ...]) -> None:
        super().__init__()
        self.shift = shift
        self.inputs: list[torch.Tensor] = []
        self.times: list[list[int]] = []

    def forward(self, image: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append(image.clone())
        self.times.append(t.tolist())
        field = torch.zeros(image.shape[0], len(self.shift), *image.shape[2:], dtype=image.dtype)
        for axis, value in enumerate(self.shift):
            field[:, axis] = value
        return field


@pytest.mark.parametrize("ndim,size,batch", [(2, (32, 32), 3), (3, (16, 16, 16), 2)])
def test_recover_shapes(ndim, size, batch):
    images = torch.rand(batch, 1, *size, generator=torch.Generator().manual_seed(1))
    result = recover(tiny_network(ndim), process(ndim), images, 4, torch.Generator().manual_seed(0))
    assert result.ddf.shape == (batch, ndim, *size)
    assert result.initial_ddf.shape == (batch, ndim, *size)
    assert result.images.shape == images.shape
    assert result.trajectory_images is None and result.trajectory_ddfs is None
    assert torch.isfinite(result.ddf).all() and torch.isfinite(result.images).all()
    assert not result.ddf.requires_grad


def test_convention_constant_translation_is_composed_after_phi_and_original_is_warped():
    """With psi_hat = c at every step, phi <- compose(c, phi) = phi(x + c) + c, T' times, and
    the network always sees ONE warp of the original by the accumulated field."""
    gen = torch.Generator().manual_seed(4)
    size, level, shift = (24, 28), 5, (1.0, -2.0)
    images = smooth_image(size, gen)
    phi0 = smooth_field((1, 2, *size), 1.5, gen)
    stub = ConstantShift(shift)
    config = SamplerConfig(compose_padding="border", image_mode="linear", stride=1)
    result = recover(stub, process(), images, level, config=config, initial_ddf=phi0)

    c = torch.zeros_like(phi0)
    c[:, 0], c[:, 1] = shift
    expected = phi0
    accumulated = [phi0]
    for _ in range(level):
        expected = compose(c, expected, padding="border")
        accumulated.append(expected)
    torch.testing.assert_close(result.ddf, expected, rtol=0, atol=1e-12)
    # analytically, in the interior: phi(x + T' c) + T' c (integer shifts sample exactly)
    total = level * np.array(shift)
    rows, cols = slice(0, size[0] - int(total[0])), slice(int(-total[1]), size[1])
    shifted = phi0[:, :, int(total[0]) :, : size[1] + int(total[1])]
    analytic = shifted + torch.tensor(total).view(1, 2, 1, 1)
    torch.testing.assert_close(result.ddf[:, :, rows, cols], analytic, rtol=0, atol=1e-10)
    # the network saw warp(I0, phi_k) for k = 0..T'-1: never a re-warped image
    assert len(stub.inputs) == level
    for seen, phi in zip(stub.inputs, accumulated[:-1], strict=True):
        torch.testing.assert_close(seen, warp(images, phi), rtol=0, atol=1e-12)
    torch.testing.assert_close(result.images, warp(images, expected), rtol=0, atol=1e-12)
    # 1-based timesteps T', ..., 1, one per sample
    assert stub.times == [[t] for t in range(level, 0, -1)]


def test_zero_network_returns_the_forward_field():
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    stub = ConstantShift((0.0, 0.0))
    proc = process()
    literal = SamplerConfig(stride=1)
    result = recover(stub, proc, images, 7, torch.Generator().manual_seed(9), config=literal)
    drawn = proc.sample_fields((32, 32), 7, torch.Generator().manual_seed(9), batch=2).cumulative
    torch.testing.assert_close(result.initial_ddf, drawn, rtol=0, atol=0)
    torch.testing.assert_close(result.ddf, drawn, rtol=0, atol=1e-4)  # resampled at x
    assert stub.times == [[t, t] for t in range(7, 0, -1)]


def test_seeds_reproduce_bit_for_bit():
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    net, proc = tiny_network(), process()
    a = recover(net, proc, images, 6, torch.Generator().manual_seed(3))
    b = recover(net, proc, images, 6, torch.Generator().manual_seed(3))
    c = recover(net, proc, images, 6, torch.Generator().manual_seed(4))
    assert torch.equal(a.ddf, b.ddf) and torch.equal(a.images, b.images)
    assert not torch.equal(a.ddf, c.ddf)
    assert not torch.equal(a.ddf[0], a.ddf[1])  # one random field per image


def test_batched_equals_one_at_a_time():
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(3, 1, 32, 32, generator=gen, dtype=torch.float64)
    phi0 = smooth_field((3, 2, 32, 32), 2.0, gen)
    net = tiny_network(std=1e-3).double()  # float64, gentle fields: rounding stays small
    batched = recover(net, process(), images, 5, initial_ddf=phi0)
    for i in range(3):
        single = recover(net, process(), images[i : i + 1], 5, initial_ddf=phi0[i : i + 1])
        torch.testing.assert_close(batched.ddf[i : i + 1], single.ddf, rtol=1e-8, atol=1e-8)


def test_trajectory():
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    level = 4
    result = recover(
        tiny_network(),
        process(),
        images,
        level,
        torch.Generator().manual_seed(1),
        config=SamplerConfig(stride=1),
        return_trajectory=True,
    )
    assert result.trajectory_images.shape == (level + 1, 2, 1, 32, 32)
    assert result.trajectory_ddfs.shape == (level + 1, 2, 2, 32, 32)
    assert torch.equal(result.trajectory_ddfs[0], result.initial_ddf)
    assert torch.equal(result.trajectory_ddfs[-1], result.ddf)
    assert torch.equal(result.trajectory_images[-1], result.images)
    torch.testing.assert_close(result.trajectory_images[0], warp(images, result.initial_ddf))
    plain = recover(
        tiny_network(),
        process(),
        images,
        level,
        torch.Generator().manual_seed(1),
        config=SamplerConfig(stride=1),
    )
    assert torch.equal(plain.ddf, result.ddf)


@pytest.mark.parametrize("level", [0, T + 1, -3])
def test_level_out_of_range(level):
    with pytest.raises(ValueError, match=f"1..{T}"):
        recover(tiny_network(), process(), torch.rand(1, 1, 32, 32), level)


@pytest.mark.parametrize("level", [2.5, True, torch.tensor(2.0)])
def test_level_must_be_an_integer(level):
    with pytest.raises(TypeError, match="level"):
        recover(tiny_network(), process(), torch.rand(1, 1, 32, 32), level)


def test_integer_like_levels_accepted():
    images = torch.rand(1, 1, 32, 32)
    for level in (np.int64(2), torch.tensor(2)):
        out = recover(tiny_network(), process(), images, level, torch.Generator().manual_seed(0))
        assert out.ddf.shape == (1, 2, 32, 32)


def test_bad_images_and_initial_field():
    net, proc = tiny_network(), process()
    with pytest.raises(ValueError, match="spatial axes"):
        recover(net, proc, torch.rand(1, 32, 32), 2)
    with pytest.raises(TypeError, match="floating"):
        recover(net, proc, torch.ones(1, 1, 32, 32, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="initial_ddf"):
        recover(net, proc, torch.rand(1, 1, 32, 32), 2, initial_ddf=torch.zeros(1, 2, 16, 16))


def test_sampler_config():
    assert SamplerConfig() == SamplerConfig.from_dict(SamplerConfig().to_dict())
    official = official_sampler_config()
    assert (official.compose_padding, official.image_mode, official.image_padding) == (
        "zeros",
        "cubic",
        "zeros",
    )
    assert SamplerConfig.from_dict(official.to_dict()) == official
    with pytest.raises(ValueError, match="image_mode"):
        SamplerConfig(image_mode="bilinear")
    with pytest.raises(ValueError, match="unknown"):
        SamplerConfig.from_dict({"padding": "zeros"})


def test_compose_padding_is_used():
    """Zero padding lets the accumulated field fall to zero where a step points outside."""
    size = (16, 16)
    phi0 = torch.full((1, 2, *size), 1.0, dtype=torch.float64)
    images = torch.rand(1, 1, *size, dtype=torch.float64)
    out = {}
    for padding in ("border", "zeros"):
        config = SamplerConfig(compose_padding=padding)
        out[padding] = recover(
            ConstantShift((3.0, 0.0)), process(), images, 1, config=config, initial_ddf=phi0
        ).ddf
    assert torch.allclose(out["border"][:, 0], torch.tensor(4.0, dtype=torch.float64))
    assert out["zeros"][0, 0, -1, 0] == pytest.approx(3.0)  # phi sampled outside -> 0
    assert out["zeros"][0, 0, 0, 0] == pytest.approx(4.0)


# ---------------------------------------------------------------- fewer network calls


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_network_schedule_covers_every_timestep_once():
    from drdm.sampling import network_schedule

    for level in (1, 7, 55, 80):
        for stride in (1, 2, 4, 8, 100):
            calls = network_schedule(level, stride)
            assert calls[0][0] == level
            assert sum(n for _, n in calls) == level
            assert [t for t, _ in calls] == list(range(level, 0, -stride))
            # each call stands for the timesteps down to the next one
            ends = [t for t, _ in calls[1:]] + [0]
            assert all(t - n == e for (t, n), e in zip(calls, ends, strict=True))
    assert network_schedule(10, schedule=[20, 10, 5, 1]) == [(10, 5), (5, 4), (1, 1)]
    assert network_schedule(6, schedule=[3]) == [(6, 3), (3, 3)]


@pytest.mark.parametrize("stride", [2, 3, 5])
@pytest.mark.parametrize("skip", ["compose", "velocity"])
def test_stride_is_exact_for_a_network_predicting_a_constant_translation(stride, skip):
    # repeating the same translation n times is the translation by n times the shift, so a
    # strided sampler must give the full sampler's field exactly (up to float rounding)
    images = smooth_image((24, 24), g(3), torch.float32).expand(2, 1, 24, 24)
    shift = (0.125, -0.0625)
    start = torch.zeros(2, 2, 24, 24)
    literal = SamplerConfig(stride=1)
    full = recover(ConstantShift(shift), process(), images, 11, initial_ddf=start, config=literal)
    net = ConstantShift(shift)
    config = SamplerConfig(stride=stride, skip=skip)
    fast = recover(net, process(), images, 11, initial_ddf=start, config=config)
    assert len(net.times) == len(range(11, 0, -stride))
    assert [t[0] for t in net.times] == list(range(11, 0, -stride))
    torch.testing.assert_close(fast.ddf, full.ddf, atol=1e-5, rtol=0)
    expected = torch.tensor(shift).view(1, 2, 1, 1) * 11
    torch.testing.assert_close(fast.ddf, expected.expand_as(fast.ddf), atol=1e-5, rtol=0)


def test_explicit_schedule_calls_the_network_at_those_timesteps():
    images = smooth_image((16, 16), g(1), torch.float32)
    net = ConstantShift((0.1, 0.0))
    config = SamplerConfig(schedule=(40, 9, 5, 2), skip="compose")
    result = recover(
        net,
        process(),
        images,
        9,
        initial_ddf=torch.zeros(1, 2, 16, 16),
        config=config,
        return_trajectory=True,
    )
    assert [t[0] for t in net.times] == [9, 5, 2]
    assert result.trajectory_ddfs is not None and result.trajectory_ddfs.shape[0] == 4
    torch.testing.assert_close(result.ddf[:, 0], torch.full((1, 16, 16), 0.9), atol=1e-5, rtol=0)


def test_repeat_step_rules():
    from drdm.sampling import repeat_step

    psi = smooth_field((1, 2, 20, 20), 0.8, g(4), torch.float32)
    assert repeat_step(psi, 1) is psi
    twice = compose(psi, psi)
    torch.testing.assert_close(repeat_step(psi, 3), compose(twice, psi))

    # the velocity rule is the flow of 3 psi; it differs from composing psi three times only
    # to second order in the field (the two agree for a translation)
    def gap(scale: float) -> float:
        velocity = repeat_step(psi * scale, 3, "velocity")
        composed = repeat_step(psi * scale, 3, "compose")
        return float((velocity - composed).abs().max())

    assert gap(0.05) < 0.05 * float((3 * psi * 0.05).abs().max())
    assert gap(0.025) < 0.35 * gap(0.05)
    with pytest.raises(ValueError, match="count"):
        repeat_step(psi, 0)


def test_sampling_recursions_override_the_networks_own():
    net = tiny_network(std=0.5)
    images = smooth_image((16, 16), g(2), torch.float32)
    start = smooth_field((1, 2, 16, 16), 1.0, g(5), torch.float32)
    config = SamplerConfig(recursions=1, stride=1)
    k1 = recover(net, process(), images, 3, initial_ddf=start, config=config)
    # the literal loop with single passes (K = 1)
    phi = start
    for t in (3, 2, 1):
        current = warp(images, phi)
        phi = compose(net.single_pass(current, torch.tensor([t])), phi)
    torch.testing.assert_close(k1.ddf, phi)
    k2 = recover(net, process(), images, 3, initial_ddf=start, config=SamplerConfig(stride=1))
    assert (k2.ddf - k1.ddf).abs().max() > 1e-4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"stride": 0}, "stride"),
        ({"stride": 1.5}, "stride"),
        ({"recursions": 0}, "recursions"),
        ({"skip": "weights"}, "skip"),
        ({"schedule": (5, 5, 1)}, "decreasing"),
        ({"schedule": (5, 0)}, "decreasing"),
        ({"schedule": ()}, "decreasing"),
    ],
)
def test_sampler_config_rejects_impossible_schedules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**kwargs)


def test_sampler_config_round_trip_with_schedule():
    config = SamplerConfig(stride=4, schedule=(30, 20, 10), skip="velocity", recursions=1)
    again = SamplerConfig.from_dict(config.to_dict())
    assert again == config and again.schedule == (30, 20, 10)
    # configs saved before the schedule options existed load with the default stride
    assert SamplerConfig.from_dict({"compose_padding": "zeros"}).stride == DEFAULT_STRIDE == 4


def test_default_sampler_calls_the_network_every_fourth_timestep_with_shares():
    net = ConstantShift((0.0, 0.0))
    recover(net, process(), torch.rand(1, 1, 16, 16), 12, torch.Generator().manual_seed(0))
    assert [t[0] for t in net.times] == [12, 8, 4]
    assert SamplerConfig().skip == "shares"


def test_shares_rule_weights_a_call_by_the_size_of_the_steps_it_stands_for():
    from drdm.sampling import network_schedule, schedule_share

    proc = process()
    n = proc.step_units(torch.arange(1, T + 1))
    share = schedule_share(proc, 10, 3)
    assert float(share) == pytest.approx(float((n[9] + n[8] + n[7]) / n[9]))
    shares = schedule_share(proc, torch.tensor([10, 2]), 3)  # steps below 1 count nothing
    assert shares[1].item() == pytest.approx(float((n[1] + n[0]) / n[1]))
    # a constant translation c integrated r times is r c: the total is sum_j r_j c
    images = smooth_image((16, 16), g(6), torch.float32)
    net = ConstantShift((0.05, 0.0))
    config = SamplerConfig(stride=4, skip="shares")
    out = recover(net, proc, images, 11, initial_ddf=torch.zeros(1, 2, 16, 16), config=config)
    total = sum(float(schedule_share(proc, t, c)) for t, c in network_schedule(11, 4))
    torch.testing.assert_close(
        out.ddf[:, 0], torch.full((1, 16, 16), 0.05 * total), atol=1e-5, rtol=0
    )
    assert total < 11  # later steps are smaller than the called ones: less than compose
