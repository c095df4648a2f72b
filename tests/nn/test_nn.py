"""Tests of the DRDM recursive U-Net (drdm.nn)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from drdm.nn import NetworkConfig, RecursiveUNet, sinusoidal_table
from drdm.spatial import compose, warp


def _image(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


def _active_config(**kwargs: object) -> NetworkConfig:
    """A config whose untrained output is not almost zero (default PyTorch init everywhere)."""
    return NetworkConfig(output_init_std=None, output_units="voxel", **kwargs)


@pytest.mark.parametrize(
    ("ndim", "shape"), [(2, (2, 1, 32, 32)), (2, (1, 1, 16, 40)), (3, (1, 1, 16, 16, 16))]
)
def test_output_shape_and_layers(ndim: int, shape: tuple[int, ...]) -> None:
    model = RecursiveUNet(NetworkConfig(ndim=ndim))
    conv_type = torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d
    assert isinstance(model.out_conv, conv_type)
    out = model(_image(shape), torch.full((shape[0],), 7))
    assert out.shape == (shape[0], ndim, *shape[2:])
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_rejects_bad_inputs() -> None:
    model = RecursiveUNet()
    with pytest.raises(ValueError, match="multiple of 8"):
        model(_image((1, 1, 30, 32)), 1)
    with pytest.raises(ValueError, match="multiple of 8"):
        model.single_pass(_image((1, 1, 32, 36)), 1)
    with pytest.raises(ValueError, match="shape"):
        model(_image((1, 2, 32, 32)), 1)
    with pytest.raises(ValueError, match="spatial"):
        model(_image((1, 1, 16, 16, 16)), 1)
    with pytest.raises(ValueError, match=r"1\.\.80"):
        model(_image((1, 1, 32, 32)), 0)
    with pytest.raises(ValueError, match=r"1\.\.80"):
        model(_image((2, 1, 32, 32)), torch.tensor([3, 81]))
    with pytest.raises(TypeError, match="integer"):
        model(_image((1, 1, 32, 32)), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="shape"):
        model(_image((2, 1, 32, 32)), torch.tensor([1, 2, 3]))


def test_gradients_reach_every_parameter() -> None:
    model = RecursiveUNet(_active_config(recursions=2))
    x = _image((2, 1, 32, 32))
    out = model(x, torch.tensor([3, 60]))
    (out**2).mean().backward()
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        # A conv bias directly followed by instance normalisation is removed by the mean
        # subtraction, so its gradient is zero up to rounding; every other one must be used.
        block = modules[name.rsplit(".", 2)[0]]
        if name.endswith("conv_in.bias") and getattr(block, "norm", None) is not None:
            continue
        assert p.grad.abs().sum() > 0, name


def test_batch_consistency() -> None:
    model = RecursiveUNet(_active_config()).eval()
    x = _image((3, 1, 32, 32), seed=1)
    t = torch.tensor([1, 40, 80])
    with torch.no_grad():
        batched = model(x, t)
        for i in range(3):
            alone = model(x[i : i + 1], t[i : i + 1])
            torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-4, rtol=1e-4)
        # A scalar timestep broadcasts over the batch.
        torch.testing.assert_close(model(x, 5), model(x, torch.full((3,), 5)))


def test_recursion_composes_passes() -> None:
    """Eq. 12 with K = 2: pass 2 sees I warped by pass 1; the fields are composed (Eq. 5)."""
    model = RecursiveUNet(_active_config(recursions=2)).eval()
    x = _image((2, 1, 32, 32), seed=2)
    t = torch.tensor([10, 70])
    with torch.no_grad():
        k1 = model(x, t, recursions=1)
        k2 = model(x, t)
        first = model.single_pass(x, t)
        second = model.single_pass(warp(x, first, mode="linear", padding="zeros"), t)
        expected = compose(second, first, padding="border")
        k3 = model(x, t, recursions=3)
    torch.testing.assert_close(k1, first)
    torch.testing.assert_close(k2, expected, atol=1e-5, rtol=1e-5)
    assert (k1 - k2).abs().max() > 1e-3
    assert (k3 - k2).abs().max() > 1e-4


def test_output_units_and_clamp() -> None:
    """``image`` units multiply axis i by S_i; the clamp keeps |u_i| <= S_i - 1 voxels."""
    x = _image((1, 1, 16, 32), seed=3)
    voxel = RecursiveUNet(_active_config(clamp_to_extent=False))
    cfg = voxel.config.to_dict() | {"output_units": "image"}
    image = RecursiveUNet(NetworkConfig.from_dict(cfg))
    image.load_state_dict(voxel.state_dict())
    with torch.no_grad():
        a = voxel.single_pass(x, 4)
        b = image.single_pass(x, 4)
    scale = torch.tensor([16.0, 32.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(b, a * scale)
    clamped = RecursiveUNet(NetworkConfig.from_dict(cfg | {"clamp_to_extent": True}))
    with torch.no_grad():
        clamped.out_conv.bias.fill_(100.0)
        out = clamped.single_pass(x, 4)
    torch.testing.assert_close(out[:, 0], torch.full_like(out[:, 0], 15.0))
    torch.testing.assert_close(out[:, 1], torch.full_like(out[:, 1], 31.0))


def test_default_init_is_near_identity_and_reproducible() -> None:
    x = _image((1, 1, 32, 32))
    a = RecursiveUNet()
    b = RecursiveUNet(generator=torch.Generator().manual_seed(0))
    c = RecursiveUNet(generator=torch.Generator().manual_seed(1))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.enc_blocks[0][0].conv_in.weight, c.enc_blocks[0][0].conv_in.weight)
    with torch.no_grad():
        assert a(x, 10).abs().max() < 0.5  # voxels: an untrained model barely deforms


def test_sinusoidal_embedding() -> None:
    table = sinusoidal_table(80, 80)
    assert table.shape == (80, 80)
    p, k = 17, 5
    w = 10000.0 ** (-2 * k / 80)
    assert table[p, 2 * k].item() == pytest.approx(math.sin(p * w), abs=1e-6)
    assert table[p, 2 * k + 1].item() == pytest.approx(math.cos(p * w), abs=1e-6)
    model = RecursiveUNet()
    torch.testing.assert_close(model.embed(torch.tensor([1, 80]), 2), table[[0, 79]])
    assert "time_table" not in model.state_dict()  # fixed, recomputed, never stored


def test_config_round_trip() -> None:
    cfg = NetworkConfig(ndim=3, widths=(8, 16, 32), norm="encoder", output_init_std=None)
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg
    assert NetworkConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert NetworkConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg
    assert isinstance(NetworkConfig.from_dict(cfg.to_dict()).widths, tuple)
    with pytest.raises(ValueError, match="unknown"):
        NetworkConfig.from_dict({"ndim": 2, "bogus": 1})
    with pytest.raises(ValueError, match="ndim"):
        NetworkConfig(ndim=4)
    with pytest.raises(ValueError, match="norm"):
        NetworkConfig(norm="decoder")  # type: ignore[arg-type]
    assert NetworkConfig(widths=(4, 8)).size_multiple == 4


def test_two_level_variant_accepts_multiples_of_four() -> None:
    model = RecursiveUNet(NetworkConfig(widths=(4, 8), bottleneck_width=4))
    assert model(_image((1, 1, 12, 20)), 2).shape == (1, 2, 12, 20)
