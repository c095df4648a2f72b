"""Plain U-Nets for the downstream experiments (paper Sections 4.1 and 5.1).

One class serves both experiments, 2D or 3D by ``ndim``:

* segmentation (paper 4.1, Ronneberger et al. 2015): every block is two 3x3 convolutions each
  followed by ReLU; the encoder max-pools with stride 2, the decoder up-samples by 2 (nearest
  neighbour) and concatenates the skip connection; a 1x1 convolution gives one logit per class
  (the sigmoid is applied by the loss and at prediction);
* registration (VoxelMorph-style, Balakrishnan et al. 2019): the same layout with LeakyReLU
  (slope 0.2), input ``cat(moving, fixed)`` and a 3x3 output convolution with near-zero
  initial weights that predicts a dense displacement field in voxels.

Weights are initialised from an explicit ``torch.Generator`` (never the global RNG), so the same
seed gives the same network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNet", "registration_unet", "segmentation_unet"]

_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
_POOL: dict[int, type[nn.Module]] = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


def _block(ndim: int, in_ch: int, out_ch: int, slope: float) -> nn.Sequential:
    act: type[nn.Module] = nn.ReLU if slope == 0.0 else nn.LeakyReLU
    args = () if slope == 0.0 else (slope,)
    return nn.Sequential(
        _CONV[ndim](in_ch, out_ch, 3, padding=1),
        act(*args),
        _CONV[ndim](out_ch, out_ch, 3, padding=1),
        act(*args),
    )


class UNet(nn.Module):
    """U-Net with ``len(widths) - 1`` poolings; input sizes must be multiples of ``size_multiple``.

    Args:
        ndim: 2 or 3 spatial dimensions.
        in_channels: input channels (1 image for segmentation, 2 for moving + fixed).
        out_channels: output channels (classes, or ``ndim`` displacement components).
        widths: channels of the blocks from the finest level to the bottleneck, e.g.
            ``(16, 32, 64)``.
        slope: 0 for ReLU (segmentation), > 0 for LeakyReLU (registration).
        out_kernel: 1 (per-voxel classifier) or 3 (smooth field output).
        out_init_std: if set, the output convolution starts with weights ~ N(0, std^2) and zero
            bias (VoxelMorph starts near the identity transform).
        generator: initialises all weights: He-normal for the hidden convolutions (std
            ``sqrt(2 / ((1 + slope^2) fan_in))``), ``N(0, 1/fan_in)`` for a classifier output,
            zero biases; all drawn from this generator.

    ``forward(x)``: ``(B, in_channels, *spatial)`` -> ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        ndim: int,
        in_channels: int,
        out_channels: int,
        widths: Sequence[int] = (16, 32, 64),
        slope: float = 0.0,
        out_kernel: int = 1,
        out_init_std: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths needs >= 2 positive entries, got {widths}")
        self.ndim = ndim
        self.widths = widths
        self.slope = float(slope)
        self.encoders = nn.ModuleList()
        ch = in_channels
        for w in widths:
            self.encoders.append(_block(ndim, ch, w, slope))
            ch = w
        self.pool = _POOL[ndim](2)
        self.decoders = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.decoders.append(_block(ndim, ch + w, w, slope))
            ch = w
        self.head = _CONV[ndim](ch, out_channels, out_kernel, padding=out_kernel // 2)
        self._init(generator, out_init_std)

    @property
    def size_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this."""
        return 2 ** (len(self.widths) - 1)

    def _init(self, generator: torch.Generator | None, out_init_std: float | None) -> None:
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for module in self.modules():
                if not isinstance(module, nn.Conv2d | nn.Conv3d):
                    continue
                fan_in = module.weight[0].numel()
                if module is self.head and out_init_std is not None:
                    std = out_init_std
                elif module is self.head:
                    std = 1.0 / math.sqrt(fan_in)
                else:  # He initialisation for (leaky) ReLU networks without normalisation
                    std = math.sqrt(2.0 / ((1.0 + self.slope**2) * fan_in))
                module.weight.normal_(0.0, std, generator=generator)
                module.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        m = self.size_multiple
        if any(s % m for s in x.shape[2:]):
            raise ValueError(
                f"U-Net input sizes must be multiples of {m}, got {tuple(x.shape[2:])}"
            )
        skips = []
        for i, encoder in enumerate(self.encoders):
            if i:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        skips.pop()
        for decoder in self.decoders:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = decoder(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


def segmentation_unet(
    num_classes: int,
    widths: Sequence[int] = (16, 32, 64),
    generator: torch.Generator | None = None,
) -> UNet:
    """The 2D segmentation U-Net of paper 4.1: 1 input channel, one logit per class."""
    return UNet(2, 1, num_classes, widths, slope=0.0, out_kernel=1, generator=generator)


def registration_unet(
    ndim: int,
    widths: Sequence[int] = (16, 32, 32, 32),
    generator: torch.Generator | None = None,
) -> UNet:
    """A VoxelMorph-style registration U-Net: input ``cat(moving, fixed)`` ``(B, 2, *spatial)``,
    output the displacement ``(B, ndim, *spatial)`` in voxels (pull-back:
    ``warp(moving, ddf) ≈ fixed``)."""
    return UNet(
        ndim, 2, ndim, widths, slope=0.2, out_kernel=3, out_init_std=1e-5, generator=generator
    )
