"""The network's input stem (``input_stride``): lossless space-to-depth, a learned strided
stem, 2D and 3D, the same numbers in ONNX Runtime and under ``torch.compile``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from drdm.nn import NetworkConfig, RecursiveUNet
from drdm.nn.engine import OnnxRuntimeUNet, onnxruntime_available
from drdm.nn.unet import space_to_depth

TOLERANCE = 1e-4  # voxels, as for the other engines


def stem_network(ndim: int, stem: str, stride: int = 2) -> RecursiveUNet:
    config = NetworkConfig(
        ndim=ndim,
        widths=(4, 8),
        bottleneck_width=4,
        embed_dim=8,
        output_init_std=0.003,
        input_stride=stride,
        input_stem=stem,
        stem_width=6,
    )
    return RecursiveUNet(config, generator=torch.Generator().manual_seed(1)).eval()


def test_space_to_depth_is_pixel_unshuffle_in_2d():
    x = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(space_to_depth(x, 4), F.pixel_unshuffle(x, 4))


def test_space_to_depth_3d_keeps_every_voxel_at_its_offset():
    x = torch.randn(1, 2, 4, 6, 8, generator=torch.Generator().manual_seed(0))
    y = space_to_depth(x, 2)
    assert y.shape == (1, 16, 2, 3, 4)
    for c in range(2):
        for k, (a, b, d) in enumerate((a, b, d) for a in (0, 1) for b in (0, 1) for d in (0, 1)):
            assert torch.equal(y[:, c * 8 + k], x[:, c, a::2, b::2, d::2])


def test_config_validates_and_derives_sizes():
    cfg = NetworkConfig(widths=(4, 8), input_stride=4)
    assert cfg.size_multiple == 16
    assert cfg.unet_in_channels == 16
    assert NetworkConfig(ndim=3, input_stride=2).unet_in_channels == 8
    assert NetworkConfig(input_stride=4, input_stem="strided", stem_width=5).unet_in_channels == 5
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"input_stride": 3}, {"input_stride": 0}, {"input_stem": "pool"}):
        with pytest.raises(ValueError):
            NetworkConfig(**bad)


@pytest.mark.parametrize("stem", ["space_to_depth", "strided"])
@pytest.mark.parametrize("ndim,size", [(2, (16, 24)), (3, (8, 16, 8))])
def test_stem_network_shapes_and_gradients(stem, ndim, size):
    net = stem_network(ndim, stem).train()
    x = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(2))
    out = net(x, torch.tensor([3, 70]))
    assert out.shape == (2, ndim, *size)
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    if stem == "strided":
        assert net.stem is not None and net.stem.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.rand(1, 1, *[s + 2 for s in size]), 3)


def test_full_resolution_detail_reaches_the_network():
    # a pattern finer than the U-Net grid changes the output of a stem network (it sees every
    # pixel), the same pattern averaged away would not
    net = stem_network(2, "space_to_depth", stride=4)
    base = torch.zeros(1, 1, 32, 32)
    fine = base.clone()
    fine[..., ::2, :] = 1.0  # period 2: invisible to a 4x area average (every block = 0.5)
    half = torch.full_like(base, 0.5)
    with torch.no_grad():
        assert (net(fine, 5) - net(half, 5)).abs().max() > 1e-4


@pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime not installed")
@pytest.mark.parametrize("stem", ["space_to_depth", "strided"])
@pytest.mark.parametrize("ndim,size", [(2, (16, 32)), (3, (8, 16, 8))])
def test_onnxruntime_engine_equals_eager_with_a_stem(stem, ndim, size):
    net = stem_network(ndim, stem)
    engine = OnnxRuntimeUNet(net, threads=1)
    x = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([5, 60])
    with torch.no_grad():
        ref = net(x, t)
    assert ref.abs().max() > 1e-3
    assert (engine(x, t) - ref).abs().max() <= TOLERANCE


@pytest.mark.parametrize("stem", ["space_to_depth", "strided"])
def test_torch_compile_equals_eager_with_a_stem(stem):
    net = stem_network(2, stem)
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    emb = net.embed(torch.tensor([7]), 1)
    compiled = torch.compile(net.unet_pass, backend="eager", fullgraph=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, emb), net.unet_pass(x, emb), atol=1e-5, rtol=1e-5)
