"""Fit a DRDM model to a user's own unlabelled scans (``drdm adapt``).

Algorithm 1 needs no labels, so a model can be fine-tuned on a handful of scans of a new
anatomy or modality. :func:`adapt`:

1. splits the images (files) into a training part and a held-out part (``holdout``);
2. measures, on the held-out part, how much of the model's forward steps its network
   recovers, per band of timesteps: the unrecovered fraction
   ``U = E|compose(psi_hat, psi_t)| / E|psi_t|`` (:func:`drdm.training.monitor.recovery_table`;
   1 = nothing recovered);
3. fine-tunes the network on the training part with the trainer (:func:`drdm.training.train`,
   Eq. 14, the paper's training augmentation) for ``time_limit`` seconds, starting from the
   base model's weights (``init_from``);
4. measures U again on exactly the same held-out draws (paired), and writes a model folder
   that every command accepts with ``--model``, whose card records the base model, the data
   (file names and SHA-256), the settings and the before/after table, plus ``adapt.json`` and
   ``adapt_u.png``.

The images are preprocessed as training preprocesses them (:mod:`drdm.training.data`:
percentile window to ``[0, 1]``, isotropic resize to the model grid, 3D stacks cut into
slices for 2D models).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config
from ..errors import InputError
from ..io.files import atomic_path, atomic_write, file_sha256
from .config import AugmentConfig, DataConfig, OptimConfig, OutputConfig, TrainConfig
from .data import build_training_data, expand_files
from .monitor import recovery_table

__all__ = ["AdaptConfig", "AdaptReport", "adapt", "split_holdout"]


@dataclass(frozen=True)
class AdaptConfig(Config):
    """Settings of :func:`adapt` (stored in the adapted model's card).

    Attributes:
        init: the base model: a packaged name (``"default"``, ``"default-3d"``) or a model
            folder. Only models of the package's own process (preset ``"drdm"``) can be
            adapted.
        time_limit: seconds of fine-tuning (the trainer's ``time_limit``).
        holdout: fraction of the files held out for the before/after measurement (at least
            one file when there are two or more; with a single file it is measured on itself).
        seed: seeds the split, the training run and the evaluation draws.
        lr: Adam learning rate of the fine-tuning.
        batch_size: images per step.
        lambda_reg: weight of Eq. 14's regulariser; ``None`` uses ``10 / max(image_size)``
            (the paper's 10 for fields in image sizes, expressed for fields in voxels).
        eval_draws: forward draws per held-out image and band for the U table.
        slice_axis: for 3D files and a 2D model, the axis to slice along (``"auto"``).
        intensity_percentiles: the percentile window mapped to ``[0, 1]``.
        checkpoint_every: checkpoint interval (steps) of the training run.
    """

    init: str = "default"
    time_limit: float = 1200.0
    holdout: float = 0.2
    seed: int = 0
    lr: float = 3e-4
    batch_size: int = 8
    lambda_reg: float | None = None
    eval_draws: int = 4
    slice_axis: int | str = "auto"
    intensity_percentiles: tuple[float, float] = (0.0, 99.5)
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "intensity_percentiles", tuple(float(p) for p in self.intensity_percentiles)
        )
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {self.time_limit}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.eval_draws < 1:
            raise ValueError(f"eval_draws must be >= 1, got {self.eval_draws}")
        if self.lambda_reg is not None and self.lambda_reg < 0:
            raise ValueError(f"lambda_reg must be >= 0, got {self.lambda_reg}")


@dataclass
class AdaptReport:
    """What :func:`adapt` did.

    Attributes:
        model_dir: the adapted model folder.
        train_files, holdout_files: the split.
        before, after: U per band, rows ``{"lo", "hi", "U"}`` (held-out part, paired draws).
        steps: optimiser steps done; seconds: wall time of the fine-tuning.
    """

    model_dir: Path
    train_files: list[Path]
    holdout_files: list[Path]
    before: list[dict[str, float]]
    after: list[dict[str, float]]
    steps: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """Markdown table of U per band before and after."""
        lines = ["| t | U before | U after | change |", "|---|---|---|---|"]
        for b, a in zip(self.before, self.after, strict=True):
            lines.append(
                f"| {b['lo']}-{b['hi']} | {b['U']:.3f} | {a['U']:.3f} | {a['U'] - b['U']:+.3f} |"
            )
        return "\n".join(lines)


def split_holdout(
    files: Sequence[Path], fraction: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """Deterministic split of ``files`` into ``(train, held_out)``: ``round(fraction * N)``
    files held out (at least 1 when ``fraction > 0`` and ``N >= 2``, at most ``N - 1``);
    with one file, or ``fraction = 0``, nothing is held out."""
    files = list(files)
    n = len(files)
    k = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:k])
    train = [f for i, f in enumerate(files) if i not in held]
    return train, [f for i, f in enumerate(files) if i in held]


def _plot(report: AdaptReport, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['lo']}-{r['hi']}" for r in report.before]
    x = torch.arange(len(labels)).tolist()
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=120)
    ax.bar([i - 0.2 for i in x], [r["U"] for r in report.before], 0.4, label="before")
    ax.bar([i + 0.2 for i in x], [r["U"] for r in report.after], 0.4, label="after")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, labels)
    ax.set_xlabel("timestep band t")
    ax.set_ylabel("U (unrecovered fraction)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def adapt(
    inputs: Sequence[str | Path],
    out: str | Path,
    config: AdaptConfig | None = None,
    *,
    device: str = "auto",
    quiet: bool = False,
    resume: bool = False,
) -> AdaptReport:
    """Fine-tune ``config.init`` on the images ``inputs`` (files or folders of NIfTI files)
    and write the adapted model to ``out/model`` (see the module docstring).

    Raises:
        InputError: no usable image, an unusable base model, or a bad output folder (one
            line naming the file or option).
    """
    from ..model import DRDM
    from ..pretrained import resolve_model
    from .trainer import train

    config = config or AdaptConfig()
    out = Path(out)
    files = expand_files([str(p) for p in inputs], Path.cwd())
    if not files:
        raise InputError("adapt: no input image")
    try:
        base_dir = resolve_model(config.init)
        base = DRDM.from_pretrained(base_dir)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"init {config.init!r}: cannot load the base model ({first})") from None
    if base.preset != "drdm":
        raise InputError(
            f"init {config.init!r}: preset {base.preset!r}; only models of the package's own "
            "process (preset 'drdm') can be adapted"
        )
    base.engine = "torch"
    train_files, held_files = split_holdout(files, config.holdout, config.seed)
    notes = []
    if not held_files:
        held_files = list(train_files)
        notes.append("one file only: U is measured on the training image itself")
    size = tuple(base.image_size)
    lambda_reg = config.lambda_reg if config.lambda_reg is not None else 10.0 / max(size)
    data = DataConfig(
        image_size=size,
        files=tuple(str(p) for p in train_files),
        slice_axis=config.slice_axis,  # type: ignore[arg-type]
        intensity_percentiles=config.intensity_percentiles,
        augment=AugmentConfig(),
    )
    eval_data = dataclasses.replace(
        data, files=tuple(str(p) for p in held_files), augment=AugmentConfig(enabled=False)
    )
    held_images = build_training_data(eval_data, Path.cwd()).images
    if not quiet:
        print(
            f"drdm adapt: measuring U of {config.init!r} on {len(held_images)} held-out "
            f"image(s) from {len(held_files)} file(s)",
            flush=True,
        )
    before = recovery_table(base, held_images, config.eval_draws, config.seed)
    train_config = TrainConfig(
        seed=config.seed,
        network=base.network.config,
        forward=base.process.config,
        data=data,
        optim=OptimConfig(
            steps=1_000_000,  # the time limit ends the run
            batch_size=config.batch_size,
            lr=config.lr,
            lambda_reg=lambda_reg,
        ),
        output=OutputConfig(
            dir=str(out / "run"), checkpoint_every=config.checkpoint_every, keep_checkpoints=2
        ),
        init_from=str(base_dir),
    )
    start = time.perf_counter()
    result = train(
        train_config,
        base_dir=Path.cwd(),
        out_dir=out / "run",
        resume=resume,
        device=device,
        quiet=quiet,
        time_limit=config.time_limit,
    )
    seconds = time.perf_counter() - start
    if result.model_dir is None:
        raise InputError(f"{out / 'run'}: the fine-tuning ended without a model")
    adapted = DRDM.from_pretrained(result.model_dir)
    adapted.engine = "torch"
    if not quiet:
        print("drdm adapt: measuring U of the adapted model on the same draws", flush=True)
    after = recovery_table(adapted, held_images, config.eval_draws, config.seed)
    report = AdaptReport(
        model_dir=out / "model",
        train_files=train_files,
        holdout_files=held_files,
        before=before,
        after=after,
        steps=result.step,
        seconds=seconds,
        notes=notes,
    )
    adapted.training["adapt"] = {
        "base_model": str(config.init),
        "base_model_dir": str(base_dir),
        "settings": config.to_dict(),
        "lambda_reg": lambda_reg,
        "train_files": [{"name": p.name, "sha256": file_sha256(p)} for p in train_files],
        "holdout_files": [{"name": p.name, "sha256": file_sha256(p)} for p in held_files],
        "u_before": before,
        "u_after": after,
        "steps": result.step,
        "seconds": round(seconds, 1),
    }
    staging = out / "model.partial"
    if staging.exists():
        shutil.rmtree(staging)
    adapted.save_pretrained(staging)
    if report.model_dir.exists():
        shutil.rmtree(report.model_dir)
    staging.replace(report.model_dir)
    summary = {
        "model": str(report.model_dir),
        "base_model": str(config.init),
        "train_files": [str(p) for p in train_files],
        "holdout_files": [str(p) for p in held_files],
        "u_before": before,
        "u_after": after,
        "steps": result.step,
        "seconds": round(seconds, 1),
        "settings": config.to_dict(),
        "notes": notes,
    }
    atomic_write(out / "adapt.json", json.dumps(summary, indent=2) + "\n")
    mean_drop = sum(b["U"] - a["U"] for b, a in zip(before, after, strict=True)) / len(before)
    title = (
        f"drdm adapt: {config.init} on {len(train_files)} file(s), {result.step} steps; "
        f"held out {len(held_files)}; mean drop {mean_drop:.3f}"
    )
    _plot(report, out / "adapt_u.png", title)
    return report
