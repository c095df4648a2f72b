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

Processes: an :class:`OnnxRuntimeUNet` pickles (``pickle``, ``copy.deepcopy``, ``torch.save``,
spawned ``DataLoader`` workers) with its exported ONNX models but without its runtime sessions,
which are per-process state built lazily from those models. A process forked from one that
holds sessions (a forked ``DataLoader`` worker) builds its own and never frees the inherited
ones: destroying a session whose thread pool was copied by ``fork`` blocks forever, so they are
kept (a few MB per grid size) until the child exits.

Measured per pass and per deformation: ``benchmarks/engine_benchmark.py`` (README, *Speed*).
"""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from ..choices import ENGINES, Engine, check_choice
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


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` (needed to export the network) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def resolve_engine(engine: str, device: torch.device, dtype: torch.dtype) -> str:
    """``"torch"`` or ``"onnxruntime"`` for a network on ``device`` with ``dtype``.

    ``"auto"`` picks ONNX Runtime for CPU float32 when it is installed. Asking for
    ``"onnxruntime"`` where it cannot run raises ``ValueError`` (not installed, not CPU, not
    float32).
    """
    check_choice("engine", engine, ENGINES)
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


#: runtime sessions this process inherited through ``fork``: never freed (see the module
#: docstring), so every one is referenced from here until the process exits
_INHERITED_SESSIONS: list[dict[tuple[int, ...], Any]] = []
#: the engines alive in this process, for the fork handler
_ENGINES: weakref.WeakSet[OnnxRuntimeUNet] = weakref.WeakSet()


def _adopt_after_fork() -> None:
    """In a forked child: move every engine's inherited sessions out of reach of the garbage
    collector before any code of the child can drop them."""
    for engine in list(_ENGINES):
        engine._leave_inherited()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_adopt_after_fork)


class OnnxRuntimeUNet:
    """A :class:`~drdm.nn.RecursiveUNet` whose U-Net passes run in ONNX Runtime (CPU, fp32).

    Callable like the network: ``engine(image, t, recursions=None)`` with ``image``
    ``(B, C, *S)`` float32 on the CPU and 1-based timesteps ``t`` ``(B,)``; returns the
    recovering field ``(B, ndim, *S)`` in voxels. The batch size may change between calls; a
    new spatial size ``S`` exports the pass again (once per size, kept). The weights are
    read at export time: build a new engine after changing them.

    Sessions are per process (module docstring): pickling keeps the exported models (bytes)
    and drops the sessions; the first call in another process builds its session from the
    model without exporting again.

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
        self._models: dict[tuple[int, ...], bytes] = {}
        self._sessions: dict[tuple[int, ...], Any] = {}
        self._pid = os.getpid()
        _ENGINES.add(self)

    # pickling: the exported models travel, the sessions (per process) never do
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_sessions"], state["_pid"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._sessions = {}
        self._pid = os.getpid()
        _ENGINES.add(self)

    def _leave_inherited(self) -> None:
        """In a process other than the sessions' owner (a forked child): keep the inherited
        sessions alive forever and start with none."""
        if self._pid == os.getpid():
            return
        if self._sessions:
            _INHERITED_SESSIONS.append(self._sessions)
        self._sessions, self._pid = {}, os.getpid()

    @property
    def session_grids(self) -> tuple[tuple[int, ...], ...]:
        """The grid sizes that have a runtime session in this process (none after pickling or
        in a freshly forked child)."""
        return tuple(self._sessions) if self._pid == os.getpid() else ()

    def session(self, spatial: tuple[int, ...]) -> Any:
        """This process's ONNX Runtime session for grid ``spatial``, built on first use (the
        pass is exported once per grid size and engine; other processes reuse the export)."""
        self._leave_inherited()
        session = self._sessions.get(spatial)
        if session is not None:
            return session
        import onnxruntime as ort

        model = self._models.get(spatial)
        if model is None:
            model = self._models[spatial] = export_onnx(self.network, spatial)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
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
