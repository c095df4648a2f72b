"""Plain random elastic deformation: Gaussian-smoothed i.i.d. random displacements."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import (
    Units,
    check_images,
    check_units,
    draw_values,
    field_dtype,
    randn,
    smooth,
    smoothing_gain,
    to_voxels,
)

__all__ = ["ElasticSampler"]

Range = float | tuple[float, float]


def _range(value: Range, name: str, minimum: float) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
    lo, hi = float(lo), float(hi)
    if not minimum <= lo <= hi:
        raise ValueError(f"{name} must be a value or a (min, max) range >= {minimum}, got {value}")
    return lo, hi


class ElasticSampler:
    """Random elastic deformations, the most common spatial augmentation (a FieldSampler).

    Every component of the displacement is i.i.d. standard normal noise on the image grid,
    smoothed by a separable Gaussian of standard deviation ``sigma`` and rescaled so that its
    standard deviation is ``alpha`` (the white-noise gain of the kernel is divided out, so
    ``alpha`` does not depend on ``sigma`` or on the dimensionality)::

        u_i = alpha_i * (G_sigma * n_i) / std(G_sigma * n_i),   n_i ~ N(0, 1) per voxel

    The largest ``|u|`` over an image is typically 3 to 4 times ``alpha`` (per component).

    Args:
        ndim: 2 or 3 spatial axes.
        sigma: smoothing length, a value or a ``(min, max)`` range drawn uniformly per sample.
            Default 0.1 of the image size (per axis), i.e. smooth, organ-scale deformations.
        alpha: standard deviation of each displacement component, a value or a ``(min, max)``
            range drawn per sample. Default 0.015 of the size: mean ``|u|`` about 2% of the
            image size and maximum about 6.5% in 2D (3% and 10.5% in 3D); no folding measured.
        units: ``"relative"`` (fractions of the per-axis image size, the default), ``"voxels"``
            or ``"mm"`` (needs ``spacing``).
        spacing: voxel size in mm per axis (for ``units="mm"``).
    """

    def __init__(
        self,
        ndim: int,
        sigma: Range = 0.1,
        alpha: Range = 0.015,
        units: Units = "relative",
        spacing: Sequence[float] | None = None,
    ) -> None:
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        self.ndim = ndim
        self.sigma = _range(sigma, "sigma", 1e-6)
        self.alpha = _range(alpha, "alpha", 0.0)
        self.units = units
        self.spacing = check_units(units, spacing, ndim)

    def __repr__(self) -> str:
        return (
            f"ElasticSampler(ndim={self.ndim}, sigma={self.sigma}, alpha={self.alpha}, "
            f"units={self.units!r})"
        )

    def sample_ddf(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """``(B, C, *spatial)`` images -> ``(B, ndim, *spatial)`` displacements in voxels."""
        check_images(images, self.ndim, "ElasticSampler")
        batch, size = images.shape[0], list(images.shape[2:])
        dtype = field_dtype(images)
        sigmas = draw_values(self.sigma, batch, generator)
        alphas = draw_values(self.alpha, batch, generator)
        noise = randn((batch, self.ndim, *size), generator, images.device, dtype)
        return self.smooth_noise(noise, sigmas, alphas)

    def smooth_noise(
        self, noise: Tensor, sigmas: Sequence[float], alphas: Sequence[float]
    ) -> Tensor:
        """Turn white noise ``(B, ndim, *spatial)`` into fields: sample ``b`` smoothed with
        ``sigmas[b]`` and scaled to standard deviation ``alphas[b]`` (both in ``units``)."""
        size = list(noise.shape[2:])
        shape = (1, self.ndim, *([1] * self.ndim))
        out = []
        same = len(set(sigmas)) == 1 and len(set(alphas)) == 1
        groups = [(0, noise.shape[0])] if same else [(b, b + 1) for b in range(noise.shape[0])]
        for start, stop in groups:
            sig = to_voxels(sigmas[start], size, self.units, self.spacing)
            amp = to_voxels(alphas[start], size, self.units, self.spacing)
            field = smooth(noise[start:stop], sig) / smoothing_gain(sig)
            out.append(field * noise.new_tensor(amp).view(shape))
        return torch.cat(out)
