"""Building blocks of the DRDM network: ACNN-II blocks, timestep embedding and projections.

**Convolution engine.** PyTorch's CPU heuristic sends small convolutions (batch 1, few
channels, every dilated one below its size threshold) to slow reference kernels; in 3D a
32^3 pass runs several times slower than the same convolutions in oneDNN. The convolutions
here therefore call oneDNN (``torch.mkldnn_convolution``) directly on CPU float32 tensors
when PyTorch was built with it (engine ``"onednn"``, :data:`CONV_ENGINES`), which computes
the same convolution (differences at float32 rounding, tested against ``"native"``,
PyTorch's own dispatch, in ``tests/nn/test_nn_engine.py``). Everything else (CUDA, float64,
no oneDNN) takes PyTorch's dispatch, and so does code traced by ``torch.compile``. Instance
normalisation is computed as ``group_norm`` with one group per channel: the same maths, one
fused kernel instead of a batch-norm over a reshaped tensor.
The engine can be set per network with :meth:`drdm.nn.RecursiveUNet.set_engine`.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ConvEngine = Literal["onednn", "native"]
#: engines a network can be switched to (:meth:`drdm.nn.RecursiveUNet.set_engine`)
CONV_ENGINES: tuple[str, ...] = get_args(ConvEngine)


def onednn_available() -> bool:
    """Whether this PyTorch build can run convolutions in oneDNN on the CPU."""
    return bool(torch.backends.mkldnn.is_available())


class EngineConv:
    """Mixin: ``forward`` through oneDNN on CPU float32 when ``engine == "onednn"``."""

    engine: str = "onednn"
    weight: Tensor
    bias: Tensor | None
    padding: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    def _use_onednn(self, x: Tensor) -> bool:
        return (
            self.engine == "onednn"
            and not torch.compiler.is_compiling()  # the compiler traces PyTorch's own op
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and onednn_available()
        )

    def forward(self, x: Tensor) -> Tensor:
        """Same as the PyTorch layer's forward; oneDNN on CPU float32 (see module doc)."""
        if self._use_onednn(x):
            return torch.mkldnn_convolution(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return self._conv_forward(x, self.weight, self.bias)  # type: ignore[attr-defined]


class Conv2d(EngineConv, nn.Conv2d):
    """``nn.Conv2d`` with the engine choice of this module (same parameters and state)."""


class Conv3d(EngineConv, nn.Conv3d):
    """``nn.Conv3d`` with the engine choice of this module (same parameters and state)."""


class InstanceNorm(nn.Module):
    """Affine instance normalisation over all spatial axes (2D or 3D), as ``group_norm``
    with one group per channel: ``(x - mean) / sqrt(var + eps) * weight + bias`` per sample
    and channel, biased variance. State: ``weight``, ``bias`` (``(C,)``), like
    ``nn.InstanceNorm2d(C, affine=True)``."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = float(eps)
        self.channels = int(channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S)`` -> ``(B, C, *S)``."""
        return F.group_norm(x, self.channels, self.weight, self.bias, self.eps)


_CONV: dict[int, type[nn.Module]] = {2: Conv2d, 3: Conv3d}
_CONV_T: dict[int, type[nn.Module]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def conv(ndim: int, in_ch: int, out_ch: int, kernel: int = 3, **kwargs: int) -> nn.Module:
    """``Conv2d`` or ``Conv3d`` (by ``ndim``) with the given arguments."""
    return _CONV[ndim](in_ch, out_ch, kernel, **kwargs)


def downsample(ndim: int, channels: int) -> nn.Module:
    """Strided convolution halving every spatial size: kernel 4, stride 2, padding 1."""
    return _CONV[ndim](channels, channels, 4, stride=2, padding=1)


def upsample(ndim: int, channels: int) -> nn.Module:
    """Transposed convolution doubling every spatial size: kernel 4, stride 2, padding 1."""
    return _CONV_T[ndim](channels, channels, 4, stride=2, padding=1)


def sinusoidal_table(
    num_steps: int, dim: int, max_period: float = 10000.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Fixed sinusoidal timestep embedding table, ``(num_steps, dim)``.

    Row ``p`` (the 0-based position, ``p = t - 1`` for the 1-based timestep ``t``) holds
    ``sin(p * w_k)`` in column ``2k`` and ``cos(p * w_k)`` in column ``2k + 1``, with
    ``w_k = max_period ** (-2k / dim)``. Computed in float64, returned as ``dtype``.
    """
    k = torch.arange(dim // 2, dtype=torch.float64)
    freqs = max_period ** (-2.0 * k / dim)
    angles = torch.arange(num_steps, dtype=torch.float64)[:, None] * freqs[None, :]
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(num_steps, dim)
    return table.to(dtype)


class TimeProjection(nn.Module):
    """``fc -> act -> fc`` projection of the timestep embedding to ``channels`` (Table .4).

    Input ``(B, embed_dim)``; output ``(B, channels, 1, ..., 1)`` broadcastable to a
    ``(B, channels, *spatial)`` feature map with ``ndim`` spatial axes.
    """

    def __init__(self, embed_dim: int, channels: int, ndim: int, slope: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, channels)
        self.fc2 = nn.Linear(channels, channels)
        self.slope = float(slope)
        self.ndim = ndim

    def forward(self, emb: Tensor) -> Tensor:
        """``(B, embed_dim)`` -> ``(B, channels, *[1] * ndim)``."""
        h = F.leaky_relu(self.fc1(emb), self.slope)
        h = self.fc2(h)
        return h.view(*h.shape, *([1] * self.ndim))


class ACNNBlock(nn.Module):
    """ACNN-II block (Table .5): ``in_ch -> out_ch`` at unchanged spatial size.

    ``r = norm(conv3x3(x))`` (norm optional), ``f = conv3x3(act(r))``,
    ``f = conv3x3_dilated(act(f))``, output ``act(f + r)``; ``act`` is a leaky ReLU.
    """

    def __init__(
        self,
        ndim: int,
        in_ch: int,
        out_ch: int,
        norm: bool,
        slope: float = 1e-6,
        dilation: int = 3,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.conv_in = conv(ndim, in_ch, out_ch, 3, padding=1)
        self.norm = InstanceNorm(out_ch, eps=eps) if norm else None
        self.conv_mid = conv(ndim, out_ch, out_ch, 3, padding=1)
        self.conv_dil = conv(ndim, out_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.slope = float(slope)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_ch, *S)`` -> ``(B, out_ch, *S)``."""
        r = self.conv_in(x)
        if self.norm is not None:
            r = self.norm(r)
        f = self.conv_mid(F.leaky_relu(r, self.slope))
        f = self.conv_dil(F.leaky_relu(f, self.slope))
        return F.leaky_relu(f + r, self.slope)


def init_parameters_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every conv/linear/norm layer of ``module`` from ``generator``.

    Same distributions as PyTorch's defaults (weights and biases uniform in
    ``±1/sqrt(fan_in)``, norms weight 1 and bias 0), but reproducible without touching the
    global RNG.
    """
    for m in module.modules():
        if isinstance(
            m, nn.Linear | nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d
        ):
            w = m.weight
            # PyTorch's fan_in is size(1) * receptive field, also for transposed convs.
            fan_in = w.shape[1] * (math.prod(w.shape[2:]) if w.dim() > 2 else 1)
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                w.copy_(_uniform(w.shape, bound, generator).to(w))
                if m.bias is not None:
                    m.bias.copy_(_uniform(m.bias.shape, bound, generator).to(m.bias))
        elif isinstance(m, InstanceNorm):
            with torch.no_grad():
                m.weight.fill_(1.0)
                m.bias.zero_()


def _uniform(shape: torch.Size, bound: float, generator: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2.0 - 1.0) * bound
