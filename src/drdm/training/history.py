"""A training run's loss history and progress: ``loss.csv``, ``loss.png`` and the progress bar.

``loss.csv`` holds one row per step with the columns :data:`LOSS_COLUMNS`: the step, the
loss of Eq. 14 (``total``, with the weighted distillation term when there is a teacher), its
three terms, the distillation term, the mean timestep of the batch and the step's seconds.
:func:`plot_losses` draws it (``loss.png``); :class:`ProgressPrinter` shows the running
means while the trainer (:mod:`drdm.training.trainer`) runs.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from ..io.files import atomic_path, atomic_write

__all__ = [
    "LOSS_COLUMNS",
    "LOSS_TERMS",
    "ProgressPrinter",
    "csv_row",
    "loss_row",
    "plot_losses",
    "read_history",
    "write_history",
]

LOSS_COLUMNS = (
    "step",
    "total",
    "distance",
    "angle",
    "regularisation",
    "distill",
    "t_mean",
    "seconds",
)
LOSS_TERMS = ("total", "distance", "angle", "regularisation", "distill")


def read_history(path: Path, up_to: int | None = None) -> list[dict[str, float]]:
    """The rows of ``loss.csv`` (``LOSS_COLUMNS`` keys, floats) up to step ``up_to``; none when
    the file is missing; unreadable rows are skipped."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            row.setdefault("distill", "0")  # files written before distillation existed
            try:
                parsed = {k: float(row[k]) for k in LOSS_COLUMNS}
            except (KeyError, TypeError, ValueError):
                continue
            if up_to is None or parsed["step"] <= up_to:
                rows.append(parsed)
    return rows


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """Write ``rows`` as ``loss.csv`` (header and rows, replaced atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(LOSS_COLUMNS)
        for row in rows:
            writer.writerow(csv_row(row))


def csv_row(row: dict[str, float]) -> list[str]:
    """The fields of one ``loss.csv`` line (the step as an integer, the rest to 7 digits)."""
    return [str(int(row["step"]))] + [f"{row[k]:.7g}" for k in LOSS_COLUMNS[1:]]


def loss_row(step: int, seconds: float, values: Tensor) -> dict[str, float]:
    """One row of ``loss.csv`` from the step, its seconds and the values of a step
    ``(total, distance, angle, regularisation, distill, mean t)``."""
    row = {"step": float(step), "seconds": seconds, "t_mean": float(values[5])}
    row.update({k: float(v) for k, v in zip(LOSS_TERMS, values[:5].tolist(), strict=True)})
    return row


def plot_losses(
    rows: list[dict[str, float]],
    path: str | Path,
    title: str = "",
    marks: dict[int, str] | None = None,
) -> None:
    """Write the loss curves (total, the three Eq. 14 terms and the distillation term, when
    there is one, against the step) as a PNG:
    raw values faintly, a moving average on top; ``marks`` maps steps to labels drawn as
    vertical lines (e.g. the step of the weights that were kept)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n in LOSS_TERMS if n != "distill" or any(r.get(n, 0.0) for r in rows)]
    fig = Figure(figsize=(10 if len(names) <= 4 else 14, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2 if len(names) <= 4 else 3).ravel()
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    steps = [r["step"] for r in rows]
    window = max(1, len(rows) // 50)
    for ax, name in zip(axes, names, strict=False):
        values = [r.get(name, 0.0) for r in rows]
        ax.plot(steps, values, color="tab:blue", alpha=0.3, lw=0.8, label="per step")
        if window > 1 and len(values) >= window:
            kernel = torch.ones(window, dtype=torch.float64) / window
            smooth = torch.nn.functional.conv1d(
                torch.tensor(values, dtype=torch.float64).view(1, 1, -1), kernel.view(1, 1, -1)
            ).flatten()
            ax.plot(
                steps[window - 1 :],
                smooth.tolist(),
                color="tab:blue",
                lw=1.8,
                label=f"mean of {window}",
            )
        for k, (step, label) in enumerate((marks or {}).items()):
            ax.axvline(step, color=f"C{k + 1}", ls="--", lw=1.2, label=label)
        if marks or (window > 1 and len(values) >= window):
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(path, buf.getvalue())


class ProgressPrinter:
    """Progress bar on a terminal, else periodic lines (rank 0, unless quiet)."""

    def __init__(
        self,
        enabled: bool,
        total: int,
        initial: int,
        log_every: int,
        time_limit: float | None = None,
    ) -> None:
        self.enabled = enabled
        self.log_every = log_every
        self.total = total
        self.bar = None
        # with a time limit the bar counts seconds (the steps it allows are unknown)
        self.time_limit = time_limit
        self.start = time.perf_counter()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            if time_limit is not None:
                self.bar = tqdm(total=round(time_limit), desc="train", dynamic_ncols=True, unit="s")
            else:
                self.bar = tqdm(
                    total=total, initial=initial, desc="train", dynamic_ncols=True, unit="step"
                )

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def update(self, step: int, ema: dict[str, float], seconds: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{ema['total']:.4f}",
                dist=f"{ema['distance']:.3f}",
                ang=f"{ema['angle']:.3f}",
                reg=f"{ema['regularisation']:.4f}",
                refresh=False,
            )
            if self.time_limit is None:
                self.bar.update(1)
            else:
                self.bar.set_description(f"train, step {step}", refresh=False)
                elapsed = min(time.perf_counter() - self.start, float(self.bar.total))
                self.bar.update(max(0, round(elapsed) - self.bar.n))
        elif step % self.log_every == 0 or step == self.total:
            print(
                f"step {step}/{self.total}  loss {ema['total']:.4f}  (distance "
                f"{ema['distance']:.4f}, angle {ema['angle']:.4f}, regularisation "
                f"{ema['regularisation']:.5f}; running means)  {seconds:.2f} s/step",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
