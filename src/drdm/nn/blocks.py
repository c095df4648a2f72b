"""Building blocks of the DRDM network: ACNN-II blocks, timestep embedding and projections."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T: dict[int, type[nn.Module]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE_NORM: dict[int, type[nn.Module]] = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


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
        self.norm = _INSTANCE_NORM[ndim](out_ch, eps=eps, affine=True) if norm else None
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
        elif isinstance(m, nn.InstanceNorm2d | nn.InstanceNorm3d) and m.affine:
            with torch.no_grad():
                m.weight.fill_(1.0)
                m.bias.zero_()


def _uniform(shape: torch.Size, bound: float, generator: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2.0 - 1.0) * bound
