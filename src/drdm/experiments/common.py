"""Pieces shared by the segmentation and registration experiments."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .datasets import (
    LabelledImage,
    cardiac_phantoms,
    choose_subjects,
    split_subjects,
    thorax_phantoms,
)

__all__ = [
    "ExperimentData",
    "ExperimentResult",
    "RunInfo",
    "choose_from_pool",
    "describe_model",
    "load_model",
    "machine_line",
    "set_threads",
    "split_pool",
    "train_phantoms",
    "train_with_adam",
]


def set_threads(threads: int | None) -> int:
    """Apply ``torch.set_num_threads(threads)`` if given; return the number in use."""
    if threads is not None:
        if threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine_line(device: torch.device) -> str:
    """One line describing where the experiment ran (CPU count, threads, device)."""
    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    ) or platform.machine()
    omp = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (
        f"{device.type} ({where}); {os.cpu_count()} CPU cores visible, torch threads "
        f"{torch.get_num_threads()}, OMP_WAIT_POLICY={omp}; torch {torch.__version__}"
    )


def load_model(name: str, device: torch.device) -> Any:
    """``DRDM.from_pretrained(name)`` on ``device`` (a packaged name or a checkpoint folder)."""
    from ..model import DRDM

    return DRDM.from_pretrained(name, device=device)


def describe_model(name: str, model: Any) -> str:
    """A short description of a DRDM model for the table headers (grid, T, training notes)."""
    training = getattr(model, "training", {}) or {}
    notes = []
    for key in ("steps", "data", "note", "description"):
        if key in training:
            notes.append(f"{key}: {training[key]}")
    extra = f"; {'; '.join(str(n) for n in notes)}" if notes else ""
    size = "x".join(str(s) for s in model.image_size)
    return f"`{name}` ({model.ndim}D, grid {size}, T = {model.num_steps}, {model.preset}{extra})"


@dataclass
class RunInfo:
    """Wall-clock bookkeeping and a progress printer."""

    log: Callable[[str], None] | None = print
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(f"[{self.elapsed():7.1f} s] {message}")


def check_out_dir(out_dir: str | Path) -> Path:
    """The output folder (created); an existing non-folder is an :class:`InputError`."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise InputError(f"out_dir {path}: exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class ExperimentResult:
    """What an experiment run returns: the per-case rows, the output folder, the markdown
    table and the wall time in seconds."""

    rows: list[dict[str, Any]]
    out_dir: Path
    table: str
    seconds: float


# ------------------------------------------------------------------------------ data
@dataclass
class ExperimentData:
    """The images of an experiment: the held-out test images, the pool the training subjects
    are chosen from (empty for built-in phantoms, which are drawn anew per seed), the label
    classes ``{value: name}``, a description for the report, which built-in phantoms are used
    (``"phantoms"``: 2D cardiac, ``"thorax"``: 3D thorax; ``None``: a dataset folder) and the
    images' number of spatial axes."""

    test: list[LabelledImage]
    train_pool: list[LabelledImage]
    classes: dict[int, str]
    description: str
    phantoms: str | None
    ndim: int = 2


def split_pool(
    items: list[LabelledImage], num_test: int | None, data_seed: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """``(pool, test)``: the images of ``items`` split by subject
    (:func:`~drdm.experiments.datasets.split_subjects`), order kept."""
    pool_subjects, test_subjects = split_subjects(items, num_test, data_seed)
    test = [it for it in items if it.subject in set(test_subjects)]
    pool = [it for it in items if it.subject in set(pool_subjects)]
    return pool, test


def choose_from_pool(pool: list[LabelledImage], count: int, seed: int) -> list[LabelledImage]:
    """The images of ``count`` subjects of ``pool`` chosen by ``seed``
    (:func:`~drdm.experiments.datasets.choose_subjects`), order kept."""
    subjects = sorted({it.subject for it in pool})
    chosen = set(choose_subjects(subjects, count, seed))
    return [it for it in pool if it.subject in chosen]


def train_phantoms(
    kind: str, count: int, image_size: int, data_seed: int, seed: int, fov_mm: float
) -> list[LabelledImage]:
    """The training phantoms of experiment seed ``seed``: ``count`` new phantoms of ``kind``
    (``"phantoms"``: 2D cardiac with a ``fov_mm`` field of view, ``"thorax"``: 3D thorax),
    drawn from phantom seed ``data_seed + 1 + seed`` (the test phantoms use ``data_seed``)."""
    if kind == "thorax":
        return thorax_phantoms(count, image_size, data_seed + 1 + seed, prefix="train")
    return cardiac_phantoms(count, image_size, data_seed + 1 + seed, fov_mm, prefix="train")


# ------------------------------------------------------------------------------ training
def train_with_adam(
    net: torch.nn.Module,
    steps: int,
    lr: float,
    batch_loss: Callable[[], torch.Tensor],
    lr_decay: float | None = None,
) -> list[float]:
    """The experiments' optimisation loop: ``steps`` Adam steps (learning rate ``lr``) on the
    loss ``batch_loss()`` returns (it draws its own batch), the network in training mode.

    Args:
        lr_decay: if given, the learning rate is multiplied by ``lr_decay`` over the run
            (exponential schedule, ``gamma = lr_decay ** (1 / steps)`` per step).

    Returns the loss of every step.
    """
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = None
    if lr_decay is not None:
        gamma = lr_decay ** (1.0 / max(steps, 1))
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
    losses = []
    net.train()
    for _ in range(steps):
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()))
    return losses
