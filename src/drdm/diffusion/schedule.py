"""Noise schedules of the forward deformation process (paper 2.1.3, 2.1.4 and 3.3)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def step_units(t: Tensor, alpha: float = 0.6, beta: float = 1.0) -> Tensor:
    """``n_t = floor(t**alpha / beta)`` (Eq. 9 with the floor of 3.3): unit DVFs in step ``t``."""
    return torch.floor(t.to(torch.float64) ** alpha / beta).long()


def cumulative_units(
    t: Tensor,
    alpha: float = 0.6,
    beta: float = 1.0,
    kind: str = "practical",
    power: float = 1.3,
    divisor: float = 1.5,
) -> Tensor:
    """Unit DVFs composed into ``phi_{t:1}``.

    ``"practical"``: ``floor(t**power / divisor)``, the paper's setting ``floor(t**1.3 / 1.5)``
    (3.3). ``"theoretical"``: Eq. 11, ``floor(t**(alpha+1) / ((alpha+1) * beta))``. The result is
    never below :func:`step_units` so that ``phi_{t:1}`` always contains the step ``psi_t``.
    """
    tf = t.to(torch.float64)
    if kind == "practical":
        n = torch.floor(tf**power / divisor)
    elif kind == "theoretical":
        n = torch.floor(tf ** (alpha + 1.0) / ((alpha + 1.0) * beta))
    else:
        raise ValueError(f"cumulative schedule must be 'practical' or 'theoretical', got {kind!r}")
    return torch.maximum(n.long(), step_units(t, alpha, beta))


def scale_variance_factor(num_scales: int) -> float:
    """``(4**(m+1) - 1) / 3`` of Eq. 7: variance of one multi-scale DVF in units of sigma**2."""
    return (4 ** (num_scales + 1) - 1) / 3


def expected_std(units: int, sigma: float, num_scales: int) -> float:
    """Eq. 7/10 prediction of the per-component displacement std after ``units`` unit DVFs."""
    return sigma * math.sqrt(scale_variance_factor(num_scales) * units)
