"""The DRDM authors' forward process, as their published code runs it (a preset).

**This is not the package's own forward process** (:class:`drdm.diffusion.ForwardDiffusion`,
which follows the paper's text). It reproduces what the authors' released code does, so that
their published checkpoint (imported with ``drdm import-official``) is run on the random
fields it was trained on. Where the code departs from the paper's description, the preset
follows the code:

* **One random velocity per sample**, not one per step: a multi-scale Gaussian field ``v``
  on a control grid of ``grid_size`` (64) points per axis covering ``field_extent`` (2) times
  the image extent. Its components are drawn at the resolutions ``(64, 32, 16, 8)`` with std
  ``v_scale * grid_size / r`` (``v_scale = 4e-5``, in units of the control-grid extent) and
  upsampled linearly (edge-aligned) to ``grid_size``.
* **A perturbation** ``p`` of the same kind at ``perturbation`` (8 %) of that scale is warped
  by ``v`` and added to it, ``v' = v + p(x + v(x))``; it enters the cumulative field only, and
  the authors' code applies it in every draw (training and recovery).
* **Counts instead of a schedule of independent steps**: the cumulative field is ``v'``
  composed with itself ``clamp(floor(2 t**1.3 / 3), 1, 200)`` times and the step field is
  ``v`` composed ``floor(t**0.6)`` times, each composition ``phi <- compose(v, phi)``
  (``phi(x) <- v(x) + phi(x + v(x))``) with border padding on the control grid.
* **Scaling to the image**: both fields are upsampled linearly (edge-aligned) to
  ``field_extent`` times the image size, multiplied by ``image size / grid_size`` in units of
  the image extent, and centre-cropped to the image. Geometrically the control grid spans
  twice the image, so a displacement read on it corresponds to ``2 x`` its value in image
  units; the ``S / 64`` factor gives ``4 x`` at ``S = 256``, i.e. it *doubles* the displacement
  implied by the control grid. This is where the folds in the authors' random fields come from.
  ``displacement_scale="geometric"`` uses the geometric factor instead (not the authors').

Timesteps: the schedule is evaluated at the ``t`` passed. The authors' recovery for level
``T'`` draws its random field at ``t = T'`` and then feeds the network the 0-based indices
``T' - 1 ... 0``, i.e. the 1-based ``t = T' ... 1`` of :class:`drdm.nn.RecursiveUNet`. (Their
training draws the field at the 0-based index it feeds the network, so ``t = 0`` is accepted
here too.) Their recovery loop composes with zero padding and resamples images bicubically
with zero padding: see :func:`drdm.sampling.official_sampler_config`.

Everything is batched over samples (each with its own velocity and its own ``t``); randomness
comes only from the ``generator`` argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..choices import (
    COMPOSE_PADDINGS,
    FIELD_IMAGE_MODES,
    ComposePadding,
    FieldImageMode,
    check_choice,
)
from ..config import Config
from ..spatial import compose, identity_grid, sample, warp
from .forward import ForwardFields, ForwardSample, deform_images
from .random_field import randn
from .schedule import check_timesteps, span_sum

__all__ = ["OfficialForwardProcess", "OfficialProcessConfig"]


@dataclass(frozen=True)
class OfficialProcessConfig(Config):
    """Parameters of the authors' forward process (see the module docstring).

    Attributes:
        ndim: spatial dimensionality, 2 or 3.
        num_steps: ``T`` of the network the preset belongs to (80); ``t`` lies in ``0..T``.
        grid_size: control points per axis of the random field (64).
        resolutions: grid sizes of the Gaussian components (64, 32, 16, 8); each must divide
            into ``grid_size`` points by linear upsampling (any positive size works).
        v_scale: std of the finest component in units of the control-grid extent; the
            component at resolution ``r`` has std ``v_scale * grid_size / r``.
        perturbation: relative std of the perturbation field added to the cumulative velocity.
        always_perturb: apply the perturbation in every draw, as the authors' code does (their
            recovery too); when ``False`` only ``sample_fields(..., perturb=True)`` applies it.
        cumulative_power, cumulative_numerator, cumulative_denominator: the cumulative count
            is ``floor(numerator * t**power / denominator)`` ...
        cumulative_min, cumulative_max: ... clamped to this range.
        step_power: the step count is ``floor(t**step_power)``.
        field_extent: the control grid covers this multiple of the image extent; the field is
            upsampled to ``field_extent`` times the image size and centre-cropped.
        compose_padding: padding when composing on the control grid (the authors' "border").
        displacement_scale: ``"official"`` multiplies the upsampled field by
            ``image size / grid_size`` in image-extent units (the authors' code);
            ``"geometric"`` multiplies it by ``field_extent``, the factor implied by the grid
            geometry (half the authors' displacement at 256 pixels).
        image_mode: interpolation used by :meth:`OfficialForwardProcess.sample` to deform
            images (the authors': bicubic, ``"cubic"``), with zero padding.
    """

    ndim: int = 2
    num_steps: int = 80
    grid_size: int = 64
    resolutions: tuple[int, ...] = (64, 32, 16, 8)
    v_scale: float = 4.0e-5
    perturbation: float = 0.08
    always_perturb: bool = True
    cumulative_power: float = 1.3
    cumulative_numerator: float = 2.0
    cumulative_denominator: float = 3.0
    cumulative_min: int = 1
    cumulative_max: int = 200
    step_power: float = 0.6
    field_extent: float = 2.0
    compose_padding: ComposePadding = "border"
    displacement_scale: Literal["official", "geometric"] = "official"
    image_mode: FieldImageMode = "cubic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolutions", tuple(int(r) for r in self.resolutions))
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {self.ndim}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.grid_size < 2:
            raise ValueError(f"grid_size must be >= 2, got {self.grid_size}")
        if not self.resolutions or min(self.resolutions) < 1:
            raise ValueError(f"resolutions must be positive ints, got {self.resolutions}")
        if not self.v_scale > 0:
            raise ValueError(f"v_scale must be > 0, got {self.v_scale}")
        if self.perturbation < 0:
            raise ValueError(f"perturbation must be >= 0, got {self.perturbation}")
        if not 0 <= self.cumulative_min <= self.cumulative_max:
            raise ValueError(
                f"need 0 <= cumulative_min <= cumulative_max, got "
                f"{self.cumulative_min}, {self.cumulative_max}"
            )
        if self.field_extent < 1:
            raise ValueError(f"field_extent must be >= 1, got {self.field_extent}")
        check_choice("compose_padding", self.compose_padding, COMPOSE_PADDINGS)
        if self.displacement_scale not in ("official", "geometric"):
            raise ValueError(
                "displacement_scale must be 'official' or 'geometric', "
                f"got {self.displacement_scale!r}"
            )
        check_choice("image_mode", self.image_mode, FIELD_IMAGE_MODES)


class OfficialForwardProcess:
    """The authors' forward process (preset); same interface as ``ForwardDiffusion``.

    See the module docstring for what it computes. All fields returned are on the image grid,
    ``(B, ndim, *size)``, in voxels (channel ``i`` along array axis ``i``, pull-back
    convention ``warped(x) = I(x + u(x))``).
    """

    preset = "official"

    def __init__(self, config: OfficialProcessConfig | None = None) -> None:
        self.config = config or OfficialProcessConfig()

    # ----------------------------------------------------------------- schedules
    def cumulative_counts(self, t: Tensor) -> Tensor:
        """Compositions in the cumulative field: ``clamp(floor(2 t**1.3 / 3), 1, 200)``."""
        c = self.config
        tf = torch.as_tensor(t).to(torch.float64)
        n = torch.floor(c.cumulative_numerator * tf**c.cumulative_power / c.cumulative_denominator)
        return n.clamp(c.cumulative_min, c.cumulative_max).long()

    def step_counts(self, t: Tensor) -> Tensor:
        """Compositions in the step field: ``floor(t**0.6)`` (0 at ``t = 0``)."""
        tf = torch.as_tensor(t).to(torch.float64)
        return torch.floor(tf**self.config.step_power).long()

    def step_units(self, t: Tensor) -> Tensor:
        """The size of step ``t`` in compositions of ``v`` (:meth:`step_counts`); the same
        role as :meth:`drdm.diffusion.ForwardDiffusion.step_units` (the sampler's ``"shares"``
        rule)."""
        return self.step_counts(t)

    # ----------------------------------------------------------------- random velocity
    def random_velocity(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        scale: float = 1.0,
    ) -> Tensor:
        """One multi-scale velocity per sample on the control grid, in control-grid voxels.

        Component ``r`` (for ``r`` in ``resolutions``) is i.i.d. Gaussian on an ``r``-point
        grid with std ``scale * v_scale * grid_size / r`` control-grid extents, upsampled
        linearly (edge-aligned) to ``grid_size`` points. Returns ``(batch, ndim, *grid)``.
        """
        c = self.config
        device = torch.device(device)
        g = c.grid_size
        mode = "bilinear" if c.ndim == 2 else "trilinear"
        field = torch.zeros(batch, c.ndim, *([g] * c.ndim), device=device, dtype=dtype)
        for r in c.resolutions:
            std = scale * c.v_scale * g / r * g  # x g: extents -> control-grid voxels
            component = randn((batch, c.ndim, *([r] * c.ndim)), generator, device, dtype) * std
            if r != g:
                component = F.interpolate(
                    component, size=(g,) * c.ndim, mode=mode, align_corners=False
                )
            field = field + component
        return field

    # ----------------------------------------------------------------- deterministic part
    def fields_from_velocity(
        self,
        velocity: Tensor,
        perturbation: Tensor | None,
        t: Tensor | int,
        size: Sequence[int],
        span: int = 1,
    ) -> ForwardFields:
        """The deterministic part of a draw: counts, compositions, scaling and cropping.

        Args:
            velocity: ``v``, ``(B, ndim, *grid)`` control-grid voxels.
            perturbation: ``p`` of the same shape (already scaled), or ``None`` for none.
            t: ``(B,)`` timesteps (or one int for all) in ``0..T``.
            size: image grid, ``ndim`` entries.

        Returns:
            ``ForwardFields(step, cumulative)`` on the image grid in voxels, where ``step`` is
            ``v`` composed ``step_counts(t)`` times and ``cumulative`` is
            ``v + p(x + v(x))`` composed ``cumulative_counts(t)`` times.
        """
        c = self.config
        batch = velocity.shape[0]
        t = check_timesteps(t, batch, 0, self.config.num_steps, velocity.device)
        applied = velocity
        if perturbation is not None:
            applied = velocity + warp(
                perturbation, velocity, mode="linear", padding=c.compose_padding
            )
        cumulative_counts = self.cumulative_counts(t)
        cumulative = self._repeat_compose(applied, cumulative_counts)
        counts = span_sum(self.step_units, t, span)
        step = self._repeat_compose(velocity, torch.minimum(counts, cumulative_counts))
        return ForwardFields(
            step=self._to_image(step, size), cumulative=self._to_image(cumulative, size)
        )

    def _repeat_compose(self, velocity: Tensor, counts: Tensor) -> Tensor:
        """``phi <- compose(v, phi)`` repeated ``counts[b]`` times per sample, from ``phi = 0``."""
        counts = counts.to(velocity.device)
        ddf = torch.zeros_like(velocity)
        for j in range(int(counts.max()) if counts.numel() else 0):
            active = counts > j
            if bool(active.all()):
                ddf = compose(velocity, ddf, padding=self.config.compose_padding)
            else:
                idx = active.nonzero().squeeze(1)
                ddf = ddf.index_copy(
                    0, idx, compose(velocity[idx], ddf[idx], padding=self.config.compose_padding)
                )
        return ddf

    def _to_image(self, field: Tensor, size: Sequence[int]) -> Tensor:
        """Upsample (edge-aligned) to ``field_extent x size``, scale, centre-crop; -> voxels.

        Only the cropped part is computed: output voxel ``j`` of axis ``i`` is the upsampled
        voxel ``j + S_i // 2`` (for ``field_extent = 2``), whose edge-aligned source position on
        the control grid is ``(j + offset_i + 0.5) * g / (extent * S_i) - 0.5``.
        """
        c = self.config
        ndim = len(size)
        g = field.shape[2:]
        view = (ndim, *([1] * ndim))
        big = [round(c.field_extent * s) for s in size]
        offset = [(b - s) // 2 for b, s in zip(big, size, strict=True)]
        coords = identity_grid(size, device=field.device, dtype=field.dtype)
        off = field.new_tensor(offset).view(view)
        ratio = field.new_tensor([gi / b for gi, b in zip(g, big, strict=True)]).view(view)
        coords = ((coords + off + 0.5) * ratio - 0.5).clamp_min(0.0)
        out = sample(field, coords.unsqueeze(0), mode="linear", padding="border")
        # control-grid voxels -> control-grid extents -> image extents -> image voxels
        if c.displacement_scale == "official":
            factor = [s / gi * s / gi for s, gi in zip(size, g, strict=True)]
        else:
            factor = [c.field_extent * s / gi for s, gi in zip(size, g, strict=True)]
        return out * out.new_tensor(factor).view(1, *view)

    # ----------------------------------------------------------------- sampling
    def sample_fields(
        self,
        size: Sequence[int],
        t: Tensor | int,
        generator: torch.Generator | None = None,
        perturb: bool = False,
        batch: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        span: int = 1,
    ) -> ForwardFields:
        """Draw the step and cumulative fields for an image grid of ``size`` (``ndim`` ints).

        ``t``: one timestep per sample (``(B,)``) or an int shared by ``batch`` samples.
        ``span = s > 1``: the step field covers the last ``s`` steps ``t, ..., t - s + 1``
        (``v`` composed ``step_counts(t) + ... + step_counts(t - s + 1)`` times, at most the
        cumulative field's count), as in :meth:`drdm.diffusion.ForwardDiffusion.sample_fields`.
        The perturbation enters the cumulative field when ``perturb`` or
        ``config.always_perturb``. Returns ``(B, ndim, *size)`` fields in voxels. The same
        ``generator`` state gives the same fields bit for bit on the CPU (a CPU generator gives
        the same random numbers whatever ``device``).
        """
        c = self.config
        size = [int(s) for s in size]
        if len(size) != c.ndim or min(size) < 1:
            raise ValueError(f"expected {c.ndim} positive sizes, got {size}")
        device = torch.device(device)
        if batch is None:
            batch = torch.as_tensor(t).numel()
        t = check_timesteps(t, batch, 0, self.config.num_steps, device)
        velocity = self.random_velocity(batch, generator, device, dtype)
        noise = None
        if (perturb or c.always_perturb) and c.perturbation > 0:
            noise = self.random_velocity(batch, generator, device, dtype, scale=c.perturbation)
        return self.fields_from_velocity(velocity, noise, t, size, span)

    def sample(
        self,
        images: Tensor,
        t: Tensor | int,
        generator: torch.Generator | None = None,
        perturb: bool = False,
    ) -> ForwardSample:
        """Deform ``images`` ``(B, C, *spatial)`` by fresh cumulative fields at ``t``.

        Images are resampled with ``config.image_mode`` (bicubic for the authors) and zero
        padding. Returns ``ForwardSample(images, step, cumulative)``.
        """
        return deform_images(self, images, t, generator, perturb)

    def expected_velocity_std(self) -> float:
        """Std per axis of the velocity ``v`` in control-grid extents (before the smoothing of
        the upsampling, which lowers it): ``v_scale * sqrt(sum_r (g / r)**2)``."""
        c = self.config
        return c.v_scale * math.sqrt(sum((c.grid_size / r) ** 2 for r in c.resolutions))
