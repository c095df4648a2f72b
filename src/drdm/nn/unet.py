"""The recursive U-Net ``D_theta`` of DRDM (paper Eq. 12 and Appendix A)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..choices import check_choice
from ..spatial import compose, warp
from .blocks import (
    CONV_ENGINES,
    ACNNBlock,
    ConvEngine,
    EngineConv,
    TimeProjection,
    conv,
    downsample,
    init_parameters_,
    sinusoidal_table,
)
from .blocks import upsample as upsample_layer
from .config import NetworkConfig


def space_to_depth(x: Tensor, r: int) -> Tensor:
    """Lossless rearrangement ``(B, C, *S)`` -> ``(B, C * r**ndim, *S / r)``: channel
    ``c * r**ndim + k`` holds the pixel at offset ``k`` (row-major over the ``ndim`` axes) of
    each ``r``-block of channel ``c``. 2D and 3D (``ndim = x.dim() - 2``)."""
    b, c, *spatial = x.shape
    nd = len(spatial)
    shape = [b, c]
    for s in spatial:
        shape += [s // r, r]
    h = x.reshape(shape)
    # (B, C, S0/r, r, S1/r, r, ...) -> (B, C, r, r, ..., S0/r, S1/r, ...)
    order = [0, 1] + [3 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)]
    return h.permute(order).reshape(b, c * r**nd, *(s // r for s in spatial))


class RecursiveUNet(nn.Module):
    """DRDM network: a time-conditioned U-Net of ACNN-II blocks, run recursively (Eq. 12).

    One U-Net pass (:meth:`single_pass`) maps an image ``(B, C, *S)`` and 1-based timesteps
    ``t`` ``(B,)`` to a displacement field ``(B, ndim, *S)`` in voxels (channel ``i`` along
    spatial axis ``i``, pull-back convention ``warped(x) = I(x + u(x))``). Layout (Table .4,
    for ``widths = (10, 20, 40)``): at every encoder level a projection of the timestep
    embedding is added to the level's input, three ACNN-II blocks follow, then a strided conv
    halves the size; the bottleneck input is multiplied by its projection; each decoder level
    upsamples with a transposed conv, concatenates ``[skip, upsampled]``, adds its projection
    and applies three ACNN-II blocks; a 3x3 conv gives ``ndim`` output channels.

    :meth:`forward` runs the internal recursion of Eq. 12 with ``K = config.recursions``: pass
    ``k`` sees the *original* image warped once by the field accumulated so far, and its field
    ``a`` is composed with the accumulated field ``b`` as ``compose(a, b)`` (Eq. 5), so the
    image is never re-warped repeatedly.

    Args:
        config: architecture; defaults to :class:`NetworkConfig` (Appendix A).
        generator: source of the initial weights (PyTorch's default distributions). ``None``
            uses a generator seeded with 0, so construction is deterministic.
    """

    def __init__(
        self, config: NetworkConfig | None = None, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        cfg = config if config is not None else NetworkConfig()
        self.config = cfg
        nd, widths, emb = cfg.ndim, cfg.widths, cfg.embed_dim
        enc_norm = cfg.norm in ("all", "encoder")
        dec_norm = cfg.norm == "all"

        def proj(channels: int) -> TimeProjection:
            return TimeProjection(emb, channels, nd, cfg.embed_act_slope)

        def stage(chs: list[int], norm: bool) -> nn.Sequential:
            return nn.Sequential(
                *(
                    ACNNBlock(nd, a, b, norm, cfg.act_slope, cfg.dilation, cfg.norm_eps)
                    for a, b in zip(chs[:-1], chs[1:], strict=True)
                )
            )

        self.register_buffer(
            "time_table",
            sinusoidal_table(cfg.num_steps, emb, cfg.embed_max_period),
            persistent=False,
        )
        self.stem: nn.Module | None = None
        if cfg.input_stride > 1 and cfg.input_stem == "strided":
            r = cfg.input_stride
            self.stem = conv(nd, cfg.in_channels, cfg.stem_width, r, stride=r)
        self.enc_time = nn.ModuleList()
        self.enc_blocks = nn.ModuleList()
        self.down = nn.ModuleList()
        in_ch = cfg.unet_in_channels
        for w in widths:
            self.enc_time.append(proj(in_ch))
            self.enc_blocks.append(stage([in_ch, w, w, w], enc_norm))
            self.down.append(downsample(nd, w))
            in_ch = w
        self.mid_time = proj(widths[-1])
        wb = cfg.bottleneck_width
        self.mid_blocks = stage([widths[-1], wb, wb, widths[-1]], enc_norm)
        # Decoder modules are indexed by level (0 = full resolution); level i upsamples the
        # output of level i + 1 (or the bottleneck), which has widths[i] channels.
        self.up = nn.ModuleList()
        self.dec_time = nn.ModuleList()
        self.dec_blocks = nn.ModuleList()
        for i, w in enumerate(widths):
            out = widths[i - 1] if i > 0 else widths[0]
            self.up.append(upsample_layer(nd, w))
            self.dec_time.append(proj(2 * w))
            self.dec_blocks.append(stage([2 * w, w, out, out], dec_norm))
        self.out_conv = conv(nd, widths[0], nd, 3, padding=1)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """(Re-)initialise all weights from ``generator`` (seeded with 0 when ``None``)."""
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        init_parameters_(self, generator)
        std = self.config.output_init_std
        if std is not None:
            w = self.out_conv.weight
            with torch.no_grad():
                w.copy_(torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w) * std)
                self.out_conv.bias.zero_()

    def set_engine(self, engine: ConvEngine) -> RecursiveUNet:
        """Choose how convolutions run: ``"onednn"`` (default: oneDNN on CPU float32, see
        :mod:`drdm.nn.blocks`) or ``"native"`` (PyTorch's own dispatch). Returns ``self``."""
        check_choice("engine", engine, CONV_ENGINES)
        for module in self.modules():
            if isinstance(module, EngineConv):
                module.engine = engine
        return self

    # ------------------------------------------------------------------ helpers
    def check_input(self, image: Tensor) -> None:
        """Raise ``ValueError`` unless ``image`` is ``(B, in_channels, *S)`` with valid ``S``."""
        cfg = self.config
        if image.dim() != cfg.ndim + 2 or image.shape[1] != cfg.in_channels:
            raise ValueError(
                f"image must have shape (B, {cfg.in_channels}, *spatial) with {cfg.ndim} spatial "
                f"axes, got {tuple(image.shape)}"
            )
        m = cfg.size_multiple
        bad = [s for s in image.shape[2:] if s % m != 0 or s == 0]
        if bad:
            raise ValueError(
                f"every spatial size must be a positive multiple of {m} "
                f"(2 ** {len(cfg.widths)} downsamplings), got spatial shape "
                f"{tuple(image.shape[2:])}; pad or resize the image"
            )

    def embed(self, t: Tensor | int, batch: int) -> Tensor:
        """Sinusoidal embedding ``(batch, embed_dim)`` of 1-based timesteps ``t`` in ``1..T``.

        ``t``: an int or a LongTensor of shape ``()`` or ``(batch,)``.
        """
        table: Tensor = self.time_table
        t = torch.as_tensor(t, device=table.device)
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"t must be an integer tensor (1-based timesteps), got {t.dtype}")
        t = t.reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise ValueError(f"t must have shape ({batch},) or be a scalar, got {t.numel()} values")
        num_steps = self.config.num_steps
        if bool(((t < 1) | (t > num_steps)).any()):
            raise ValueError(f"timesteps must lie in 1..{num_steps}, got {t.tolist()}")
        return table[t.long() - 1]

    def _to_voxels(self, raw: Tensor) -> Tensor:
        cfg = self.config
        shape = (1, cfg.ndim) + (1,) * cfg.ndim
        size = torch.tensor(raw.shape[2:], dtype=raw.dtype, device=raw.device).view(shape)
        ddf = raw * size if cfg.output_units == "image" else raw
        if cfg.clamp_to_extent:
            limit = size - 1
            ddf = torch.maximum(torch.minimum(ddf, limit), -limit)
        return ddf

    def _enter(self, image: Tensor) -> Tensor:
        """The input stem: ``(B, C, *S)`` -> ``(B, unet_in_channels, *S / input_stride)``."""
        cfg = self.config
        r = cfg.input_stride
        if r == 1:
            return image
        if self.stem is not None:
            return F.leaky_relu(self.stem(image), cfg.act_slope)
        return space_to_depth(image, r)

    def unet_pass(self, image: Tensor, emb: Tensor) -> Tensor:
        """One U-Net evaluation from a precomputed embedding (:meth:`embed`, ``(B, embed_dim)``
        in the image's dtype): ``(B, C, *S)`` -> ``(B, ndim, *S)`` voxels, no input checks.
        With ``input_stride`` ``r > 1`` the U-Net runs on ``S / r`` and its raw output is
        upsampled linearly to ``S`` before the conversion to voxels."""
        skips = []
        h = self._enter(image)
        for proj, blocks, down in zip(self.enc_time, self.enc_blocks, self.down, strict=True):
            h = blocks(h + proj(emb))
            skips.append(h)
            h = down(h)
        tm = self.mid_time(emb)
        h = h * tm if self.config.bottleneck_embedding == "multiply" else h + tm
        h = self.mid_blocks(h)
        for i in reversed(range(len(self.up))):
            h = self.up[i](h)
            h = torch.cat([skips[i], h], dim=1) + self.dec_time[i](emb)
            h = self.dec_blocks[i](h)
        raw = self.out_conv(h)
        if self.config.input_stride > 1:
            mode = "bilinear" if self.config.ndim == 2 else "trilinear"
            raw = F.interpolate(raw, size=image.shape[2:], mode=mode, align_corners=False)
        return self._to_voxels(raw)

    # ------------------------------------------------------------------ public API
    def single_pass(self, image: Tensor, t: Tensor | int) -> Tensor:
        """One U-Net evaluation ``D_theta(I, t)`` (no recursion).

        ``image``: ``(B, in_channels, *S)`` with every ``S_i`` a multiple of
        ``config.size_multiple``; ``t``: 1-based timesteps ``(B,)`` (or a scalar).
        Returns ``(B, ndim, *S)`` displacement in voxels.
        """
        self.check_input(image)
        emb = self.embed(t, image.shape[0]).to(image.dtype)
        return self.unet_pass(image, emb)

    def forward(self, image: Tensor, t: Tensor | int, recursions: int | None = None) -> Tensor:
        """Estimate the recovering DVF ``psi_hat_t`` with the internal recursion of Eq. 12.

        Args:
            image: ``(B, in_channels, *S)`` deformed image ``I_t``.
            t: 1-based timesteps in ``1..T``, LongTensor ``(B,)`` or a scalar.
            recursions: ``K``; defaults to ``config.recursions``.

        Returns:
            ``(B, ndim, *S)`` displacement field in voxels,
            ``psi^(K) o ... o psi^(1)`` composed with Eq. 5.
        """
        return self.recurse(self.unet_pass, image, t, recursions)

    def recurse(
        self,
        unet_pass: Callable[[Tensor, Tensor], Tensor],
        image: Tensor,
        t: Tensor | int,
        recursions: int | None = None,
    ) -> Tensor:
        """The internal recursion of Eq. 12 around any implementation of one U-Net pass
        (``unet_pass(image, emb)``, e.g. :meth:`unet_pass` or an inference engine's); same
        arguments and result as :meth:`forward`."""
        k_total = self.config.recursions if recursions is None else int(recursions)
        if k_total < 1:
            raise ValueError(f"recursions must be >= 1, got {k_total}")
        self.check_input(image)
        emb = self.embed(t, image.shape[0]).to(image.dtype)
        ddf = unet_pass(image, emb)
        for _ in range(k_total - 1):
            moved = warp(image, ddf, mode="linear", padding=self.config.warp_padding)
            ddf = compose(unet_pass(moved, emb), ddf, padding=self.config.compose_padding)
        return ddf
