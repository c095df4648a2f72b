"""BigAug: nine stacked transformations (Zhang et al. 2020).

Zhang, Wang, Yang, Sanford, Harmon, Turkbey, Wood, Roth, Myronenko, Xu and Xu, "Generalizing
deep learning for medical image segmentation to unseen domains via deep stacked
transformation", IEEE TMI 39:2531-2540 (2020). Each of the nine transforms is applied with
probability 0.5, in this order, with magnitudes drawn uniformly from these ranges:

=======================  ===================================================================
transform                what it does (defaults)
=======================  ===================================================================
sharpness                unsharp masking: ``b = G(s1) * I``, ``I' = b + a (b - G(s2) * b)``,
                         ``s1 ~ U(0.25, 1.5)`` voxels, ``a ~ U(10, 30)``, ``s2 = 0.5`` voxels
blurriness               Gaussian blur, ``sigma ~ U(0.25, 1.5)`` voxels
noise                    additive Gaussian noise, ``std ~ U(0.1, 0.2)`` x the intensity range
brightness               ``I + b``, ``b ~ U(-0.1, 0.1)`` x the intensity range
contrast                 gamma: ``lo + r ((I - lo) / r) ** g``, ``g ~ U(0.5, 4.5)`` (``lo``,
                         ``r``: the current minimum and range)
intensity perturbation   ``I * a + c``, ``a ~ U(0.9, 1.1)``, ``c ~ U(-0.1, 0.1)`` x the range
rotation                 ``U(-20, 20)`` degrees (2D: in-plane; 3D: about each array axis)
scaling                  isotropic zoom ``s ~ U(0.4, 1.6)`` (``s > 1`` magnifies the content)
deformation              elastic (:class:`~drdm.baselines.ElasticSampler`), smoothing sigma
                         ``U(0.07, 0.10)`` and displacement std ``U(0, 0.02)`` x the size
=======================  ===================================================================

Sources: the probability 0.5 and the nine transforms are those of the paper; the ranges of
sharpness (``s1``, ``a``), blurriness, brightness, contrast (gamma), intensity perturbation,
rotation and scaling are those reported for BigAug in public re-implementations citing the
paper (we could not consult its text directly). Our choices, where no value was available:
the second sharpening filter ``s2``, the noise standard deviation (taken relative to the
intensity range, as all intensity magnitudes here, which equals the paper's numbers for
images normalised to [0, 1]), the rotation axes in 3D, and the deformation's smoothing and
magnitude (about 9 to 13 voxels and up to ~2.5 voxels on a 128-voxel grid, similar to the
common elastic augmentation of the time).

The "intensity range" is ``max - min`` of each image and channel, measured on the input
before any transform (1 for a constant image).

Spatial transforms compose into ONE displacement field per image (image and labels are
warped once, consistently): with ``c`` the grid centre, ``Q`` the content rotation, ``s`` the
zoom and ``e`` the elastic field, an output voxel ``x`` samples the input at::

    phi(x) = c + Q^T (x + e(x) - c) / s          ddf(x) = phi(x) - x

(rotation, then scaling, then deformation as image operations). With a voxel ``spacing``
the rotation is a rotation in mm (``Q`` conjugated by the voxel size).

Measured with the defaults (``benchmarks/baselines_benchmark.py``): mean ``|u|`` about 10% of
the image size in 2D and 12% in 3D (mostly from the scaling), no folding in 2D, and a few
folding voxels (from the deformation) in 3 to 6% of 3D fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..config import Config
from ..spatial import identity_grid
from ._common import (
    check_images,
    check_units,
    draw_values,
    field_dtype,
    randn,
    smooth,
    uniform,
)
from .elastic import ElasticSampler

__all__ = ["SPATIAL", "INTENSITY", "TRANSFORMS", "BigAug", "BigAugConfig"]

#: intensity transforms in the order they are applied
INTENSITY = (
    "sharpness",
    "blurriness",
    "noise",
    "brightness",
    "contrast",
    "intensity_perturbation",
)
#: spatial transforms in the order they are applied (as image operations)
SPATIAL = ("rotation", "scaling", "deformation")
TRANSFORMS = INTENSITY + SPATIAL

Pair = tuple[float, float]


@dataclass(frozen=True)
class BigAugConfig(Config):
    """Probabilities and ranges of BigAug (see the module docstring for meaning and sources).

    ``probability`` applies to every transform not named in ``probabilities``
    (``{"rotation": 1.0, ...}``; names in :data:`TRANSFORMS`). Ranges are ``(min, max)`` of
    uniform draws; intensity magnitudes are fractions of the image's intensity range;
    ``deformation_sigma``/``deformation_alpha`` are fractions of the image size.
    """

    probability: float = 0.5
    probabilities: Mapping[str, float] = field(default_factory=dict)
    sharpness_sigma: Pair = (0.25, 1.5)
    sharpness_filter_sigma: float = 0.5
    sharpness_alpha: Pair = (10.0, 30.0)
    blur_sigma: Pair = (0.25, 1.5)
    noise_std: Pair = (0.1, 0.2)
    brightness: Pair = (-0.1, 0.1)
    gamma: Pair = (0.5, 4.5)
    perturbation_scale: Pair = (0.9, 1.1)
    perturbation_shift: Pair = (-0.1, 0.1)
    rotation_deg: Pair = (-20.0, 20.0)
    scaling: Pair = (0.4, 1.6)
    deformation_sigma: Pair = (0.07, 0.10)
    deformation_alpha: Pair = (0.0, 0.02)

    def __post_init__(self) -> None:
        unknown = set(self.probabilities) - set(TRANSFORMS)
        if unknown:
            raise ValueError(f"unknown BigAug transforms {sorted(unknown)}; known: {TRANSFORMS}")
        for p in [self.probability, *self.probabilities.values()]:
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"probabilities must be in [0, 1], got {p}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"{f.name} must be a (min, max) pair, got {value}")
        if self.scaling[0] <= 0 or self.gamma[0] <= 0:
            raise ValueError("scaling and gamma ranges must be positive")

    def prob(self, name: str) -> float:
        """Probability of applying transform ``name``."""
        return float(self.probabilities.get(name, self.probability))


def _rotation_matrix(a: int, b: int, angle: Tensor, ndim: int) -> Tensor:
    """``(B, ndim, ndim)`` rotations by ``angle`` ``(B,)`` in the plane of axes ``a < b``,
    turning axis ``a`` towards axis ``b``."""
    m = torch.eye(ndim, dtype=angle.dtype).repeat(angle.shape[0], 1, 1)
    c, s = angle.cos(), angle.sin()
    m[:, a, a], m[:, b, b] = c, c
    m[:, b, a], m[:, a, b] = s, -s
    return m


def content_rotation(angles: Tensor) -> Tensor:
    """``(B, ndim, ndim)`` content rotations from angles in radians: ``(B, 1)`` in 2D (axis 0
    towards axis 1) or ``(B, 3)`` in 3D, angle ``k`` about array axis ``k``, applied as
    ``Q = Q_0 Q_1 Q_2``."""
    if angles.shape[1] == 1:
        return _rotation_matrix(0, 1, angles[:, 0], 2)
    q0 = _rotation_matrix(1, 2, angles[:, 0], 3)
    q1 = _rotation_matrix(0, 2, angles[:, 1], 3)
    q2 = _rotation_matrix(0, 1, angles[:, 2], 3)
    return q0 @ q1 @ q2


class _Spatial:
    """BigAug's rotation, scaling and deformation as one FieldSampler."""

    def __init__(self, owner: BigAug) -> None:
        self.owner = owner
        self.ndim = owner.ndim

    def __repr__(self) -> str:
        return f"BigAug(ndim={self.ndim}).field_sampler()"

    def sample_ddf(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """``(B, C, *spatial)`` images -> ``(B, ndim, *spatial)`` displacements in voxels."""
        return self.owner.sample_ddf(images, generator)


class _Intensity:
    """BigAug's six intensity transforms as one IntensityTransform."""

    def __init__(self, owner: BigAug) -> None:
        self.owner = owner

    def __repr__(self) -> str:
        return f"BigAug(ndim={self.owner.ndim}).intensity_transform()"

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return self.owner.transform_intensity(images, generator)


class BigAug:
    """BigAug (Zhang et al. 2020): a FieldSampler for its spatial part and an
    IntensityTransform for its appearance part (see the module docstring for the table).

    >>> aug = BigAug(2)
    >>> sampler, intensity = aug.field_sampler(), aug.intensity_transform()

    Args:
        ndim: 2 or 3 spatial axes.
        config: probabilities and ranges (default: the table above).
        spacing: voxel size in mm per axis; rotations are then rotations in mm (otherwise in
            voxel coordinates, fine for isotropic voxels).
        **options: fields of :class:`BigAugConfig` overriding ``config``'s, e.g.
            ``probability=0.0, probabilities={"rotation": 1.0}, rotation_deg=(10, 10)``.

    Every call draws the same amount of random numbers for a given batch shape, whichever
    transforms end up applied.
    """

    def __init__(
        self,
        ndim: int,
        config: BigAugConfig | None = None,
        spacing: Sequence[float] | None = None,
        **options: Any,
    ) -> None:
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        config = config or BigAugConfig()
        if options:
            names = {f.name for f in dataclasses.fields(BigAugConfig)}
            unknown = sorted(set(options) - names)
            if unknown:
                raise TypeError(f"unknown BigAug option(s) {unknown}; known: {sorted(names)}")
            options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
            config = dataclasses.replace(config, **options)
        self.ndim = ndim
        self.config = config
        self.spacing = check_units("voxels", spacing, ndim)
        self._elastic = ElasticSampler(
            ndim, sigma=config.deformation_sigma, alpha=config.deformation_alpha
        )

    def __repr__(self) -> str:
        return f"BigAug(ndim={self.ndim}, config={self.config})"

    def field_sampler(self) -> _Spatial:
        """The spatial part (rotation, scaling, deformation) as one FieldSampler."""
        return _Spatial(self)

    def intensity_transform(self) -> _Intensity:
        """The appearance part (six intensity transforms) as one IntensityTransform."""
        return _Intensity(self)

    # ------------------------------------------------------------------ spatial
    def _apply(self, name: str, batch: int, generator: torch.Generator) -> Tensor:
        """``(B,)`` booleans: whether transform ``name`` applies to each sample."""
        return uniform((batch,), 0.0, 1.0, generator, dtype=torch.float64) < self.config.prob(name)

    def sample_ddf(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """One composed rotation/scaling/deformation field per image, ``(B, ndim, *spatial)``
        in voxels (zero where no spatial transform applies)."""
        check_images(images, self.ndim, "BigAug")
        cfg = self.config
        batch, size = images.shape[0], list(images.shape[2:])
        dtype, device = field_dtype(images), images.device
        f64 = torch.float64
        n_angles = 1 if self.ndim == 2 else 3
        rotate = self._apply("rotation", batch, generator)
        lo, hi = (math.radians(a) for a in cfg.rotation_deg)
        angles = uniform((batch, n_angles), lo, hi, generator, dtype=f64)
        angles = angles * rotate[:, None].to(f64)
        scale_it = self._apply("scaling", batch, generator)
        zoom = uniform((batch,), cfg.scaling[0], cfg.scaling[1], generator, dtype=f64)
        zoom = torch.where(scale_it, zoom, torch.ones_like(zoom))
        deform = self._apply("deformation", batch, generator)
        sigmas = draw_values(self._elastic.sigma, batch, generator)
        alphas = draw_values(self._elastic.alpha, batch, generator)
        noise = randn((batch, self.ndim, *size), generator, device, dtype)

        # sampling matrix: Q^T / s, conjugated by the voxel size for rotations in mm
        matrix = content_rotation(angles).transpose(1, 2) / zoom.view(-1, 1, 1)
        if self.spacing is not None:
            d = torch.tensor(self.spacing, dtype=f64)
            matrix = matrix * d.view(1, 1, -1) / d.view(1, -1, 1)
        nd = self.ndim
        grid = identity_grid(size, device=device, dtype=dtype)
        centre = torch.tensor([(n - 1) / 2.0 for n in size], dtype=dtype, device=device)
        centre = centre.view(nd, *([1] * nd))
        rel = (grid - centre).unsqueeze(0).repeat(batch, *([1] * (nd + 1)))  # x - c
        if bool(deform.any()):
            keep = torch.nonzero(deform).flatten().tolist()
            fields = self._elastic.smooth_noise(
                noise[keep], [sigmas[b] for b in keep], [alphas[b] for b in keep]
            )
            rel[keep] = rel[keep] + fields  # x + e(x) - c
        moved = torch.einsum("bij,bj...->bi...", matrix.to(device, dtype), rel)
        return moved + centre - grid  # phi(x) - x

    # ---------------------------------------------------------------- intensity
    def transform_intensity(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Apply the six intensity transforms (each with its probability) to ``(B, C,
        *spatial)`` floating images; returns a new tensor of the same shape and dtype.

        Works on 2D and 3D images whatever ``ndim`` (so it can follow a 2D sampler applied
        slice by slice, or any other sampler); filters act along every spatial axis."""
        nd = images.dim() - 2
        if nd not in (2, 3):
            raise ValueError(
                f"BigAug: images must be (B, C, *spatial) with 2 or 3 spatial axes, "
                f"got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(f"BigAug intensity transforms need floating images, got {images.dtype}")
        cfg = self.config
        batch = images.shape[0]
        f64 = torch.float64
        draws: dict[str, Tensor] = {name: self._apply(name, batch, generator) for name in INTENSITY}

        def u(bounds: Pair) -> Tensor:
            return uniform((batch,), bounds[0], bounds[1], generator, dtype=f64)

        sharp_sigma, sharp_alpha = u(cfg.sharpness_sigma), u(cfg.sharpness_alpha)
        blur_sigma = u(cfg.blur_sigma)
        noise_std = u(cfg.noise_std)
        noise = randn(tuple(images.shape), generator, images.device, images.dtype)
        bright = u(cfg.brightness)
        gamma = u(cfg.gamma)
        p_scale, p_shift = u(cfg.perturbation_scale), u(cfg.perturbation_shift)

        x = images.clone()
        flat = x.flatten(2)
        span = flat.amax(dim=2) - flat.amin(dim=2)  # (B, C) intensity range of the input
        span = torch.where(span > 0, span, torch.ones_like(span)).view(*span.shape, *[1] * nd)

        def per(values: Tensor) -> Tensor:
            return values.to(images.device, images.dtype).view(batch, 1, *[1] * nd)

        for b in torch.nonzero(draws["sharpness"]).flatten().tolist():
            blurred = smooth(x[b : b + 1], [float(sharp_sigma[b])] * nd)
            twice = smooth(blurred, [cfg.sharpness_filter_sigma] * nd)
            x[b : b + 1] = blurred + float(sharp_alpha[b]) * (blurred - twice)
        for b in torch.nonzero(draws["blurriness"]).flatten().tolist():
            x[b : b + 1] = smooth(x[b : b + 1], [float(blur_sigma[b])] * nd)
        on = per(draws["noise"].to(f64))
        x = x + on * per(noise_std) * span * noise
        on = per(draws["brightness"].to(f64))
        x = x + on * per(bright) * span
        if bool(draws["contrast"].any()):
            flat = x.flatten(2)
            lo = flat.amin(dim=2).view(*span.shape)
            rng = (flat.amax(dim=2).view(*span.shape) - lo).clamp_min(1e-12)
            adjusted = lo + rng * ((x - lo) / rng).clamp(0.0, 1.0) ** per(gamma)
            x = torch.where(per(draws["contrast"].to(f64)) > 0, adjusted, x)
        on = per(draws["intensity_perturbation"].to(f64))
        scale = 1.0 + on * (per(p_scale) - 1.0)
        x = x * scale + on * per(p_shift) * span
        return x
