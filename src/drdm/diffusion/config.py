"""Typed configuration of the forward deformation-diffusion process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..choices import FIELD_IMAGE_MODES, FieldImageMode, check_choice
from ..config import Config


@dataclass(frozen=True)
class ForwardDiffusionConfig(Config):
    """Parameters of the forward process (paper 2.1 and 3.3).

    Attributes:
        ndim: spatial dimensionality of the images, 2 or 3.
        num_steps: ``T``, the number of diffusion steps (80 in the paper).
        num_scales: ``m`` of Eq. 6: the unit DVF sums ``m + 1`` components at the control-grid
            resolution and at 1/2, ..., 1/2**m of it, component ``i`` with std ``2**i * sigma``.
        sigma: std of the finest component ``psi^(0)`` per axis, as a fraction of the image size
            (largest axis). The default makes the forward field's mean magnitude at ``t``
            follow the paper's Table 1 (about 2.4 % of the image size at t = 30, 4.3 % at 70);
            see ``benchmarks/forward_calibration.py``.
        grid_size: control points along the largest axis of the random field (other axes in
            proportion). The field covers ``field_extent`` times the image, so 64 points over
            twice a 256-pixel image is one control point per 8 pixels. The fields are smooth,
            so they are built on this grid and interpolated to the image grid at the end
            with the cubic kernel, separably along each axis; ``None`` uses one control point
            per image voxel (the paper's literal setting, much slower in 3D).
        field_extent: the random field covers this multiple of the image extent and the image's
            part is cropped from its centre (3.3: ``h = 2H``), so no vector stops accumulating
            at the border.
        alpha, beta: the per-step schedule ``n_t = floor(t**alpha / beta)`` (Eq. 9, 3.3).
        cumulative: ``"practical"`` uses ``n_{t:1} = floor(t**power / divisor)`` (3.3);
            ``"theoretical"`` uses Eq. 11, ``floor(t**(alpha+1) / ((alpha+1) beta))``.
        practical_power, practical_divisor: the 1.3 and 1.5 of the practical schedule.
        perturbation: relative std of the independent noise added, when requested (training),
            to the velocity of the cumulative field, so the image is deformed by a field 5 %
            different from the one the target ``psi_t`` is derived from (3.3).
        integration: ``"exp"`` (fast, default): the ``n_{t:1}`` independent unit DVFs are
            summed into one velocity of ``n_{t:1}`` times their variance, integrated by
            scaling and squaring; the step is the ``n_t / n_{t:1}`` share of that flow.
            ``"compose"``: the paper's literal process, composing independent unit DVFs one
            at a time, one sample at a time (the reference for the statistics of the
            cumulative field; see :mod:`drdm.diffusion.forward`).
        squaring_steps: compositions used by scaling and squaring (``2**steps`` sub-steps).
        chunk_voxels: a batch is processed in chunks of about this many image voxels
            (one 128^3 volume, eight 64^3 ones): faster and lighter for large 3D batches. The
            random numbers are drawn chunk by chunk, so fields depend on the batch size.
        image_mode: interpolation of the deformed image, ``"linear"`` or ``"cubic"``.
    """

    ndim: int = 2
    num_steps: int = 80
    num_scales: int = 3
    sigma: float = 4.5e-4
    grid_size: int | None = 64
    field_extent: float = 2.0
    alpha: float = 0.6
    beta: float = 1.0
    cumulative: Literal["practical", "theoretical"] = "practical"
    practical_power: float = 1.3
    practical_divisor: float = 1.5
    perturbation: float = 0.05
    integration: Literal["exp", "compose"] = "exp"
    squaring_steps: int = 5
    chunk_voxels: int = 2**21
    image_mode: FieldImageMode = "linear"

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {self.ndim}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.num_scales < 0:
            raise ValueError(f"num_scales must be >= 0, got {self.num_scales}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if self.grid_size is not None and self.grid_size < 2:
            raise ValueError(f"grid_size must be >= 2 or None, got {self.grid_size}")
        if self.field_extent < 1:
            raise ValueError(f"field_extent must be >= 1, got {self.field_extent}")
        if self.cumulative not in ("practical", "theoretical"):
            raise ValueError(
                f"cumulative must be 'practical' or 'theoretical', got {self.cumulative!r}"
            )
        if self.integration not in ("exp", "compose"):
            raise ValueError(f"integration must be 'exp' or 'compose', got {self.integration!r}")
        if self.squaring_steps < 0:
            raise ValueError(f"squaring_steps must be >= 0, got {self.squaring_steps}")
        if self.chunk_voxels < 1:
            raise ValueError(f"chunk_voxels must be >= 1, got {self.chunk_voxels}")
        if self.perturbation < 0:
            raise ValueError(f"perturbation must be >= 0, got {self.perturbation}")
        check_choice("image_mode", self.image_mode, FIELD_IMAGE_MODES)
