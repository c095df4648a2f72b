"""Typed configuration of the DRDM recursive U-Net (paper Appendix A, Tables .4 and .5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..choices import COMPOSE_PADDINGS, ComposePadding, check_choice
from ..config import Config

NormPlacement = Literal["all", "encoder", "none"]
OutputUnits = Literal["image", "voxel"]
InputStem = Literal["space_to_depth", "strided"]

_NORMS: tuple[str, ...] = get_args(NormPlacement)
_UNITS: tuple[str, ...] = get_args(OutputUnits)
_STEMS: tuple[str, ...] = get_args(InputStem)


@dataclass(frozen=True)
class NetworkConfig(Config):
    """Architecture of the DRDM network ``D_theta`` (Eq. 12, Appendix A).

    The defaults follow Appendix A of the paper; the authors' published checkpoint differs in
    a few documented fields (see :func:`drdm.official_weights.official_network_config`).

    Attributes:
        ndim: spatial dimensionality, 2 or 3 (``Conv2d``/``Conv3d`` etc. are chosen from it).
        in_channels: image channels ``c_0``.
        widths: feature channels of the encoder levels at full, 1/2, 1/4 resolution
            (10/20/40 in Table .4). One strided-conv downsampling follows each level, so the
            input's spatial size must be divisible by ``2 ** len(widths)``.
        bottleneck_width: channels inside the bottleneck (40 -> 20 -> 20 -> 40 in Table .4).
        num_steps: ``T``, the number of diffusion steps; valid timesteps are ``1..T``.
        embed_dim: length of the fixed sinusoidal timestep embedding (80 in Table .4).
        embed_max_period: the embedding's longest period: entry ``2k`` is
            ``sin(p * P ** (-2k / embed_dim))`` and entry ``2k + 1`` the cosine, for position
            ``p = t - 1`` (the standard transformer layout has ``P = 10000``).
        embed_act_slope: negative slope of the activation between the two fully connected
            layers of every timestep projection (Table .4: 0.01; 0 is a plain ReLU).
        recursions: ``K``, the internal recursions of Eq. 12 (2 in the paper).
        act_slope: negative slope of the leaky ReLUs inside the ACNN-II blocks (Table .5: 1e-6).
        dilation: dilation of the third convolution of every ACNN-II block (Table .5: 3).
        norm: which ACNN-II blocks apply affine instance normalisation after their first conv:
            ``"all"`` (Table .5), ``"encoder"`` (encoder and bottleneck blocks only) or
            ``"none"``.
        norm_eps: epsilon of the instance normalisation.
        bottleneck_embedding: how the bottleneck's timestep projection is injected:
            ``"multiply"`` (Table .4, ``f4 x t4``) or ``"add"`` (as at every other level).
        output_units: units of the raw output convolution: ``"image"`` (fractions of the image
            size, multiplied by the size ``S_i`` of axis ``i`` to give voxels) or ``"voxel"``.
        clamp_to_extent: clamp component ``i`` of every pass's output to ``±(S_i - 1)`` voxels,
            i.e. ``±(1 - 1/S_i)`` image sizes.
        output_init_std: std of the normal initialisation of the output convolution's weights
            (bias zero), so an untrained network predicts an almost-identity field; ``None``
            keeps PyTorch's default initialisation for that layer too.
        warp_padding: padding used when the input image is re-warped inside the recursion.
        compose_padding: padding used when the recursion's fields are composed (Eq. 5).
        input_stride: ``r``, a power of two: the U-Net runs on a grid ``r`` times coarser than
            the image it is given, and its field is upsampled (linearly) back to the image
            grid. With ``r > 1`` the network still *sees* every pixel through ``input_stem``,
            and the recursion of Eq. 12 re-warps the full-resolution image. ``1`` (default) is
            the paper's network.
        input_stem: how the full-resolution image enters the coarse grid when
            ``input_stride > 1``: ``"space_to_depth"`` (lossless: each ``r**ndim`` block of
            pixels becomes ``r**ndim`` channels) or ``"strided"`` (a learned convolution of
            kernel and stride ``r`` to ``stem_width`` channels, then a leaky ReLU).
        stem_width: output channels of the ``"strided"`` stem.
    """

    ndim: int = 2
    in_channels: int = 1
    widths: tuple[int, ...] = (10, 20, 40)
    bottleneck_width: int = 20
    num_steps: int = 80
    embed_dim: int = 80
    embed_max_period: float = 10000.0
    embed_act_slope: float = 0.01
    recursions: int = 2
    act_slope: float = 1e-6
    dilation: int = 3
    norm: NormPlacement = "all"
    norm_eps: float = 1e-5
    bottleneck_embedding: Literal["multiply", "add"] = "multiply"
    output_units: OutputUnits = "image"
    clamp_to_extent: bool = True
    output_init_std: float | None = 1e-5
    warp_padding: ComposePadding = "zeros"
    compose_padding: ComposePadding = "border"
    input_stride: int = 1
    input_stem: InputStem = "space_to_depth"
    stem_width: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {self.ndim}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if len(self.widths) < 1 or min(self.widths) < 1:
            raise ValueError(
                f"widths must be a non-empty sequence of positive ints, got {self.widths}"
            )
        if self.bottleneck_width < 1:
            raise ValueError(f"bottleneck_width must be >= 1, got {self.bottleneck_width}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.embed_dim < 2 or self.embed_dim % 2:
            raise ValueError(f"embed_dim must be an even number >= 2, got {self.embed_dim}")
        if not self.embed_max_period > 0:
            raise ValueError(f"embed_max_period must be > 0, got {self.embed_max_period}")
        if self.recursions < 1:
            raise ValueError(f"recursions must be >= 1, got {self.recursions}")
        if self.dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {self.dilation}")
        check_choice("norm", self.norm, _NORMS)
        if self.bottleneck_embedding not in ("multiply", "add"):
            raise ValueError(
                "bottleneck_embedding must be 'multiply' or 'add', "
                f"got {self.bottleneck_embedding!r}"
            )
        check_choice("output_units", self.output_units, _UNITS)
        if self.output_init_std is not None and self.output_init_std < 0:
            raise ValueError(f"output_init_std must be >= 0 or None, got {self.output_init_std}")
        if self.input_stride < 1 or self.input_stride & (self.input_stride - 1):
            raise ValueError(f"input_stride must be a power of two >= 1, got {self.input_stride}")
        check_choice("input_stem", self.input_stem, _STEMS)
        if self.stem_width < 1:
            raise ValueError(f"stem_width must be >= 1, got {self.stem_width}")
        for name in ("warp_padding", "compose_padding"):
            check_choice(name, getattr(self, name), COMPOSE_PADDINGS)

    @property
    def size_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this
        (``input_stride * 2 ** len(widths)``)."""
        return self.input_stride * 2 ** len(self.widths)

    @property
    def unet_in_channels(self) -> int:
        """Channels entering the first U-Net level (after the input stem, if any)."""
        if self.input_stride == 1:
            return self.in_channels
        if self.input_stem == "space_to_depth":
            return self.in_channels * self.input_stride**self.ndim
        return self.stem_width
