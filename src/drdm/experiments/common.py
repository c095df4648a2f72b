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

__all__ = ["RunInfo", "describe_model", "load_model", "machine_line", "set_threads"]


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


def check_out_dir(out: str | Path) -> Path:
    """The output folder (created); an existing non-folder is an :class:`InputError`."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path}: exists and is not a directory")
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
