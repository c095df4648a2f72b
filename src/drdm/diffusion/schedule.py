"""Noise schedules of the forward deformation process (paper 2.1.3, 2.1.4 and 3.3)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def step_units(t: Tensor, alpha: float = 0.6, beta: float = 1.0) -> Tensor:
    """``n_t = floor(t**alpha / beta)`` (Eq. 9 with the floor of 3.3): unit DVFs in step ``t``.

    >>> import torch
    >>> step_units(torch.tensor([1, 10, 80]))
    tensor([ 1,  3, 13])
    """
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

    >>> import torch
    >>> cumulative_units(torch.tensor([1, 10, 80]))  # floor(t**1.3 / 1.5)
    tensor([  1,  13, 198])
    """
    tf = t.to(torch.float64)
    if kind == "practical":
        n = torch.floor(tf**power / divisor)
    elif kind == "theoretical":
        n = torch.floor(tf ** (alpha + 1.0) / ((alpha + 1.0) * beta))
    else:
        raise ValueError(f"cumulative schedule must be 'practical' or 'theoretical', got {kind!r}")
    return torch.maximum(n.long(), step_units(t, alpha, beta))


def span_sum(step_size: Callable[[Tensor], Tensor], t: Tensor, span: int) -> Tensor:
    """``n_t + n_{t-1} + ... + n_{t-span+1}``: the size of the last ``span`` steps from ``t``
    down, steps below 1 left out. ``step_size`` maps 1-based timesteps to step sizes ``n_t``
    (a process's ``step_units``); ``t`` of any shape, the result has its shape. Used for the
    step field of several steps (``sample_fields(span=)``) and by the sampler's ``"shares"``
    rule (:func:`drdm.sampling.schedule_share`)."""
    if isinstance(span, bool) or not isinstance(span, int) or span < 1:
        raise ValueError(f"span must be a positive int, got {span!r}")
    t = torch.as_tensor(t)
    steps = t.unsqueeze(-1) - torch.arange(span, device=t.device)
    return (step_size(steps.clamp_min(1)) * (steps >= 1)).sum(-1)


def check_timesteps(
    t: Tensor | int, batch: int, first: int, last: int, device: torch.device
) -> Tensor:
    """One integer timestep per sample as a ``(batch,)`` LongTensor on ``device``.

    An int (or one-element tensor) is shared by the whole batch. Floating-point timesteps, a
    count other than ``batch`` and values outside ``first..last`` raise with a clear message.
    """
    t = torch.as_tensor(t, device=device)
    if t.is_floating_point():
        raise TypeError(f"timesteps must be integers, got {t.dtype}")
    t = t.long().reshape(-1)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(
            f"need one timestep per sample: {batch} timesteps for a batch of {batch}, "
            f"got {t.numel()}"
        )
    if bool(((t < first) | (t > last)).any()):
        raise ValueError(f"timesteps must lie in {first}..{last}, got {t.tolist()}")
    return t
