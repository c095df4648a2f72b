"""Typed configuration of a DRDM training run (Algorithm 1), read from YAML or JSON.

A training config has eight parts, each a frozen dataclass::

    seed: 0
    network: {NetworkConfig fields}          # drdm.nn.NetworkConfig (Appendix A)
    forward: {ForwardDiffusionConfig fields} # drdm.diffusion.ForwardDiffusionConfig (2.1, 3.3)
    data: {DataConfig fields}                # sources, preprocessing (3.2), augmentation
    optim: {OptimConfig fields}              # Adam, batch, steps, loss weights (3.3, Eq. 14)
    output: {OutputConfig fields}            # output folder, checkpoints, logging
    distill: {DistillConfig fields}          # optional teacher (knowledge distillation)
    monitor: {MonitorConfig fields}          # U per band of timesteps during training

Every field has a default, so a config file only lists what differs. ``network.ndim`` and
``forward.ndim`` default to the dimensionality of ``data.image_size`` and
``network.num_steps`` to ``forward.num_steps`` when the file does not set them. Relative paths
(``data.files``, ``output.dir``) are resolved against the folder of the config file.

:func:`load_train_config` (:meth:`TrainConfig.from_dict`) checks every key and value and raises
:class:`~drdm.errors.InputError` with one line naming the file and the dotted key
(``configs/x.yaml: optim.stpes: unknown key (known: ...)``).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal, Self

from ..choices import LR_SCHEDULES, LrSchedule, check_choice
from ..config import Config, from_dict, load_config, save_config
from ..diffusion import ForwardDiffusionConfig
from ..errors import InputError
from ..nn import NetworkConfig

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DistillConfig",
    "MonitorConfig",
    "OptimConfig",
    "OutputConfig",
    "PhantomConfig",
    "TrainConfig",
    "learning_rate",
    "load_train_config",
    "save_train_config",
]

PhantomKind = Literal["cardiac2d", "thorax3d"]


@dataclass(frozen=True)
class PhantomConfig(Config):
    """Built-in synthetic training images (:mod:`drdm.data.phantoms`).

    Attributes:
        kind: ``"cardiac2d"`` (short-axis cine-MRI-like slices, 2D models) or ``"thorax3d"``
            (thorax-CT-like volumes, 3D models).
        count: number of phantoms, generated once at the model size when training starts.
        seed: seed of the phantom generator (independent of the training ``seed``, so the
            same phantoms can be kept while the training randomness changes).
    """

    kind: PhantomKind = "cardiac2d"
    count: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("cardiac2d", "thorax3d"):
            raise ValueError(f"kind must be 'cardiac2d' or 'thorax3d', got {self.kind!r}")
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")


@dataclass(frozen=True)
class AugmentConfig(Config):
    """Random spatial augmentation of every training sample (paper 3.2).

    All transforms are combined into one affine map per sample and applied with a single
    linear resampling (zero padding), so images stay in ``[0, 1]``.

    Attributes:
        enabled: apply the augmentation at all.
        rotation_deg: the rotation angle is drawn from ``U(0, rotation_deg)`` degrees, in-plane
            in 2D and about a uniformly random axis in 3D (paper: 180).
        translation: the shift along each axis is drawn from ``U(-translation, translation)``
            times the size of that axis (paper: 1/8).
        flip_prob: probability of flipping each axis independently (paper: 0.5).
        crop_min, crop_max: a window of ``r`` times the image size, ``r ~ U(crop_min,
            crop_max)`` (the same ratio for every axis, keeping the aspect), at a random
            position inside the image, is resized back to the full size (paper: 0.6, 1.0).
    """

    enabled: bool = True
    rotation_deg: float = 180.0
    translation: float = 0.125
    flip_prob: float = 0.5
    crop_min: float = 0.6
    crop_max: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.rotation_deg <= 360:
            raise ValueError(f"rotation_deg must lie in [0, 360], got {self.rotation_deg}")
        if not 0 <= self.translation <= 1:
            raise ValueError(f"translation must lie in [0, 1], got {self.translation}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob must lie in [0, 1], got {self.flip_prob}")
        if not 0 < self.crop_min <= self.crop_max <= 1:
            raise ValueError(
                f"need 0 < crop_min <= crop_max <= 1, got {self.crop_min} and {self.crop_max}"
            )


@dataclass(frozen=True)
class DataConfig(Config):
    """Training images: where they come from, preprocessing (paper 3.2) and augmentation.

    Attributes:
        image_size: the model's spatial size (2 entries for a 2D model, 3 for 3D), in voxels;
            every entry a multiple of ``2 ** len(network.widths)``.
        files: NIfTI files (``.nii``/``.nii.gz``), folders (searched recursively for NIfTI
            files) or glob patterns, relative to the config file's folder. For a 2D model, 3D
            files are cut into 2D slices along ``slice_axis``; for a 3D model they are used
            whole.
        missing_files: ``"error"`` (default) stops on a missing file, folder or empty pattern;
            ``"warn"`` prints a warning and trains without it (the model's recorded data
            description says what was actually used).
        slice_axis: for 3D files and a 2D model: the array axis (0, 1 or 2) to slice along,
            or ``"auto"``: the axis with the coarsest voxel spacing, or, when the spacing is
            isotropic (within 1 %), the axis with the fewest voxels.
        skip_blank_slices: drop slices (and images) that are constant after normalisation.
        phantoms: built-in phantoms to add to (or use instead of) the files; ``null`` for
            none. At least one source is required.
        file_fraction: probability that a training sample is drawn from the files rather
            than from the phantoms (when both exist); ``null`` draws uniformly from all
            images, whatever their source.
        use_spacing: resize using the voxel spacing of each file (its affine), so anatomy
            keeps its physical aspect ratio (isotropic model voxels); ``false`` treats voxels
            as square.
        threshold: intensity threshold in the files' units: values below it are raised to it
            (they become 0 after normalisation), removing e.g. air; ``null``: none. Files
            only: phantoms are generated in ``[0, 1]`` and used as they are.
        intensity_percentiles: the low and high percentiles of each file's intensities that
            map linearly to 0 and 1 (values outside are clipped). ``[0, 100]`` is min-max
            normalisation. Computed once per file (per volume, before slicing); files only.
        augment: random spatial augmentation (see :class:`AugmentConfig`).
    """

    image_size: tuple[int, ...] = (128, 128)
    files: tuple[str, ...] = ()
    missing_files: Literal["error", "warn"] = "error"
    slice_axis: int | Literal["auto"] = "auto"
    skip_blank_slices: bool = True
    phantoms: PhantomConfig | None = None
    file_fraction: float | None = None
    use_spacing: bool = True
    threshold: float | None = None
    intensity_percentiles: tuple[float, float] = (0.0, 100.0)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))
        if len(self.image_size) not in (2, 3) or min(self.image_size) < 2:
            raise ValueError(
                f"image_size must have 2 or 3 entries >= 2, got {list(self.image_size)}"
            )
        if self.missing_files not in ("error", "warn"):
            raise ValueError(f"missing_files must be 'error' or 'warn', got {self.missing_files!r}")
        if self.slice_axis != "auto" and self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 'auto', 0, 1 or 2, got {self.slice_axis!r}")
        if self.file_fraction is not None and not 0 <= self.file_fraction <= 1:
            raise ValueError(f"file_fraction must lie in [0, 1], got {self.file_fraction}")
        lo, hi = self.intensity_percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(
                f"intensity_percentiles must satisfy 0 <= low < high <= 100, got [{lo}, {hi}]"
            )

    @property
    def ndim(self) -> int:
        """Spatial dimensionality of the model, ``len(image_size)``."""
        return len(self.image_size)


@dataclass(frozen=True)
class OptimConfig(Config):
    """Optimisation (paper 3.3): Adam on the loss of Eq. 14.

    Attributes:
        steps: total number of optimiser steps of the run.
        batch_size: images per step, summed over all processes of a distributed run (each of
            ``W`` processes takes ``batch_size / W``; must divide evenly).
        lr: Adam learning rate (paper: 1e-4, constant); with ``lr_schedule: cosine`` the rate
            of the first step.
        lr_schedule: ``"constant"`` (the paper) or ``"cosine"``: half a cosine from ``lr`` at
            step 1 down to ``lr_min`` at step ``steps`` (:func:`learning_rate`). The rate is a
            function of the step alone, so a resumed run follows the same schedule; changing
            ``steps`` on resume stretches what is left of it.
        lr_min: the last rate of the cosine schedule (ignored when constant).
        betas: Adam's ``(beta1, beta2)``.
        eps: Adam's epsilon.
        weight_decay: L2 weight decay of Adam (0: none).
        grad_clip: clip the global gradient norm to this value; ``null``: no clipping.
        lambda_dist, lambda_angle, lambda_reg: the loss weights ``lambda_1..3`` of Eq. 14
            (paper: 1, 1, 10).
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    lr_schedule: LrSchedule = "constant"
    lr_min: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None
    lambda_dist: float = 1.0
    lambda_angle: float = 1.0
    lambda_reg: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min must be in [0, lr={self.lr}], got {self.lr_min}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")


def learning_rate(optim: OptimConfig, step: int) -> float:
    """The Adam rate of optimiser step ``step`` (1-based) under ``optim.lr_schedule``.

    ``"cosine"``: ``lr_min + (lr - lr_min) * (1 + cos(pi * (step - 1) / (steps - 1))) / 2``,
    so ``lr`` at step 1 and ``lr_min`` at step ``steps``; steps past ``steps`` keep ``lr_min``.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if optim.lr_schedule == "constant" or optim.steps == 1:
        return optim.lr
    progress = min(1.0, (step - 1) / (optim.steps - 1))
    return optim.lr_min + (optim.lr - optim.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class OutputConfig(Config):
    """Where and how often the run writes.

    Attributes:
        dir: output folder (relative to the config file's folder; ``drdm train --out``
            overrides it). Holds ``config.yaml`` (the resolved config), ``loss.csv``,
            ``checkpoints/step-NNNNNNNN/``, and at the end ``model/`` (the exported model),
            ``loss.png`` and ``summary.json``.
        checkpoint_every: write a checkpoint every this many steps (and at the last step).
        keep_checkpoints: how many of the newest checkpoints to keep (older ones are deleted).
        log_every: without a progress bar (not a terminal), print a line every this many steps.
        plot: write the loss curve ``loss.png`` at the end.
    """

    dir: str = "runs/drdm"
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 25
    plot: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")


@dataclass(frozen=True)
class DistillConfig(Config):
    """Knowledge distillation from a trained teacher (:mod:`drdm.training.distill`).

    Attributes:
        teacher: a model folder (``DRDM.save_pretrained``, ``drdm import-official``) or the
            authors' ``.pth`` checkpoint, relative to the config file's folder; ``null``
            (default): no distillation. The teacher's weights are only read, never saved.
        weight: weight of the distillation term beside Eq. 14's three terms.
        teacher_size: the grid the teacher runs on (its training resolution); the training
            images are prepared at this size and area-resized to ``data.image_size``.
        missing: ``"error"`` (default) stops when the teacher file is absent; ``"warn"``
            trains without distillation.
        pool_size: ``null`` (default): the teacher predicts for every training sample (on
            a GPU). A number ``N``: the teacher's targets are computed once, at the start, for
            ``N`` forward samples (kept as ``distill_pool.safetensors`` in the run folder and
            reused on resume), and ``pool_fraction`` of every batch is drawn from them; the
            rest of the batch is drawn afresh and trained on Eq. 14 alone. For CPU training,
            where the teacher at 256 x 256 costs several student steps per sample.
        pool_fraction: the share of each batch taken from the pool.
    """

    teacher: str | None = None
    weight: float = 1.0
    teacher_size: tuple[int, ...] = (256, 256)
    missing: Literal["error", "warn"] = "error"
    pool_size: int | None = None
    pool_fraction: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "teacher_size", tuple(int(s) for s in self.teacher_size))
        if not self.weight >= 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if len(self.teacher_size) not in (2, 3) or min(self.teacher_size) < 8:
            raise ValueError(
                f"teacher_size must have 2 or 3 entries >= 8, got {list(self.teacher_size)}"
            )
        if self.missing not in ("error", "warn"):
            raise ValueError(f"missing must be 'error' or 'warn', got {self.missing!r}")
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"pool_size must be >= 1 or null, got {self.pool_size}")
        if not 0 < self.pool_fraction <= 1:
            raise ValueError(f"pool_fraction must lie in (0, 1], got {self.pool_fraction}")


@dataclass(frozen=True)
class MonitorConfig(Config):
    """How much of the forward steps the network recovers, measured during training
    (:mod:`drdm.training.monitor`): the unrecovered fraction ``U`` per band of timesteps on
    fixed images and fixed forward draws, written to ``recovery.csv`` and ``recovery.png``.
    It uses its own random generator, so it changes nothing in the training run (a resumed
    run stays bit-exact).

    Attributes:
        every: evaluate every this many steps and at the end (0: never).
        files: NIfTI images (relative to the config file's folder), preprocessed as the
            training files are, without augmentation; a missing one is handled as
            ``data.missing_files`` says.
        phantoms: built-in phantoms to evaluate on (use another seed than training's for a
            held-out set).
        draws: forward draws per image and band.
        seed: seed of the evaluation draws.
    """

    every: int = 0
    files: tuple[str, ...] = ()
    phantoms: PhantomConfig | None = None
    draws: int = 2
    seed: int = 1234

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))
        if self.every < 0:
            raise ValueError(f"every must be >= 0, got {self.every}")
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")


@dataclass(frozen=True)
class TrainConfig(Config):
    """A complete training run. See the module docstring for the file layout.

    Attributes:
        seed: seeds the network initialisation and the per-process generators of the data
            sampling/augmentation and of the forward process (timesteps and random fields).
        network: the network (:class:`~drdm.nn.NetworkConfig`).
        forward: the forward process (:class:`~drdm.diffusion.ForwardDiffusionConfig`).
        data: training images, preprocessing and augmentation (:class:`DataConfig`).
        optim: optimiser, batch size, steps, loss weights (:class:`OptimConfig`).
        output: output folder, checkpoints and logging (:class:`OutputConfig`).
        distill: optional teacher (:class:`DistillConfig`).
        monitor: U per band measured during training (:class:`MonitorConfig`).
        init_from: a model folder (or packaged model name) whose weights start the run
            instead of a random initialisation (same network config), e.g. to fine-tune the
            packaged default; relative to the config file's folder. ``null``: random.
    """

    seed: int = 0
    network: NetworkConfig = field(default_factory=NetworkConfig)
    forward: ForwardDiffusionConfig = field(default_factory=ForwardDiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    init_from: str | None = None

    def __post_init__(self) -> None:
        nd = self.data.ndim
        if self.network.ndim != nd or self.forward.ndim != nd:
            raise ValueError(
                f"network.ndim ({self.network.ndim}) and forward.ndim ({self.forward.ndim}) "
                f"must equal the dimensionality of data.image_size {list(self.data.image_size)}"
            )
        if self.network.num_steps != self.forward.num_steps:
            raise ValueError(
                f"network.num_steps ({self.network.num_steps}) must equal forward.num_steps "
                f"({self.forward.num_steps})"
            )
        m = self.network.size_multiple
        if any(s % m for s in self.data.image_size):
            raise ValueError(
                f"data.image_size {list(self.data.image_size)}: every entry must be a multiple "
                f"of {m} (2 ** len(network.widths))"
            )
        if self.network.in_channels != 1:
            raise ValueError("network.in_channels must be 1 (single-channel images)")
        for name, phantoms in (("data", self.data.phantoms), ("monitor", self.monitor.phantoms)):
            kind = phantoms.kind if phantoms is not None else None
            if kind is not None and {"cardiac2d": 2, "thorax3d": 3}[kind] != nd:
                raise ValueError(f"{name}.phantoms.kind {kind!r} does not fit a {nd}D model")
        if self.distill.teacher is not None:
            if len(self.distill.teacher_size) != nd:
                raise ValueError(
                    f"distill.teacher_size {list(self.distill.teacher_size)} does not fit a "
                    f"{nd}D model"
                )
            if any(
                t < s for t, s in zip(self.distill.teacher_size, self.data.image_size, strict=True)
            ):
                raise ValueError(
                    f"distill.teacher_size {list(self.distill.teacher_size)} must not be "
                    f"smaller than data.image_size {list(self.data.image_size)}"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build a training config from a nested mapping (as read from YAML/JSON).

        Sections given as ``null`` take their defaults and the implied fields (see the module
        docstring) are filled in; unknown keys, wrongly typed or invalid values raise
        ``ValueError`` naming the dotted key.
        """
        if isinstance(data, dict):
            hints = typing.get_type_hints(cls)
            data = {
                k: v for k, v in data.items() if v is not None or not is_dataclass(hints.get(k))
            }
            data = _fill_implied(data)
        return from_dict(cls, data)


def _fill_implied(data: dict[str, Any]) -> dict[str, Any]:
    """Default ``network.ndim``/``forward.ndim`` from ``data.image_size`` and
    ``network.num_steps`` from ``forward.num_steps`` where the mapping leaves them out."""
    data = dict(data)
    section = data.get("data")
    size = section.get("image_size") if isinstance(section, dict) else None
    ndim = len(size) if isinstance(size, list | tuple) else len(DataConfig().image_size)
    forward = data.get("forward", {})
    network = data.get("network", {})
    if isinstance(forward, dict):
        forward = {"ndim": ndim, **forward}
        steps = forward.get("num_steps", ForwardDiffusionConfig().num_steps)
        if isinstance(network, dict):
            network = {"ndim": ndim, "num_steps": steps, **network}
    data["forward"], data["network"] = forward, network
    return data


# --------------------------------------------------------------------------- files


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training config from a YAML or JSON (``.json``) file
    (:func:`drdm.config.load_config` with :meth:`TrainConfig.from_dict`).

    Raises :class:`~drdm.errors.InputError` (one line, naming the file and the key) for a
    missing or unparsable file, an unknown key, a wrongly typed or invalid value, and for a
    config without training data.
    """
    config = load_config(TrainConfig, path)
    if not config.data.files and config.data.phantoms is None:
        raise InputError(f"{path}: data: no training data; set data.files and/or data.phantoms")
    return config


def save_train_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``config`` as YAML (``.yaml``/``.yml``) or JSON (see :func:`drdm.config.save_config`);
    :func:`load_train_config` reads it back to an equal config."""
    save_config(config, path)
