"""The deformation-recovery loop (paper Algorithm 2): a forward process plus a network.

No I/O and no resizing here: :func:`recover` works on the network's grid. The user-facing
pipeline (any input size, several samples per image, checkpoints) is :class:`drdm.DRDM`.

Conventions (as in :mod:`drdm.spatial`): images ``(B, C, *S)``, displacement fields
``(B, ndim, *S)`` in voxels, pull-back warping ``warp(I, u)(x) = I(x + u(x))`` and
``compose(a, b)[x] = b[x + a[x]] + a[x]`` (Eq. 5), so ``warp(I, compose(a, b))`` is
``warp(warp(I, b), a)``: ``b`` is applied to the image first, ``a`` after it.

Algorithm 2, for a deformation level ``T'``::

    phi   <- phi_{T':1}, a random field of the forward process at t = T'      (lines 3-4)
    I_hat <- warp(I_0, phi)                                                    (lines 5-6)
    for t = T', ..., 1:
        psi_hat <- D_theta(I_hat, t)                                           (line 8, Eq. 12)
        phi     <- compose(psi_hat, phi)      # psi_hat o phi, Eq. 1            (line 9)
        I_hat   <- warp(I_0, phi)             # the ORIGINAL image, Eq. 4       (line 10)
    return phi

The new step is applied after the accumulated deformation
(``warp(I_0, compose(psi_hat, phi)) = warp(warp(I_0, phi), psi_hat)``) and every image is
one resampling of the original, never a re-warp of a warped image (2.2.1).

**Fewer network calls** (:class:`SamplerConfig` ``stride``, ``schedule``, ``recursions``). The
network is the whole cost of the loop, so the sampler can call it on a subset of the
timesteps only: ``stride = s`` calls it at ``t = T', T' - s, T' - 2s, ...``; an explicit
``schedule`` lists the timesteps. A call at ``t_j`` stands for the ``n_j = t_j - t_{j+1}``
timesteps down to the next call (``t_{J+1} = 0``), and its prediction is used for all of
them (``skip``):

* ``"compose"``: ``psi_hat_t`` composed with itself ``n_j`` times (Eq. 5), exactly what the
  full loop would do if the network predicted the same field at each skipped step;
* ``"velocity"``: ``psi_hat_t`` read as a stationary velocity and ``n_j * psi_hat_t``
  integrated by scaling and squaring;
* ``"shares"`` (default): like ``"velocity"``, but weighted by the forward schedule: the
  skipped steps are smaller than step ``t_j`` (``n_t`` grows with ``t``, Eq. 9), so the
  prediction is integrated ``r_j = (n_{t_j} + ... + n_{t_{j+1}+1}) / n_{t_j}`` times. The
  forward process draws all steps of a sample along one flow
  (``psi_t = exp(n_t / n_{t:1} V)``), so a network that inverts step ``t`` exactly inverts
  the ``n_j`` steps exactly under this rule.

``stride = 1`` is Algorithm 2 literally. The network's internal recursion ``K`` (Eq. 12) can
be lowered at sampling with ``recursions``. What each choice costs and changes is measured by
``benchmarks/sampler_schedule.py`` (README, *Speed*).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor

from .choices import (
    COMPOSE_PADDINGS,
    FIELD_IMAGE_MODES,
    ComposePadding,
    FieldImageMode,
    check_choice,
)
from .config import Config
from .diffusion.forward import ForwardProcess
from .diffusion.schedule import span_sum
from .spatial import compose, integrate, warp

__all__ = [
    "DEFAULT_SKIP",
    "DEFAULT_STRIDE",
    "ForwardProcess",
    "RecoveryResult",
    "SamplerConfig",
    "network_schedule",
    "official_sampler_config",
    "recover",
    "repeat_step",
    "schedule_share",
]

SkipRule = Literal["compose", "velocity", "shares"]
SKIP_RULES: tuple[str, ...] = get_args(SkipRule)

#: the default network-call stride and skip rule: the network at every 4th timestep, each
#: prediction integrated by the schedule's size of the 4 steps it stands for ("shares").
#: Chosen with ``benchmarks/sampler_schedule.py`` (README, *Speed*): 4x fewer network passes
#: than Algorithm 2 run literally; against the full sampler, the unrecovered fraction of the
#: authors' checkpoint (which recovers) stays within about 10 % and the packaged model's
#: Table-1 magnitudes within 6 %, without folds. Composing the prediction 4 times instead
#: over-recovers (U up to 20 % worse) because later steps are smaller (Eq. 9).
DEFAULT_STRIDE = 4
DEFAULT_SKIP: SkipRule = "shares"


@dataclass(frozen=True)
class SamplerConfig(Config):
    """Numerical choices of the recovery loop (stored in checkpoints under ``extra.sampler``).

    Attributes:
        compose_padding: padding of the accumulated field when a new step is composed into it
            (``phi <- compose(psi_hat, phi)`` samples ``phi`` at ``x + psi_hat(x)``):
            ``"border"`` (ours) or ``"zeros"`` (the authors' recovery loop).
        image_mode: interpolation of the images warped by the accumulated field: ``"linear"``
            (ours) or ``"cubic"`` (the authors' bicubic).
        image_padding: value outside the image when warping: ``"zeros"`` (both).
        stride: call the network every ``stride``-th timestep (``T', T' - stride, ...``);
            1 is the literal Algorithm 2; default :data:`DEFAULT_STRIDE` (4). Ignored when
            ``schedule`` is given.
        schedule: explicit timesteps at which the network is called, strictly decreasing; the
            first must be ``T'`` (levels below it are cut); ``None`` uses ``stride``.
        skip: how a call's prediction stands for the timesteps it skips: ``"shares"``
            (default), ``"compose"`` or ``"velocity"`` (module docstring).
        recursions: ``K`` of Eq. 12 at sampling; ``None`` keeps the network's own.
    """

    compose_padding: ComposePadding = "border"
    image_mode: FieldImageMode = "linear"
    image_padding: ComposePadding = "zeros"
    stride: int = DEFAULT_STRIDE
    schedule: tuple[int, ...] | None = None
    skip: SkipRule = DEFAULT_SKIP
    recursions: int | None = None

    def __post_init__(self) -> None:
        check_choice("compose_padding", self.compose_padding, COMPOSE_PADDINGS)
        check_choice("image_mode", self.image_mode, FIELD_IMAGE_MODES)
        check_choice("image_padding", self.image_padding, COMPOSE_PADDINGS)
        check_choice("skip", self.skip, SKIP_RULES)
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"stride must be a positive int, got {self.stride!r}")
        if self.recursions is not None and (
            isinstance(self.recursions, bool)
            or not isinstance(self.recursions, int)
            or self.recursions < 1
        ):
            raise ValueError(f"recursions must be a positive int or None, got {self.recursions!r}")
        if self.schedule is not None:
            steps = tuple(_as_level(t) for t in self.schedule)
            decreasing = all(a > b for a, b in zip(steps, steps[1:], strict=False))
            if not steps or min(steps) < 1 or not decreasing:
                raise ValueError(
                    f"schedule must be strictly decreasing timesteps >= 1, got {list(steps)}"
                )
            object.__setattr__(self, "schedule", steps)


def official_sampler_config() -> SamplerConfig:
    """The authors' recovery loop: zero padding when composing, bicubic zero-padded images."""
    return SamplerConfig(compose_padding="zeros", image_mode="cubic", image_padding="zeros")


class RecoveryResult(NamedTuple):
    """Output of :func:`recover`, all on the network's grid ``S``.

    Attributes:
        ddf: the generated field ``phi = psi_hat_1 o ... o psi_hat_T' o phi_{T':1}``,
            ``(B, ndim, *S)`` voxels.
        images: ``warp(images, ddf)``, the recovered images ``I_hat_0``, ``(B, C, *S)``.
        initial_ddf: the random field ``phi_{T':1}`` the recovery started from.
        trajectory_images: ``None`` unless requested; else ``(J + 1, B, C, *S)`` for ``J``
            network calls (``J = T'`` at stride 1), where entry ``j`` is the image after ``j``
            calls: entry 0 the randomly deformed image ``I_{T'}``, at stride 1 entry ``k`` is
            ``I_hat_{T' - k}``, the last entry ``images``.
        trajectory_ddfs: likewise ``(J + 1, B, ndim, *S)``: the accumulated field after each
            call (entry 0 is ``initial_ddf``, the last ``ddf``).
    """

    ddf: Tensor
    images: Tensor
    initial_ddf: Tensor
    trajectory_images: Tensor | None = None
    trajectory_ddfs: Tensor | None = None


def _as_level(level: object) -> int:
    """An integral level (int, NumPy or 0-d integer tensor); bools and floats are rejected."""
    if isinstance(level, Tensor):
        if level.numel() != 1 or level.is_floating_point() or level.dtype == torch.bool:
            raise TypeError(
                f"level must be an integer, got a {level.dtype} tensor {tuple(level.shape)}"
            )
        return int(level.item())
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(f"level must be an integer, got {level!r}")
    return int(level)


def network_schedule(
    level: int, stride: int = 1, schedule: Sequence[int] | None = None
) -> list[tuple[int, int]]:
    """The network calls of a recovery from ``level``: ``(t_j, n_j)`` pairs.

    ``t_j`` is the timestep the network sees, ``n_j = t_j - t_{j+1}`` the number of timesteps
    its prediction stands for (``t_{J+1} = 0``), so the ``n_j`` add up to ``level``.
    ``stride = s``: ``t_j = level - j * s``. ``schedule``: explicit decreasing timesteps; those
    above ``level`` are dropped and ``level`` itself is always the first call.

    >>> network_schedule(10, stride=4)
    [(10, 4), (6, 4), (2, 2)]
    >>> network_schedule(10, schedule=[20, 10, 5, 1])
    [(10, 5), (5, 4), (1, 1)]
    """
    level = _as_level(level)
    if level < 1:
        raise ValueError(f"level must be >= 1, got {level}")
    if schedule is None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        calls = list(range(level, 0, -stride))
    else:
        below = sorted({_as_level(t) for t in schedule if 1 <= _as_level(t) < level}, reverse=True)
        calls = [level, *below]
    ends = [*calls[1:], 0]
    return [(t, t - e) for t, e in zip(calls, ends, strict=True)]


def repeat_step(
    psi: Tensor,
    count: int,
    skip: SkipRule = "compose",
    padding: ComposePadding = "border",
    weight: float | Tensor | None = None,
) -> Tensor:
    """The field one network prediction ``psi`` stands for over ``count`` timesteps.

    ``psi``: ``(B, ndim, *S)`` voxels. ``skip="compose"``: ``psi o psi o ... o psi``
    (``count`` times, Eq. 5); ``"velocity"``: ``exp(count * psi)`` by scaling and squaring;
    ``"shares"``: ``exp(weight * psi)``, ``weight`` (a number or one per sample, ``(B,)``) the
    skipped steps' size in units of the called step (:func:`schedule_share`; required for this
    rule). ``count = 1`` returns ``psi``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if count == 1:
        return psi
    if skip in ("velocity", "shares"):  # exp(w * psi): w = count, or the schedule's share
        w = torch.as_tensor(count if skip == "velocity" else weight, dtype=psi.dtype)
        if skip == "shares" and (weight is None or not bool((w > 0).all())):
            raise ValueError(f"the 'shares' rule needs a positive weight, got {weight!r}")
        w = w.to(psi.device).reshape(-1, *([1] * (psi.dim() - 1)))
        return integrate(psi * w, padding=padding)
    out = psi
    for _ in range(count - 1):
        # psi o psi o ... : resample the small step at x + out(x), never the accumulated field
        out = compose(out, psi, padding=padding)  # type: ignore[arg-type]
    return out


def schedule_share(process: ForwardProcess, t: Tensor | int, count: int) -> Tensor:
    """``(n_t + ... + n_{t-count+1}) / n_t``: the size of the ``count`` steps from ``t`` down
    in units of step ``t`` (the ``"shares"`` rule); ``t`` an int or ``(B,)``, float64 result
    of the same shape."""
    t = torch.as_tensor(t)
    total = span_sum(process.step_units, t, count).to(torch.float64)
    return total / process.step_units(t.clamp_min(1)).to(torch.float64).clamp_min(1)


def _progress(iterable: Sequence[Any], enabled: bool, desc: str) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="step", leave=False)


def recover(
    network: torch.nn.Module,
    process: ForwardProcess,
    images: Tensor,
    level: int,
    generator: torch.Generator | None = None,
    *,
    config: SamplerConfig | None = None,
    initial_ddf: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> RecoveryResult:
    """Run Algorithm 2 on a batch of images on the network's grid, one field per image.

    Args:
        network: ``D_theta``; called as ``network(image, t)`` with ``image`` ``(B, C, *S)`` and
            ``t`` a LongTensor ``(B,)`` of 1-based timesteps, returning ``psi_hat_t``
            ``(B, ndim, *S)`` in voxels (e.g. :class:`drdm.nn.RecursiveUNet`).
        process: the forward process; ``process.sample_fields(S, level, ...)`` supplies the
            random ``phi_{T':1}`` (``.cumulative``).
        images: ``I_0``, ``(B, C, *S)`` floating point, ``S`` a grid the network accepts.
        level: ``T'`` in ``1..process.config.num_steps``; the network sees ``t = T', ..., 1``.
        generator: the only source of randomness (the random field); same seed, same result
            bit for bit on the CPU.
        config: padding and interpolation choices (:class:`SamplerConfig`).
        initial_ddf: use this ``(B, ndim, *S)`` field as ``phi_{T':1}`` instead of drawing one
            (the ``generator`` is then unused).
        return_trajectory: also return every intermediate image and field (memory:
            ``T' + 1`` copies of both).
        progress: show a tqdm progress bar over the network calls.

    Runs under ``torch.inference_mode`` on the device and dtype of ``images``; the network
    must be there too. Batched: one network call per scheduled timestep for the whole batch
    (``config.stride`` / ``config.schedule``; a call's prediction stands for the timesteps it
    skips, ``config.skip``). With ``return_trajectory`` the trajectory has one entry per
    network call (plus the start), ``T' + 1`` entries at ``stride = 1``.
    """
    config = config or SamplerConfig()
    ndim = process.config.ndim
    num_steps = process.config.num_steps
    level = _as_level(level)
    if not 1 <= level <= num_steps:
        raise ValueError(f"level must lie in 1..{num_steps}, got {level}")
    if images.dim() != ndim + 2:
        raise ValueError(
            f"images must be (B, C, *spatial) with {ndim} spatial axes, got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point, got {images.dtype}")
    batch, size = images.shape[0], tuple(images.shape[2:])
    mode, pad = config.image_mode, config.image_padding
    with torch.inference_mode():
        if initial_ddf is None:
            phi = process.sample_fields(
                size, level, generator, batch=batch, device=images.device, dtype=images.dtype
            ).cumulative
        else:
            if initial_ddf.shape != (batch, ndim, *size):
                raise ValueError(
                    f"initial_ddf must have shape {(batch, ndim, *size)}, "
                    f"got {tuple(initial_ddf.shape)}"
                )
            phi = initial_ddf.to(images.device, images.dtype)
        start = phi
        current = warp(images, phi, mode=mode, padding=pad)  # I_{T'} (Alg. 2, lines 5-6)
        traj_images = [current] if return_trajectory else None
        traj_ddfs = [phi] if return_trajectory else None
        calls = network_schedule(level, config.stride, config.schedule)
        kwargs = {} if config.recursions is None else {"recursions": config.recursions}
        for t, count in _progress(calls, progress, f"recovery T'={level}"):
            tt = torch.full((batch,), t, dtype=torch.long, device=images.device)
            psi = network(current, tt, **kwargs)  # psi_hat_t (line 8, Eq. 12)
            weight = schedule_share(process, t, count) if config.skip == "shares" else None
            psi = repeat_step(psi, count, config.skip, config.compose_padding, weight)
            phi = compose(psi, phi, padding=config.compose_padding)  # psi_hat_t o phi (line 9)
            current = warp(images, phi, mode=mode, padding=pad)  # I_hat_{t-1} (line 10)
            if traj_images is not None and traj_ddfs is not None:
                traj_images.append(current)
                traj_ddfs.append(phi)
    return RecoveryResult(
        ddf=phi,
        images=current,
        initial_ddf=start,
        trajectory_images=torch.stack(traj_images) if traj_images is not None else None,
        trajectory_ddfs=torch.stack(traj_ddfs) if traj_ddfs is not None else None,
    )
