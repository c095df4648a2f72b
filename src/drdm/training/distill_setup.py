"""Setting up knowledge distillation for a training run: the teacher of ``config.distill``,
its calibration on the training images and the pool of its targets.

The trainer (:mod:`drdm.training.trainer`) calls these before its first step; the teacher,
its targets and the pool themselves are in :mod:`drdm.training.distill`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..diffusion import ForwardDiffusion
from ..errors import InputError
from ..io.files import file_sha256
from ..seeding import stream_seed
from .augment import augment_batch
from .config import TrainConfig
from .data import TrainingData, draw_indices
from .distill import DistillPool, TeacherTargets, build_pool, downsample, load_teacher
from .distributed import DistContext

__all__ = ["calibrated_teacher", "distill_pool", "resolve_teacher", "teacher_batches"]


def resolve_teacher(config: TrainConfig, base_dir: Path) -> Path | None:
    """The teacher of ``config.distill`` (relative to ``base_dir``), ``None`` when there is
    none or when it is missing and ``distill.missing`` is ``"warn"``."""
    if config.distill.teacher is None:
        return None
    path = base_dir / config.distill.teacher
    if path.exists():
        return path
    if config.distill.missing == "warn":
        print(f"drdm train: warning: {path}: no such teacher; training without it", file=sys.stderr)
        return None
    raise InputError(f"{path}: no such teacher (distill.teacher)")


def teacher_batches(
    config: TrainConfig,
    data: TrainingData,
    images: Tensor,
    ctx: DistContext,
    generator: torch.Generator,
) -> Callable[[int], tuple[Tensor, Tensor]]:
    """``n ->`` (augmented training images at the teacher's size, the same on the model grid),
    drawn from ``generator`` as a training step draws them."""

    def draw_batch(n: int) -> tuple[Tensor, Tensor]:
        index = draw_indices(data, n, config.data.file_fraction, generator)
        hi = augment_batch(images[index.to(ctx.device)], config.data.augment, generator)
        return hi, downsample(hi, config.data.image_size)

    return draw_batch


def distill_pool(
    config: TrainConfig,
    targets: TeacherTargets,
    data: TrainingData,
    images: Tensor,
    ctx: DistContext,
    out: Path,
    quiet: bool,
) -> DistillPool:
    """The pool of teacher targets of ``config.distill.pool_size`` samples: read from the run
    folder when an earlier invocation made it, else made now (seeded) and saved there."""
    path = out / "distill_pool.safetensors"
    size = int(config.distill.pool_size or 0)
    if path.is_file():
        pool = DistillPool.load(path)
        if len(pool) == size:
            return pool
    generator = torch.Generator().manual_seed(stream_seed(config.seed, "distill", 1))
    draw_batch = teacher_batches(config, data, images, ctx, generator)
    pool = build_pool(targets, draw_batch, size, generator, progress=ctx.is_main and not quiet)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        pool.save(path)
    return pool


def _file_sha256(path: Path) -> str:
    """SHA-256 of a teacher file, or of the weights file of a teacher folder."""
    target = path if path.is_file() else path / "model.safetensors"
    return file_sha256(target) if target.is_file() else ""


def calibrated_teacher(
    config: TrainConfig,
    path: Path,
    process: ForwardDiffusion,
    data: TrainingData,
    images: Tensor,
    ctx: DistContext,
) -> tuple[TeacherTargets, dict[str, Any]]:
    """Load the teacher, measure its conversion to our process on the training images (the
    same on every process and on resume: its own seeded generator) and describe it for the
    model card."""
    teacher = load_teacher(path, ctx.device)
    targets = TeacherTargets(teacher, process, config.data.image_size, config.distill.teacher_size)
    generator = torch.Generator().manual_seed(stream_seed(config.seed, "distill"))
    draw_batch = teacher_batches(config, data, images, ctx, generator)
    calibration = targets.calibrate(draw_batch, generator, ctx.device)
    card = {
        "teacher": path.name,
        "teacher_sha256": _file_sha256(path),
        "teacher_size": list(config.distill.teacher_size),
        "weight": float(config.distill.weight),
        "calibration": calibration.to_dict(),
    }
    return targets, card
