"""Multi-scale random velocity fields (paper Eq. 6) on a control grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def randn(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """Standard normal noise drawn from ``generator`` (on the generator's device), moved to
    ``device``. A CPU generator therefore gives the same numbers whatever the compute device."""
    gen_device = generator.device if generator is not None else device
    noise = torch.randn(*shape, generator=generator, device=gen_device, dtype=dtype)
    return noise.to(device)


def multiscale_velocity(
    batch: int,
    grid: Sequence[int],
    std: Tensor | Sequence[float],
    num_scales: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """One multi-scale random DVF per sample (Eq. 6).

    ``psi = psi^(0) + up(psi^(1)) + ... + up(psi^(m))`` where ``psi^(i)`` is i.i.d. Gaussian
    on a grid ``2**i`` times coarser with std ``2**i * std`` and ``up`` is linear interpolation
    back to ``grid`` (edge-aligned).

    Args:
        batch: number of independent fields ``B``.
        grid: control-grid shape, ``ndim`` entries.
        std: std of the finest component per axis (``ndim`` values, in control-grid voxels).
        num_scales: ``m``.

    Returns:
        ``(B, ndim, *grid)`` field in control-grid voxels.
    """
    device = torch.device(device)
    ndim = len(grid)
    std_t = torch.as_tensor(std, dtype=dtype, device=device).view(1, ndim, *([1] * ndim))
    mode = "bilinear" if ndim == 2 else "trilinear"
    field = torch.zeros(batch, ndim, *grid, device=device, dtype=dtype)
    for level in range(num_scales + 1):
        coarse = [max(2, math.ceil(g / 2**level)) for g in grid]
        noise = randn((batch, ndim, *coarse), generator, device, dtype) * (2.0**level)
        if level > 0:
            noise = F.interpolate(noise, size=tuple(grid), mode=mode, align_corners=False)
        field = field + noise
    return field * std_t
