"""Inference engines for the DRDM network: the same numbers, less time per U-Net pass.

The recovery loop (:func:`drdm.sampling.recover`) spends all its time in U-Net passes. On a
CPU, a pass of the small DRDM network runs far below the machine's arithmetic rate in PyTorch
(many small convolutions, per-operator overhead). :class:`OnnxRuntimeUNet` exports one U-Net
pass to ONNX once per grid size and runs it in ONNX Runtime; the internal recursion of Eq. 12
(warp, compose) stays in PyTorch (:meth:`drdm.nn.RecursiveUNet.recurse`).

Engines (:func:`resolve_engine`):

* ``"torch"``: the network itself (convolutions through oneDNN on CPU float32, see
  :mod:`drdm.nn.blocks`); any device and dtype, and the only engine with gradients.
* ``"onnxruntime"``: CPU, float32, inference only; needs ``onnxruntime`` and ``onnx``
  (``pip install drdm[fast]``). Outputs equal the torch engine's within float32 rounding
  (``tests/nn/test_nn_engine.py`` checks ``<= 1e-4`` voxels; measured about ``2e-7``).
* ``"auto"`` (default): ``"onnxruntime"`` where it applies and is installed, else ``"torch"``.

Measured per pass and per deformation: ``benchmarks/engine_benchmark.py`` (README, *Speed*).
"""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .blocks import EngineConv
from .unet import RecursiveUNet

__all__ = [
    "ENGINES",
    "Engine",
    "OnnxRuntimeUNet",
    "export_onnx",
    "onnxruntime_available",
    "resolve_engine",
]

Engine = Literal["auto", "torch", "onnxruntime"]
ENGINES: tuple[str, ...] = ("auto", "torch", "onnxruntime")


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` (needed to export the network) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def resolve_engine(engine: str, device: torch.device, dtype: torch.dtype) -> str:
    """``"torch"`` or ``"onnxruntime"`` for a network on ``device`` with ``dtype``.

    ``"auto"`` picks ONNX Runtime for CPU float32 when it is installed. Asking for
    ``"onnxruntime"`` where it cannot run raises ``ValueError`` (not installed, not CPU, not
    float32).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    applies = torch.device(device).type == "cpu" and dtype == torch.float32
    if engine == "auto":
        return "onnxruntime" if applies and onnxruntime_available() else "torch"
    if engine == "onnxruntime":
        if not onnxruntime_available():
            raise ValueError(
                "engine 'onnxruntime' needs the onnxruntime and onnx packages "
                "(pip install 'drdm[fast]')"
            )
        if not applies:
            raise ValueError(
                f"engine 'onnxruntime' runs float32 networks on the CPU, not {dtype} on "
                f"{torch.device(device)}"
            )
    return engine


class _SinglePass(nn.Module):
    """One U-Net pass as a module with tensor inputs only (what the exporter traces)."""

    def __init__(self, network: RecursiveUNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor, emb: Tensor) -> Tensor:
        return self.network.unet_pass(image, emb)


def export_onnx(network: RecursiveUNet, spatial: tuple[int, ...]) -> bytes:
    """One U-Net pass of ``network`` as an ONNX model (bytes) for grid ``spatial``.

    Inputs ``image`` ``(B, C, *spatial)`` and ``emb`` ``(B, embed_dim)`` (batch size free),
    output ``ddf`` ``(B, ndim, *spatial)`` voxels, as :meth:`RecursiveUNet.unet_pass`. The
    convolutions are exported through PyTorch's own dispatch (the direct oneDNN call has no
    ONNX form); the network's engine and training mode are restored afterwards.
    """
    cfg = network.config
    image = torch.zeros(1, cfg.in_channels, *spatial)
    emb = torch.zeros(1, cfg.embed_dim)
    buffer = io.BytesIO()
    engine_of = {m: m.engine for m in network.modules() if isinstance(m, EngineConv)}
    was_training = network.training
    network.set_engine("native").eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter (tracer warnings)
            torch.onnx.export(
                _SinglePass(network),
                (image, emb),
                buffer,
                input_names=["image", "emb"],
                output_names=["ddf"],
                dynamic_axes={"image": {0: "batch"}, "emb": {0: "batch"}, "ddf": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    finally:
        for module, engine in engine_of.items():
            module.engine = engine
        network.train(was_training)
    return buffer.getvalue()


class OnnxRuntimeUNet:
    """A :class:`~drdm.nn.RecursiveUNet` whose U-Net passes run in ONNX Runtime (CPU, fp32).

    Callable like the network: ``engine(image, t, recursions=None)`` with ``image``
    ``(B, C, *S)`` float32 on the CPU and 1-based timesteps ``t`` ``(B,)``; returns the
    recovering field ``(B, ndim, *S)`` in voxels. The batch size may change between calls; a
    new spatial size ``S`` exports the pass again (once per size, kept). The weights are
    read at export time: build a new engine after changing them.

    Args:
        network: the network (its convolutions are exported through PyTorch's own dispatch).
        threads: ONNX Runtime's intra-op threads; ``None`` uses ``torch.get_num_threads()``.
            Idle threads sleep instead of spinning, which matters on small CPU allotments.
    """

    def __init__(self, network: RecursiveUNet, threads: int | None = None) -> None:
        if not onnxruntime_available():
            raise ValueError(
                "OnnxRuntimeUNet needs the onnxruntime and onnx packages (pip install 'drdm[fast]')"
            )
        self.network = network
        self.config = network.config
        self.threads = int(threads) if threads is not None else torch.get_num_threads()
        self._sessions: dict[tuple[int, ...], Any] = {}
        self._pid = os.getpid()

    def session(self, spatial: tuple[int, ...]) -> Any:
        """The ONNX Runtime session for grid ``spatial`` (exported on first use).

        Sessions are not shared across ``fork`` (a ``DataLoader`` worker builds its own: a
        runtime's thread pool does not survive the fork)."""
        if os.getpid() != self._pid:
            self._sessions, self._pid = {}, os.getpid()
        session = self._sessions.get(spatial)
        if session is not None:
            return session
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = ort.InferenceSession(
            export_onnx(self.network, spatial), options, providers=["CPUExecutionProvider"]
        )
        self._sessions[spatial] = session
        return session

    def unet_pass(self, image: Tensor, emb: Tensor) -> Tensor:
        """One U-Net pass in ONNX Runtime; same contract as
        :meth:`drdm.nn.RecursiveUNet.unet_pass`."""
        if image.device.type != "cpu" or image.dtype != torch.float32:
            raise ValueError(
                f"OnnxRuntimeUNet runs float32 CPU tensors, got {image.dtype} on {image.device}"
            )
        session = self.session(tuple(int(s) for s in image.shape[2:]))
        feeds = {
            "image": image.detach().contiguous().numpy(),
            "emb": emb.detach().to(torch.float32).contiguous().numpy(),
        }
        return torch.from_numpy(session.run(None, feeds)[0])

    def __call__(self, image: Tensor, t: Tensor | int, recursions: int | None = None) -> Tensor:
        """Eq. 12 with ``K = recursions`` (default: the network's), U-Net passes in ONNX."""
        return self.network.recurse(self.unet_pass, image, t, recursions)
