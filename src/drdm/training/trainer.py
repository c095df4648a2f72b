"""The DRDM training loop (paper Algorithm 1), single-process or data-parallel.

One step, per process (each with ``batch_size / world_size`` samples):

1. draw training images uniformly (or with ``data.file_fraction`` between files and phantoms)
   and augment them (:func:`~drdm.training.augment.augment_batch`) -- the *data* generator;
2. draw ``t ~ U{1..T}`` per sample and the forward fields ``psi_t``, ``phi_{t:1}`` with the
   5 % training perturbation, and deform ``I_0`` to ``I_t`` -- the *diffusion* generator;
3. predict ``psi_hat = D_theta(I_t, t)`` (Eq. 12) and take an Adam step on the loss of
   Eq. 14 (:func:`drdm.losses.drdm_loss`); in a distributed run ``DistributedDataParallel``
   averages the gradients, so every process keeps identical weights.

Both generators are CPU ``torch.Generator`` objects seeded per process from ``config.seed``
(:func:`~drdm.seeding.stream_seed`), so a run is reproducible bit for bit on the
CPU, and a run stopped and resumed from a checkpoint (which stores every generator state of
every process) reaches the same weights as an uninterrupted one.

Files (rank 0 only) in the output folder: ``config.yaml``, ``loss.csv`` (one row per step),
``checkpoints/step-NNNNNNNN/``, and when the run completes ``model/`` (exported with
:func:`drdm.checkpoint.save_pretrained`), ``loss.png`` and ``summary.json``.

The loss history and progress output are in :mod:`drdm.training.history`, the set-up of
knowledge distillation (teacher, calibration, target pool) in
:mod:`drdm.training.distill_setup`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from .._version import __version__
from ..card import ModelCard
from ..checkpoint import save_pretrained
from ..config import to_dict
from ..diffusion import ForwardDiffusion
from ..errors import InputError
from ..losses import drdm_loss
from ..nn import RecursiveUNet
from ..seeding import stream_seed
from .augment import augment_batch
from .config import TrainConfig, learning_rate, save_train_config
from .data import TrainingData, build_training_data, draw_indices
from .distill import DistillPool, TeacherTargets, distill_loss, downsample
from .distill_setup import calibrated_teacher, distill_pool, resolve_teacher
from .distributed import DistContext, setup, teardown
from .history import (
    LOSS_TERMS,
    ProgressPrinter,
    csv_row,
    loss_row,
    plot_losses,
    read_history,
    write_history,
)
from .monitor import RecoveryMonitor
from .state import list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint

__all__ = [
    "TrainResult",
    "TrainingDivergedError",
    "tensors_sha256",
    "train",
]

# Fields that may change when a run is resumed; anything else must match config.yaml.
RESUMABLE_CHANGES = ("optim.steps", "output.", "monitor.")


def training_memory_format(device: torch.device, ndim: int) -> torch.memory_format:
    """Memory layout of the network's weights and inputs during training.

    Channels-last on the CPU (oneDNN's convolutions and their gradients run faster on it,
    ``benchmarks/train_step_benchmark.py``), PyTorch's default elsewhere. Only the layout in
    memory changes, not the values: checkpoints store plain contiguous tensors.
    """
    if torch.device(device).type != "cpu":
        return torch.contiguous_format
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        out_dir: the output folder.
        step: optimiser steps completed in total (including resumed ones).
        finished: the run reached ``optim.steps`` (the model was exported).
        model_dir: ``out_dir / "model"`` when finished, else ``None``.
        last_checkpoint: the newest checkpoint folder (``None`` if none was written).
        losses: the rows logged by this invocation (the keys of
            :data:`~drdm.training.history.LOSS_COLUMNS`).
        tensors_sha256: SHA-256 of the final weights' tensors (:func:`tensors_sha256`; not the
            file digest ``weights_sha256`` of a checkpoint's ``config.json``) on every process,
            in rank order.
    """

    out_dir: Path
    step: int
    finished: bool
    model_dir: Path | None
    last_checkpoint: Path | None
    losses: list[dict[str, float]] = field(default_factory=list)
    tensors_sha256: list[str] = field(default_factory=list)


def tensors_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state-dict tensors (sorted names, CPU bytes): equal digests
    mean bit-identical weights."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().to("cpu").reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- helpers


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _config_changes(old: TrainConfig, new: TrainConfig) -> list[str]:
    a, b = _flatten(to_dict(old)), _flatten(to_dict(new))
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [k for k in changed if not any(k.startswith(p) for p in RESUMABLE_CHANGES)]


def _generator_states(
    ctx: DistContext, data_gen: torch.Generator, diff_gen: torch.Generator
) -> dict[str, Tensor]:
    """Every RNG state of every process, gathered (a collective call)."""
    local = {
        "data": data_gen.get_state(),
        "diffusion": diff_gen.get_state(),
        "torch_cpu": torch.get_rng_state(),
    }
    if ctx.device.type == "cuda":
        local["torch_cuda"] = torch.cuda.get_rng_state(ctx.device)
    names = list(local)
    sizes = [int(local[n].numel()) for n in names]
    gathered = ctx.gather_bytes(torch.cat([local[n].reshape(-1) for n in names]))
    states: dict[str, Tensor] = {}
    for rank, flat in enumerate(gathered):
        for name, part in zip(names, flat.split(sizes), strict=True):
            states[f"rank{rank}.{name}"] = part.clone()
    return states


def _restore_generators(
    ctx: DistContext, rng: dict[str, Tensor], data_gen: torch.Generator, diff_gen: torch.Generator
) -> None:
    prefix = f"rank{ctx.rank}."
    data_gen.set_state(rng[prefix + "data"])
    diff_gen.set_state(rng[prefix + "diffusion"])
    torch.set_rng_state(rng[prefix + "torch_cpu"])
    if ctx.device.type == "cuda" and prefix + "torch_cuda" in rng:
        torch.cuda.set_rng_state(rng[prefix + "torch_cuda"], ctx.device)


def _model_card(
    config: TrainConfig,
    data: TrainingData,
    step: int,
    world_size: int,
    distill_card: dict[str, Any] | None = None,
) -> ModelCard:
    """The model card stored with exported models and checkpoints (read by
    ``drdm.DRDM.from_pretrained``); ``distill_card`` describes the teacher, if any."""
    training: dict[str, Any] = {
        "data": data.description,
        "steps": int(step),
        "batch_size": int(config.optim.batch_size),
        "lr": float(config.optim.lr),
        "seed": int(config.seed),
        "world_size": int(world_size),
        "drdm_version": __version__,
    }
    if config.optim.lr_schedule != "constant":
        training["lr_schedule"] = config.optim.lr_schedule
        training["lr_min"] = float(config.optim.lr_min)
    if config.init_from is not None:
        training["init_from"] = config.init_from
    if distill_card is not None:
        training["distillation"] = distill_card
    return ModelCard(
        preset="drdm",
        forward=config.forward,
        image_size=tuple(config.data.image_size),
        training=training,
    )


# --------------------------------------------------------------------------- training


def train(
    config: TrainConfig,
    base_dir: str | Path = ".",
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    device: str = "auto",
    quiet: bool = False,
    stop_after: int | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    time_limit: float | None = None,
) -> TrainResult:
    """Train a DRDM network (Algorithm 1) as described by ``config``.

    Args:
        config: the run (see :class:`~drdm.training.config.TrainConfig`).
        base_dir: folder that relative paths in ``config`` are taken against (the config
            file's folder).
        out_dir: output folder; ``None`` uses ``config.output.dir`` (relative to
            ``base_dir``).
        resume: continue from the newest checkpoint in ``out_dir`` (start from scratch when
            there is none). Without it, an ``out_dir`` that already holds checkpoints is an
            error. ``optim.steps`` and ``output.*`` may differ from the stored config; any other
            change is an error.
        device: ``auto``, ``cpu`` or ``cuda``.
        quiet: no progress bar or messages.
        stop_after: stop after this many steps of this invocation (a checkpoint is written
            there), e.g. to split a long run into time slices.
        on_step: called on every process after each step with ``(step, loss floats)``.
        time_limit: seconds of training after which the run ends at the current step as if
            that were ``optim.steps``: checkpoint, exported model (its card records the steps
            done) and ``summary.json`` with ``"stopped_by_time_limit": true``. For runs on a
            machine lent for a fixed time.

    Returns:
        :class:`TrainResult`. When launched by ``torchrun`` every process must call this; the
        process group is joined and left inside.

    Raises:
        InputError: bad data, output folder or resume mismatch (one line).
        TrainingDivergedError: the loss became NaN/infinite.
    """
    base_dir = Path(base_dir)
    out = Path(out_dir) if out_dir is not None else base_dir / config.output.dir
    ctx = setup(device)
    try:
        return _train(config, base_dir, out, ctx, resume, quiet, stop_after, on_step, time_limit)
    finally:
        teardown(ctx)


def _prepare_output(config: TrainConfig, out: Path, ctx: DistContext, resume: bool) -> Path | None:
    """Check the output folder (every process, before anything is written) and return the
    checkpoint to resume from."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory (output.dir)")
    ckpt_root = out / "checkpoints"
    checkpoints = list_checkpoints(ckpt_root)
    saved_config = out / "config.yaml"
    if not resume:
        if checkpoints or (out / "model").exists():
            raise InputError(
                f"{out}: holds a previous run (checkpoints or model); resume=True continues it, "
                "or choose another output folder"
            )
        return None
    if saved_config.is_file():
        try:
            old = TrainConfig.from_dict(yaml.safe_load(saved_config.read_text(encoding="utf-8")))
        except (ValueError, yaml.YAMLError) as err:
            raise InputError(f"{saved_config}: unreadable stored config ({err})") from None
        changes = _config_changes(old, config)
        if changes:
            raise InputError(
                f"{saved_config}: resuming needs the same config; changed: {', '.join(changes)}"
            )
    if not checkpoints:
        return None
    return checkpoints[-1]


@dataclass
class _RunState:
    """What one training run carries from step to step (every process holds its own)."""

    model: RecursiveUNet
    optimizer: torch.optim.Optimizer
    data_gen: torch.Generator
    diff_gen: torch.Generator
    start: int = 0
    teacher: TeacherTargets | None = None
    pool: DistillPool | None = None


def _local_batch(config: TrainConfig, ctx: DistContext, stop_after: int | None) -> int:
    """The batch of one process; a one-line error for settings that cannot run."""
    optim_cfg = config.optim
    if optim_cfg.batch_size % ctx.world_size:
        raise InputError(
            f"optim.batch_size {optim_cfg.batch_size} is not divisible by the "
            f"{ctx.world_size} processes"
        )
    if stop_after is not None and stop_after < 1:
        raise InputError(f"stop_after must be >= 1, got {stop_after}")
    return optim_cfg.batch_size // ctx.world_size


def _initial_state(config: TrainConfig, ctx: DistContext, resume_from: Path | None) -> _RunState:
    """The network (seeded initialisation), the optimiser and the two random streams, or the
    state stored in the checkpoint ``resume_from``."""
    optim_cfg = config.optim
    model = RecursiveUNet(
        config.network, generator=torch.Generator().manual_seed(stream_seed(config.seed, "init"))
    ).to(ctx.device)
    model.to(memory_format=training_memory_format(ctx.device, config.network.ndim))
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=optim_cfg.lr,
        betas=(optim_cfg.betas[0], optim_cfg.betas[1]),
        eps=optim_cfg.eps,
        weight_decay=optim_cfg.weight_decay,
    )
    state = _RunState(
        model=model,
        optimizer=optimizer,
        data_gen=torch.Generator().manual_seed(stream_seed(config.seed, "data", ctx.rank)),
        diff_gen=torch.Generator().manual_seed(stream_seed(config.seed, "diffusion", ctx.rank)),
    )
    if resume_from is None:
        return state
    try:
        ckpt = load_checkpoint(resume_from)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise InputError(f"{resume_from}: cannot load checkpoint ({err})") from None
    if ckpt.world_size != ctx.world_size:
        raise InputError(
            f"{resume_from}: written by {ckpt.world_size} process(es), now "
            f"{ctx.world_size}; resume with the same number of processes"
        )
    model.load_state_dict(ckpt.model_state)
    optimizer.load_state_dict(ckpt.optimizer_state)
    _restore_generators(ctx, ckpt.rng, state.data_gen, state.diff_gen)
    state.start = ckpt.step
    return state


def _step_losses(
    net: torch.nn.Module,
    process: ForwardDiffusion,
    data: TrainingData,
    images: Tensor,
    config: TrainConfig,
    local_batch: int,
    ctx: DistContext,
    state: _RunState,
) -> tuple[Tensor, Tensor]:
    """The forward half of one step of Algorithm 1: draw a batch and timesteps, run the
    forward process and the network; returns the total loss (Eq. 14 plus the weighted
    distillation term when there is a teacher) and the values averaged over the processes,
    ``(total, distance, angle, regularisation, distill, mean t)`` in float64. With a live
    teacher, ``images`` are at the teacher's size and the student's batch is their area
    resize; with a pool, ``distill.pool_fraction`` of the batch comes from it (Eq. 14 on the
    whole batch, the distillation term on the pool's part)."""
    optim_cfg = config.optim
    layout = training_memory_format(ctx.device, config.network.ndim)
    size = tuple(config.data.image_size)
    pool = state.pool
    from_pool = 0 if pool is None else max(1, round(local_batch * config.distill.pool_fraction))
    live = local_batch - from_pool
    images_t, steps, times = [], [], []
    if live > 0:
        index = draw_indices(data, live, config.data.file_fraction, state.data_gen)
        images_hi = augment_batch(images[index.to(ctx.device)], config.data.augment, state.data_gen)
        batch = downsample(images_hi, size)  # a no-op without a live teacher
        t = torch.randint(1, config.forward.num_steps + 1, (live,), generator=state.diff_gen)
        t = t.to(ctx.device)
        fwd = process.sample(batch, t, generator=state.diff_gen, perturb=True)
        images_t.append(fwd.images)
        steps.append(fwd.step)
        times.append(t)
    if pool is not None:
        pick = torch.randint(0, len(pool), (from_pool,), generator=state.data_gen)
        images_t.append(pool.images[pick].to(ctx.device))
        steps.append(pool.step[pick].to(ctx.device))
        times.append(pool.t[pick].to(ctx.device))
    step_field = torch.cat(steps)
    t_all = torch.cat(times)
    psi_hat = net(torch.cat(images_t).contiguous(memory_format=layout), t_all)
    terms = drdm_loss(
        step_field,
        psi_hat,
        lambda_dist=optim_cfg.lambda_dist,
        lambda_angle=optim_cfg.lambda_angle,
        lambda_reg=optim_cfg.lambda_reg,
    )
    total = terms.total
    distill = torch.zeros((), device=total.device, dtype=total.dtype)
    if pool is not None:
        target = pool.target[pick].to(ctx.device)
        distill = distill_loss(psi_hat[live:], target, step_field[live:])
    elif state.teacher is not None:
        target = state.teacher(images_hi, fwd.cumulative, t)
        distill = distill_loss(psi_hat, target, fwd.step)
    total = total + config.distill.weight * distill
    values = ctx.mean(
        torch.stack(
            [
                total,
                terms.distance,
                terms.angle,
                terms.regularisation,
                distill,
                t_all.double().mean(),
            ]
        ).double()
    )
    return total, values


def _check_finite(values: Tensor, step: int, last_ckpt: Path | None) -> None:
    """:class:`TrainingDivergedError` when a loss value is NaN or infinite."""
    if not bool(torch.isfinite(values).all()):
        hint = f"; the last checkpoint is {last_ckpt}" if last_ckpt else ""
        raise TrainingDivergedError(
            f"loss is not finite at step {step} ({values[:4].tolist()}){hint}; "
            "lower optim.lr or set optim.grad_clip"
        )


def _apply_gradients(total: Tensor, state: _RunState, grad_clip: float | None) -> None:
    """The backward half of one step: gradients, optional clipping, the optimiser step."""
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip)
    state.optimizer.step()


def _save_state(
    config: TrainConfig,
    data: TrainingData,
    ctx: DistContext,
    state: _RunState,
    ckpt_root: Path,
    step: int,
    distill_card: dict[str, Any] | None = None,
) -> Path:
    """Write the resumable training state of ``step`` (the main process writes, every
    process takes part) and return its folder."""
    rng = _generator_states(ctx, state.data_gen, state.diff_gen)
    if ctx.is_main:
        meta = {
            "world_size": ctx.world_size,
            "seed": config.seed,
            "drdm_version": __version__,
        }
        save_checkpoint(
            ckpt_root,
            step,
            state.model,
            state.optimizer,
            rng,
            meta,
            extra_config=_model_card(config, data, step, ctx.world_size, distill_card).to_dict(),
        )
        prune_checkpoints(ckpt_root, config.output.keep_checkpoints)
    ctx.barrier()
    return ckpt_root / f"step-{step:08d}"


def _export_model(
    config: TrainConfig,
    data: TrainingData,
    ctx: DistContext,
    model: RecursiveUNet,
    out: Path,
    digests: list[str],
    seconds_per_step: float | None,
    printer: ProgressPrinter,
    total: int,
    distill_card: dict[str, Any] | None = None,
    timed_out: bool = False,
) -> Path:
    """The finished run (``total`` steps done): the model folder, the loss plot and
    ``summary.json`` (main process); returns the model folder."""
    model_dir = out / "model"
    if ctx.is_main:
        save_pretrained(
            model,
            model_dir,
            extra_config=_model_card(config, data, total, ctx.world_size, distill_card).to_dict(),
        )
        all_rows = read_history(out / "loss.csv")
        if config.output.plot and all_rows:
            plot_losses(all_rows, out / "loss.png", title=f"DRDM training: {out.name}")
        tail = all_rows[-max(1, min(len(all_rows), 50)) :]
        summary = {
            "steps": total,
            "stopped_by_time_limit": timed_out,
            "world_size": ctx.world_size,
            "device": str(ctx.device),
            "threads": torch.get_num_threads(),
            "batch_size": config.optim.batch_size,
            "images": len(data),
            "data": data.description,
            "final_loss_mean_last_50": {k: sum(r[k] for r in tail) / len(tail) for k in LOSS_TERMS}
            if tail
            else None,
            "seconds_per_step_this_run": seconds_per_step,
            "tensors_sha256_per_rank": digests,
            "model": str(model_dir),
            "distillation": distill_card,
        }
        text = json.dumps(summary, indent=2) + "\n"
        (out / "summary.json").write_text(text, encoding="utf-8")
        printer.message(f"drdm train: model written to {model_dir}")
    ctx.barrier()
    return model_dir


def _load_init_weights(model: RecursiveUNet, config: TrainConfig, base_dir: Path) -> None:
    """Start from the weights of ``config.init_from`` (a folder relative to ``base_dir``, or a
    packaged model name)."""
    from ..model import DRDM

    name = str(config.init_from)
    source = base_dir / name if (base_dir / name).exists() else name
    try:
        init = DRDM.from_pretrained(source)
        model.load_state_dict(init.network.state_dict(), strict=True)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"init_from {name!r}: cannot start from it ({first})") from None


def _weights_digests(model: RecursiveUNet, ctx: DistContext) -> list[str]:
    """The SHA-256 of the weights on every process (they must agree)."""
    digest = tensors_sha256(model)
    return [
        bytes(t.tolist()).hex()
        for t in ctx.gather_bytes(torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8))
    ]


@dataclass
class _Run:
    """What the step loop of one invocation works on (built by :func:`_set_up`)."""

    config: TrainConfig
    ctx: DistContext
    state: _RunState
    net: torch.nn.Module
    process: ForwardDiffusion
    data: TrainingData
    images: Tensor
    local_batch: int
    out: Path
    distill_card: dict[str, Any] | None = None

    @property
    def model(self) -> RecursiveUNet:
        return self.state.model


@dataclass
class _LoopResult:
    """What :func:`_run_steps` did: the rows logged, the last step and why it stopped."""

    rows: list[dict[str, float]]
    end: int
    timed_out: bool
    seconds: float
    last_ckpt: Path | None


def _set_up(
    config: TrainConfig,
    base_dir: Path,
    out: Path,
    ctx: DistContext,
    resume_from: Path | None,
    local_batch: int,
    quiet: bool,
) -> _Run:
    """Training data, network, optimiser and generators (from scratch, ``init_from`` or the
    checkpoint ``resume_from``) and the teacher when distilling."""
    teacher_path = resolve_teacher(config, base_dir)
    data_config = config.data
    if teacher_path is not None:
        data_config = dataclasses.replace(data_config, image_size=config.distill.teacher_size)
    data = build_training_data(data_config, base_dir)
    images_all = data.images.to(ctx.device)
    state = _initial_state(config, ctx, resume_from)
    if resume_from is None and config.init_from is not None:
        _load_init_weights(state.model, config, base_dir)
    process = ForwardDiffusion(config.forward)
    distill_card: dict[str, Any] | None = None
    if teacher_path is not None:
        state.teacher, distill_card = calibrated_teacher(
            config, teacher_path, process, data, images_all, ctx
        )
        if config.distill.pool_size is not None:
            state.pool = distill_pool(config, state.teacher, data, images_all, ctx, out, quiet)
            distill_card["pool_size"] = len(state.pool)
            distill_card["pool_fraction"] = float(config.distill.pool_fraction)
            # the teacher's work is done: the live part of each batch is drawn on the model
            # grid, as without distillation
            state.teacher = None
            images_all = downsample(images_all, config.data.image_size)

    net: torch.nn.Module = state.model
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(state.model, device_ids=ids, broadcast_buffers=False)
    return _Run(config, ctx, state, net, process, data, images_all, local_batch, out, distill_card)


def _one_step(run: _Run, step: int, last_ckpt: Path | None) -> dict[str, float]:
    """One optimiser step of Algorithm 1; returns its loss row (:func:`loss_row`)."""
    t0 = time.perf_counter()
    rate = learning_rate(run.config.optim, step)
    for group in run.state.optimizer.param_groups:
        group["lr"] = rate
    total_loss, values = _step_losses(
        run.net, run.process, run.data, run.images, run.config, run.local_batch, run.ctx, run.state
    )
    _check_finite(values, step, last_ckpt)
    _apply_gradients(total_loss, run.state, run.config.optim.grad_clip)
    return loss_row(step, time.perf_counter() - t0, values)


def _run_steps(
    run: _Run,
    start: int,
    end: int,
    printer: ProgressPrinter,
    monitor: RecoveryMonitor | None,
    on_step: Callable[[int, dict[str, float]], None] | None,
    time_limit: float | None,
) -> _LoopResult:
    """Steps ``start + 1 .. end`` (fewer when ``time_limit`` runs out): after each step the
    loss row goes to ``loss.csv``, the progress output and ``on_step``, and checkpoints and
    the recovery monitor follow the config."""
    config, ctx = run.config, run.ctx
    ckpt_root = run.out / "checkpoints"
    ema: dict[str, float] = {}
    rows: list[dict[str, float]] = []
    checkpoints = list_checkpoints(ckpt_root)
    last_ckpt = checkpoints[-1] if checkpoints else None
    csv_path = run.out / "loss.csv"
    csv_file = open(csv_path, "a", newline="", encoding="utf-8") if ctx.is_main else None
    writer = csv.writer(csv_file) if csv_file is not None else None
    seconds_total = 0.0
    wall_start = time.perf_counter()
    timed_out = False
    try:
        run.net.train()
        for step in range(start + 1, end + 1):
            row = _one_step(run, step, last_ckpt)
            seconds_total += row["seconds"]
            rows.append(row)
            for k in LOSS_TERMS:
                ema[k] = row[k] if k not in ema else 0.95 * ema[k] + 0.05 * row[k]
            if writer is not None and csv_file is not None:
                writer.writerow(csv_row(row))
                csv_file.flush()
            printer.update(step, ema, seconds_total / len(rows))
            if on_step is not None:
                on_step(step, row)
            if time_limit is not None and step < end:
                # every process must agree to stop at the same step
                over = torch.tensor(float(time.perf_counter() - wall_start > time_limit))
                timed_out = bool(ctx.mean(over.double()) > 0)
            if step % config.output.checkpoint_every == 0 or step == end or timed_out:
                last_ckpt = _save_state(
                    config, run.data, ctx, run.state, ckpt_root, step, run.distill_card
                )
            if monitor is not None:
                monitor(step, run.model, final=step == end or timed_out)
            if timed_out:
                end = step
                break
    finally:
        printer.close()
        if csv_file is not None:
            csv_file.close()
    return _LoopResult(rows, end, timed_out, seconds_total, last_ckpt)


def _train(
    config: TrainConfig,
    base_dir: Path,
    out: Path,
    ctx: DistContext,
    resume: bool,
    quiet: bool,
    stop_after: int | None,
    on_step: Callable[[int, dict[str, float]], None] | None,
    time_limit: float | None = None,
) -> TrainResult:
    local_batch = _local_batch(config, ctx, stop_after)
    if time_limit is not None and not time_limit > 0:
        raise InputError(f"time_limit must be > 0 seconds, got {time_limit}")
    resume_from = _prepare_output(config, out, ctx, resume)
    csv_path = out / "loss.csv"
    ctx.barrier()

    run = _set_up(config, base_dir, out, ctx, resume_from, local_batch, quiet)
    model, data, start = run.model, run.data, run.state.start
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_train_config(config, out / "config.yaml")
        write_history(csv_path, read_history(csv_path, up_to=start))

    total = config.optim.steps
    end = total if stop_after is None else min(total, start + stop_after)
    printer = ProgressPrinter(
        ctx.is_main and not quiet, total, start, config.output.log_every, time_limit
    )
    n_params = sum(p.numel() for p in model.parameters())
    printer.message(
        f"drdm train: {len(data)} images ({data.description}); {n_params} parameters; "
        f"{ctx.world_size} process(es) on {ctx.device}, {torch.get_num_threads()} thread(s) "
        f"each; batch {config.optim.batch_size}; "
        + (
            f"steps {start + 1}..{end} of {total}"
            if end > start
            else f"{start} of {total} steps already done"
        )
        + (f" or {time_limit:g} s, whichever comes first" if time_limit is not None else "")
        + f"; out {out}"
    )

    monitor = None
    if ctx.is_main:
        try:
            monitor = RecoveryMonitor(config, base_dir, out, start)
        except ValueError as err:
            raise InputError(str(err)) from None
    loop = _run_steps(run, start, end, printer, monitor, on_step, time_limit)

    step_done = max(start, loop.end)
    digests = _weights_digests(model, ctx)
    finished = step_done >= total or loop.timed_out
    model_dir = None
    if finished:
        seconds_per_step = loop.seconds / len(loop.rows) if loop.rows else None
        model_dir = _export_model(
            config,
            data,
            ctx,
            model,
            out,
            digests,
            seconds_per_step,
            printer,
            step_done,
            run.distill_card,
            loop.timed_out,
        )
    elif ctx.is_main and loop.last_ckpt is not None:
        printer.message(f"drdm train: stopped at step {step_done}; checkpoint {loop.last_ckpt}")
    return TrainResult(
        out_dir=out,
        step=step_done,
        finished=finished,
        model_dir=model_dir,
        last_checkpoint=loop.last_ckpt,
        losses=loop.rows,
        tensors_sha256=digests,
    )
