"""The forward deformation-diffusion process (paper 2.1, Eq. 2, 6, 7, 9-11, and 3.3).

The process knows nothing of the network. For a batch of images and one timestep per sample
it returns the deformed images ``I_t = phi_{t:1}(I_0)``, the step field ``psi_t`` and the
cumulative field ``phi_{t:1} = psi_t o phi_{t-1:1}`` (Eq. 2), all on the image grid in voxels.

How it is computed (``integration="exp"``, the default):

* A unit DVF is a multi-scale Gaussian field (Eq. 6) on a control grid covering
  ``field_extent`` times the image (3.3).
* ``phi_{t:1}`` is made of ``n_{t:1}`` unit DVFs (Eq. 10 with the practical ``n_{t:1}`` of
  3.3). Independent unit DVFs add their variances (Eq. 7, 10), so instead of composing
  ``n_{t:1}`` of them one at a time the process draws one velocity ``V`` with the same spatial
  covariance and ``n_{t:1}`` times the variance (``sqrt(n_{t:1})`` times a unit field) and
  integrates it by scaling and squaring: ``phi_{t:1} = exp(V)``. Its magnitude and fold
  statistics match the step-by-step composition (``tests/diffusion/test_diffusion.py``,
  ``benchmarks/forward_benchmark.py``) and it is diffeomorphic by construction.
* The step is the last ``n_t`` of those ``n_{t:1}`` units *along the same flow*:
  ``psi_t = exp(n_t / n_{t:1} * V)``, so ``phi_{t:1} = psi_t o phi_{t-1:1}`` with
  ``phi_{t-1:1} = exp((1 - n_t / n_{t:1}) V)``. This is the part of the step that can be
  recovered from ``I_t``: were ``psi_t`` an independent field, only its conditional mean given
  ``phi_{t:1}`` (this same ``n_t / n_{t:1}`` share) would be predictable and the rest would be
  irreducible noise in the training loss. (The step's variance is therefore
  ``n_t**2 / n_{t:1}`` units rather than Eq. 7's ``n_t``; the authors' implementation also
  derives both fields from one velocity per sample.)
* With ``perturb=True`` (training) ``phi_{t:1}`` is integrated from ``V`` plus
  ``perturbation`` (5 %) of independent noise of the same kind, so the image is not deformed
  by exactly the field the target was derived from (3.3).
* Finally the fields are cropped from the centre of the control grid and interpolated to the
  image grid (cubic, separably), and converted to image voxels.

``integration="compose"`` runs the paper's process literally (independent unit DVFs composed
one at a time, one sample at a time; ``psi_t`` made of the last ``n_t`` of them). It is the
reference for the statistics of ``phi_{t:1}`` in tests and benchmarks; its ``psi_t`` is
independent of the rest of ``phi_{t:1}`` and is not meant for training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from ..spatial import compose, integrate, resample_separable, warp
from .config import ForwardDiffusionConfig
from .random_field import multiscale_velocity
from .schedule import check_timesteps, cumulative_units, span_sum, step_units


class ForwardFields(NamedTuple):
    """Random fields of one forward draw, on the image grid in voxels.

    ``step``: ``psi_t``, ``(B, ndim, *spatial)``; ``cumulative``: ``phi_{t:1}``, same shape.
    """

    step: Tensor
    cumulative: Tensor


class ForwardProcess(Protocol):
    """What the package needs of a forward process: :class:`ForwardDiffusion` or the
    authors' preset :class:`~drdm.diffusion.official_process.OfficialForwardProcess`.
    ``config`` has at least ``ndim``, ``num_steps`` and ``image_mode``; ``preset`` names the
    process in model cards (:mod:`drdm.card`)."""

    preset: str
    config: Any

    def step_units(self, t: Tensor) -> Tensor:
        """The size of step ``t`` (``n_t``), e.g. for the sampler's ``"shares"`` skip rule."""
        ...

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
        """``psi_t`` and ``phi_{t:1}``, ``(B, ndim, *size)`` voxels."""
        ...


class ForwardSample(NamedTuple):
    """Output of :meth:`ForwardDiffusion.sample`.

    ``images``: ``I_t = warp(I_0, phi_{t:1})``, ``(B, C, *spatial)``;
    ``step``: ``psi_t``; ``cumulative``: ``phi_{t:1}``; both ``(B, ndim, *spatial)`` voxels.
    """

    images: Tensor
    step: Tensor
    cumulative: Tensor


def deform_images(
    process: ForwardProcess,
    images: Tensor,
    t: Tensor | int,
    generator: torch.Generator | None,
    perturb: bool,
    chunk_voxels: int | None = None,
) -> ForwardSample:
    """Draw fields with ``process.sample_fields`` and deform ``images`` ``(B, C, *spatial)`` by
    the cumulative field (zero padding, ``process.config.image_mode``), in chunks of about
    ``chunk_voxels`` voxels. Shared by every forward process of the package."""
    config = process.config
    if images.dim() != config.ndim + 2:
        raise ValueError(
            f"images must be (B, C, *spatial) with {config.ndim} spatial axes, "
            f"got shape {tuple(images.shape)}"
        )
    fields = process.sample_fields(
        images.shape[2:], t, generator, perturb, images.shape[0], images.device, images.dtype
    )
    per_chunk = images.shape[0]
    if chunk_voxels is not None:
        per_chunk = max(1, chunk_voxels // math.prod(images.shape[2:]))
    deformed = torch.cat(
        [
            warp(part, field, mode=config.image_mode, padding="zeros")
            for part, field in zip(
                images.split(per_chunk), fields.cumulative.split(per_chunk), strict=True
            )
        ]
    )
    return ForwardSample(deformed, fields.step, fields.cumulative)


class ForwardDiffusion:
    """The forward deformation-diffusion process. See the module docstring."""

    preset = "drdm"

    def __init__(self, config: ForwardDiffusionConfig | None = None) -> None:
        self.config = config or ForwardDiffusionConfig()

    # ----------------------------------------------------------------- schedules
    def step_units(self, t: Tensor) -> Tensor:
        """``n_t`` for a tensor of 1-based timesteps."""
        c = self.config
        return step_units(t, c.alpha, c.beta)

    def cumulative_units(self, t: Tensor) -> Tensor:
        """``n_{t:1}`` for a tensor of 1-based timesteps."""
        c = self.config
        return cumulative_units(
            t, c.alpha, c.beta, c.cumulative, c.practical_power, c.practical_divisor
        )

    # ----------------------------------------------------------------- geometry
    def control_grid(self, size: Sequence[int]) -> tuple[list[int], list[float]]:
        """Control-grid shape for an image of ``size`` voxels and its spacing in image voxels."""
        c = self.config
        biggest = max(size)
        full = [max(2, round(c.field_extent * s)) for s in size]
        if c.grid_size is None:
            grid = full
        else:  # never finer than one control point per image voxel
            grid = [
                min(f, max(2, round(c.grid_size * s / biggest)))
                for f, s in zip(full, size, strict=True)
            ]
        spacing = [c.field_extent * s / g for s, g in zip(size, grid, strict=True)]
        return grid, spacing

    def _to_image_grid(
        self, field: Tensor, size: Sequence[int], spacing: Sequence[float]
    ) -> Tensor:
        """Crop the image's centre part of a control-grid field and express it in image voxels.

        Interpolated with the cubic kernel, separably along each axis, so the field (and its
        Jacobian) is smooth across control-grid cells.
        """
        c = self.config
        positions = []
        for s, h in zip(size, spacing, strict=True):
            x = torch.arange(s, device=field.device, dtype=field.dtype)
            # image voxel centre x (edge at 0) sits at (x + 0.5 + offset) / spacing - 0.5
            positions.append((x + 0.5 + (c.field_extent - 1.0) * s / 2.0) / h - 0.5)
        out = resample_separable(field, positions, mode="cubic")
        step = field.new_tensor(list(spacing)).view(1, len(size), *([1] * len(size)))
        return out * step

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
        """Draw ``psi_t`` and ``phi_{t:1}`` for an image grid of ``size`` (``ndim`` entries).

        ``t``: one 1-based timestep per sample (``(B,)``) or an int shared by ``batch`` samples.
        ``span``: with ``span = s > 1`` the step field is ``psi_{t:t-s+1}``, the last ``s``
        steps together (``psi_t o ... o psi_{t-s+1}``, clipped at step 1): the units
        ``n_t + ... + n_{t-s+1}`` of the same flow (at most all of ``phi_{t:1}``). It is what a
        sampler that skips ``s - 1`` network calls must recover from ``I_t`` in one call
        (``benchmarks/sampler_schedule.py``). Returns fields of shape ``(B, ndim, *size)`` in
        voxels.
        """
        size = [int(s) for s in size]
        if len(size) != self.config.ndim:
            raise ValueError(f"expected a {self.config.ndim}D size, got {size}")
        device = torch.device(device)
        if batch is None:
            batch = torch.as_tensor(t).numel()
        t = check_timesteps(t, batch, 1, self.config.num_steps, device)
        grid, spacing = self.control_grid(size)
        steps, cumulatives = [], []
        for chunk in self._chunks(t, size):
            if self.config.integration == "compose":
                step, cumulative = self._fields_by_composition(
                    chunk, grid, spacing, size, generator, perturb, device, dtype, span
                )
            else:
                step, cumulative = self._fields_by_exponential(
                    chunk, grid, spacing, size, generator, perturb, device, dtype, span
                )
            both = self._to_image_grid(torch.cat([step, cumulative]), size, spacing)
            steps.append(both[: len(chunk)])
            cumulatives.append(both[len(chunk) :])
        return ForwardFields(step=torch.cat(steps), cumulative=torch.cat(cumulatives))

    def _chunks(self, t: Tensor, size: Sequence[int]) -> list[Tensor]:
        """Split a batch so one chunk holds about ``chunk_voxels`` image voxels: large 3D
        batches run faster (memory traffic) and use less memory one or a few at a time."""
        per_chunk = max(1, self.config.chunk_voxels // math.prod(size))
        return list(t.split(per_chunk))

    def sample(
        self,
        images: Tensor,
        t: Tensor | int,
        generator: torch.Generator | None = None,
        perturb: bool = False,
    ) -> ForwardSample:
        """Deform a batch of images to random timesteps (Algorithm 1, lines 4-6).

        Args:
            images: ``I_0``, ``(B, C, *spatial)`` floating point.
            t: ``(B,)`` 1-based timesteps in ``1..T`` (or one int for all samples).
            generator: source of randomness; the same seed gives the same fields bit for bit
                on the CPU.
            perturb: add the training perturbation to the step inside ``phi_{t:1}``.
        """
        return deform_images(self, images, t, generator, perturb, self.config.chunk_voxels)

    # ----------------------------------------------------------------- internals
    def _unit_std(self, spacing: Sequence[float], size: Sequence[int]) -> list[float]:
        sigma_voxels = self.config.sigma * max(size)
        return [sigma_voxels / s for s in spacing]

    def span_units(self, t: Tensor, span: int = 1) -> Tensor:
        """``n_t + n_{t-1} + ... + n_{t-span+1}`` (steps below 1 left out), at most
        ``n_{t:1}``: the units of the last ``span`` steps of ``phi_{t:1}``."""
        return torch.minimum(span_sum(self.step_units, t, span), self.cumulative_units(t))

    def _fields_by_exponential(
        self,
        t: Tensor,
        grid: list[int],
        spacing: list[float],
        size: list[int],
        generator: torch.Generator | None,
        perturb: bool,
        device: torch.device,
        dtype: torch.dtype,
        span: int = 1,
    ) -> tuple[Tensor, Tensor]:
        """One velocity per sample: ``phi = exp(V)``, ``psi = exp(n_t / n_{t:1} * V)``."""
        c = self.config
        batch = t.numel()
        std = self._unit_std(spacing, size)
        n_step = self.span_units(t, span).to(device, dtype)
        n_total = self.cumulative_units(t).to(device, dtype)
        view = (batch, *([1] * (len(grid) + 1)))
        k = 2 if perturb else 1
        units = multiscale_velocity(k * batch, grid, std, c.num_scales, generator, device, dtype)
        velocity = units[:batch] * n_total.sqrt().view(view)  # Eq. 10: variance n_{t:1} sigma^2
        applied = velocity
        if perturb:
            applied = velocity + c.perturbation * n_total.sqrt().view(view) * units[batch:]
        step = velocity * (n_step / n_total).view(view)
        ddfs = integrate(torch.cat([step, applied]), steps=c.squaring_steps)
        return ddfs[:batch], ddfs[batch:]

    def _fields_by_composition(
        self,
        t: Tensor,
        grid: list[int],
        spacing: list[float],
        size: list[int],
        generator: torch.Generator | None,
        perturb: bool,
        device: torch.device,
        dtype: torch.dtype,
        span: int = 1,
    ) -> tuple[Tensor, Tensor]:
        """The literal process: unit DVFs composed one at a time, one sample at a time."""
        c = self.config
        std = self._unit_std(spacing, size)
        steps, cumulatives = [], []
        for n_step, n_total in zip(
            self.span_units(t, span).tolist(), self.cumulative_units(t).tolist(), strict=True
        ):
            step = torch.zeros(1, len(grid), *grid, device=device, dtype=dtype)
            applied = step
            for _ in range(n_step):  # psi_t
                unit = self._unit(grid, std, generator, device, dtype)
                step = compose(step, unit)
                if perturb:
                    unit = unit + c.perturbation * self._unit(grid, std, generator, device, dtype)
                applied = compose(applied, unit)
            cumulative = applied
            for _ in range(n_total - n_step):  # then psi_{t-1}, ..., psi_1
                cumulative = compose(cumulative, self._unit(grid, std, generator, device, dtype))
            steps.append(step)
            cumulatives.append(cumulative)
        return torch.cat(steps), torch.cat(cumulatives)

    def _unit(
        self,
        grid: list[int],
        std: list[float],
        generator: torch.Generator | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> Tensor:
        return multiscale_velocity(1, grid, std, self.config.num_scales, generator, device, dtype)
