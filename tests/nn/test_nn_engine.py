"""The network's engines give the same numbers: oneDNN convolutions vs PyTorch's dispatch,
instance norm as group norm, and the ONNX Runtime engine vs the PyTorch network."""

from __future__ import annotations

import copy
import gc
import multiprocessing
import os
import pickle
import signal

import pytest
import torch
from torch import nn

from drdm import DRDM
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.nn import NetworkConfig, RecursiveUNet
from drdm.nn import engine as engine_module
from drdm.nn.blocks import InstanceNorm, onednn_available
from drdm.nn.engine import OnnxRuntimeUNet, onnxruntime_available, resolve_engine

#: agreement demanded of every engine for one network call, in voxels (measured: about 2e-7)
TOLERANCE = 1e-4
#: and for a whole recovery loop, where each call sees the image warped by the previous calls'
#: fields, so rounding differences grow a little from call to call (max; the mean stays tiny)
LOOP_TOLERANCE = 1e-2


def small_network(
    ndim: int, recursions: int = 2, norm: str = "all", std: float = 0.003
) -> RecursiveUNet:
    """A small random network whose fields are a few voxels, as a trained one's are."""
    config = NetworkConfig(
        norm=norm,
        ndim=ndim,
        widths=(4, 8, 8),
        bottleneck_width=4,
        embed_dim=8,
        output_init_std=std,
        recursions=recursions,
    )
    return RecursiveUNet(config, generator=torch.Generator().manual_seed(3)).eval()


@pytest.mark.parametrize("ndim,size", [(2, (32, 24)), (3, (16, 16, 8))])
def test_onednn_convolutions_equal_pytorch_dispatch(ndim, size):
    assert onednn_available()  # the CPU builds this project supports all have it
    net = small_network(ndim)
    x = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 70])
    with torch.no_grad():
        fast = net.set_engine("onednn")(x, t)
        native = net.set_engine("native")(x, t)
    assert fast.abs().max() > 1e-3  # a real field, not zeros
    torch.testing.assert_close(fast, native, atol=1e-5, rtol=1e-5)


def test_onednn_gradients_equal_pytorch_dispatch():
    # without instance norm: the gradients of constants that a norm removes are sums of large
    # cancelling terms, dominated by float32 rounding whatever the engine
    net = small_network(2, norm="none")
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    grads = []
    for engine in ("onednn", "native"):
        net.set_engine(engine).zero_grad()
        net(x, torch.tensor([9])).square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()), rtol=1e-4)


def test_set_engine_rejects_unknown_names():
    with pytest.raises(ValueError, match="engine"):
        small_network(2).set_engine("fastest")


def test_instance_norm_is_pytorchs_instance_norm():
    x = torch.randn(3, 5, 7, 6, generator=torch.Generator().manual_seed(2)) * 3 + 1
    ours = InstanceNorm(5, eps=1e-5)
    ref = nn.InstanceNorm2d(5, eps=1e-5, affine=True)
    with torch.no_grad():
        for layer in (ours, ref):
            layer.weight.copy_(torch.linspace(0.5, 2, 5))
            layer.bias.copy_(torch.linspace(-1, 1, 5))
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    assert set(ours.state_dict()) == set(ref.state_dict())


needs_onnxruntime = pytest.mark.skipif(
    not onnxruntime_available(), reason="onnxruntime/onnx not installed (pip install drdm[fast])"
)


@needs_onnxruntime
@pytest.mark.parametrize(
    "ndim,size,recursions", [(2, (32, 24), 2), (2, (16, 16), 1), (3, (16, 8, 16), 2)]
)
def test_onnxruntime_engine_equals_the_network(ndim, size, recursions):
    net = small_network(ndim, recursions)
    engine = OnnxRuntimeUNet(net, threads=1)
    for batch in (1, 3):  # the batch size may change between calls
        x = torch.rand(batch, 1, *size, generator=torch.Generator().manual_seed(batch))
        t = torch.arange(1, batch + 1) * 17
        with torch.no_grad():
            ref = net(x, t)
        out = engine(x, t)
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert ref.abs().max() > 1e-3
        assert (out - ref).abs().max() <= TOLERANCE
    # the exporter ran the network through PyTorch's dispatch and restored the engine after
    assert all(m.engine == "onednn" for m in net.modules() if hasattr(m, "engine"))


@needs_onnxruntime
def test_generate_with_onnxruntime_matches_torch_and_follows_weight_changes():
    net = small_network(2)
    model = DRDM(net, ForwardDiffusion(ForwardDiffusionConfig(ndim=2)), (16, 16))
    image = torch.rand(20, 20, generator=torch.Generator().manual_seed(4))
    outs = {}
    for engine in ("torch", "onnxruntime"):
        g = torch.Generator().manual_seed(0)
        outs[engine] = model.generate(image, 6, num_samples=2, generator=g, engine=engine).ddf
    gap = (outs["torch"] - outs["onnxruntime"]).abs()
    assert gap.max() <= LOOP_TOLERANCE and gap.mean() <= LOOP_TOLERANCE / 10
    # new weights: the engine is rebuilt, not stale
    with torch.no_grad():
        net.out_conv.bias.add_(0.01)
    g = torch.Generator().manual_seed(0)
    changed = model.generate(image, 6, num_samples=2, generator=g, engine="onnxruntime").ddf
    g = torch.Generator().manual_seed(0)
    reference = model.generate(image, 6, num_samples=2, generator=g, engine="torch").ddf
    assert (changed - reference).abs().max() <= LOOP_TOLERANCE
    assert (changed - outs["torch"]).abs().max() > 1e-3


def test_resolve_engine():
    cpu = torch.device("cpu")
    expected = "onnxruntime" if onnxruntime_available() else "torch"
    assert resolve_engine("auto", cpu, torch.float32) == expected
    assert resolve_engine("auto", cpu, torch.float64) == "torch"
    assert resolve_engine("auto", torch.device("cuda"), torch.float32) == "torch"
    assert resolve_engine("torch", cpu, torch.float32) == "torch"
    with pytest.raises(ValueError, match="float32"):
        resolve_engine("onnxruntime", cpu, torch.float64)
    with pytest.raises(ValueError, match="engine must be"):
        resolve_engine("tensorrt", cpu, torch.float32)


class _Deformations(torch.utils.data.Dataset):
    def __init__(self, model: DRDM) -> None:
        self.model = model

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        image = torch.rand(16, 16, generator=torch.Generator().manual_seed(index))
        g = torch.Generator().manual_seed(index)
        return self.model.generate(image, 3, generator=g, engine="onnxruntime").ddf[0]


@pytest.fixture
def two_threads():
    """Torch (and so ONNX Runtime's default) at 2 threads: a session with a thread pool is
    what blocks when a forked child destroys it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@needs_onnxruntime
def test_onnxruntime_engine_in_forked_dataloader_workers(two_threads):
    # the parent builds its session first; forked workers must build their own (a runtime's
    # thread pool does not survive fork), keep the inherited one and give the parent's numbers
    model = DRDM(small_network(2), ForwardDiffusion(ForwardDiffusionConfig(ndim=2)), (16, 16))
    dataset = _Deformations(model)
    expected = torch.stack([dataset[i] for i in range(len(dataset))])
    assert model.inference_network("onnxruntime").session_grids == ((16, 16),)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    got = torch.cat(list(loader))
    assert (got - expected).abs().max() <= LOOP_TOLERANCE


def _in_forked_child(target, timeout: float = 60.0) -> int:
    """Run ``target()`` in a forked child (its own process group) and return its exit code;
    fail, killing the child and anything it started, if it has not finished in ``timeout``."""
    process = multiprocessing.get_context("fork").Process(target=target)
    process.start()
    process.join(timeout)
    if process.is_alive():
        os.killpg(process.pid, signal.SIGKILL)
        process.join()
        pytest.fail(f"the forked child hung (still running after {timeout:.0f} s)")
    return process.exitcode


@needs_onnxruntime
@pytest.mark.parametrize("use_in_child", [True, False])
def test_forked_child_never_frees_inherited_sessions(use_in_child):
    # 2 threads: destroying a session whose pool the fork copied blocks the child forever
    engines = [OnnxRuntimeUNet(small_network(2), threads=2)]
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([5, 9])
    expected = engines[0](x, t)
    assert engines[0].session_grids == ((16, 16),)

    def child() -> None:
        os.setpgrp()
        if use_in_child:  # builds the child's own session, and drops the inherited one
            assert engines[0].session_grids == ()
            got = engines[0](x, t)
            os._exit(0 if (got - expected).abs().max() <= TOLERANCE else 3)
        engines.clear()  # the engine itself goes
        gc.collect()
        os._exit(0)

    assert _in_forked_child(child) == 0


@pytest.mark.slow  # ONNX exports in two processes (about 6 s)
@needs_onnxruntime
def test_engine_pickles_without_sessions_before_and_after_use(tmp_path, monkeypatch):
    engine = OnnxRuntimeUNet(small_network(2), threads=1)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([3, 11])
    before = [pickle.loads(pickle.dumps(engine)), copy.deepcopy(engine)]
    expected = engine(x, t)
    torch.save(engine, tmp_path / "engine.pt")
    after = [
        pickle.loads(pickle.dumps(engine)),
        copy.deepcopy(engine),
        torch.load(tmp_path / "engine.pt", weights_only=False),
    ]
    assert engine.session_grids == ((16, 16),)
    assert all(c.session_grids == () for c in after)  # sessions are never pickled

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(engine_module, "export_onnx", no_export)
    for c in after:  # the exported model travels with the copy: a session, no second export
        assert (c(x, t) - expected).abs().max() <= TOLERANCE
        assert c.session_grids == ((16, 16),)
    monkeypatch.undo()
    for c in before:
        assert (c(x, t) - expected).abs().max() <= TOLERANCE


def test_torch_compile_traces_the_network():
    # torch.compile cannot trace the direct oneDNN call; the convolutions fall back to
    # PyTorch's own op while compiling, with the same result
    net = small_network(2)
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    emb = net.embed(torch.tensor([7]), 1)
    compiled = torch.compile(net.unet_pass, backend="eager", fullgraph=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, emb), net.unet_pass(x, emb), atol=1e-5, rtol=1e-5)
