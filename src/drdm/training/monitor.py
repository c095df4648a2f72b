"""U per band of timesteps, measured on fixed images during training and by ``drdm adapt``.

``U = E|compose(psi_hat, psi_t)| / E|psi_t|`` (:func:`drdm.losses.unrecovered_fraction`) is
the part of the forward step ``psi_t`` the network leaves unrecovered: 1 for a network that
predicts nothing, 0 for an exact inverse. :func:`recovery_table` measures it per quarter of
``T`` on fixed forward draws (the same draws for the same seed, images and process, so two
models or two steps of one run are compared on identical steps). :class:`RecoveryMonitor`
does that every ``monitor.every`` steps of a training run and keeps ``recovery.csv`` and
``recovery.png`` in the run folder; ``recovery.csv`` also records the CPU time of the run
(this process's, the evaluations included, summed over resumed invocations).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..io.files import atomic_path
from ..losses import unrecovered_fraction
from .config import AugmentConfig, TrainConfig
from .data import build_training_data

__all__ = ["BAND_COUNT", "RecoveryMonitor", "plot_recovery", "recovery_bands", "recovery_table"]

#: U is reported for this many bands of timesteps: (0, T/4], (T/4, T/2], ...
BAND_COUNT = 4


def recovery_bands(num_steps: int) -> list[tuple[int, int]]:
    """The bands ``(lo, hi)`` (1-based, inclusive) U is reported for."""
    edges = [num_steps * k // BAND_COUNT for k in range(BAND_COUNT + 1)]
    return [(edges[k] + 1, edges[k + 1]) for k in range(BAND_COUNT) if edges[k + 1] > edges[k]]


def recovery_table(
    model: Any, images: torch.Tensor, draws: int, seed: int, batch: int = 8
) -> list[dict[str, float]]:
    """U per band for ``images`` ``(N, 1, *image_size)``: ``draws`` forward draws per image
    and band (pooled: ``sum |r| / sum |psi|`` over all of them). ``model``: a
    :class:`drdm.DRDM` (its :meth:`~drdm.DRDM.recovery_step`). Rows ``{"lo", "hi", "U"}``."""
    rows = []
    pool = images.repeat_interleave(draws, dim=0)
    for band, (lo, hi) in enumerate(recovery_bands(model.num_steps)):
        gen = torch.Generator().manual_seed(seed * 1_000 + band)
        residual = size = 0.0
        for start in range(0, pool.shape[0], batch):
            part = pool[start : start + batch]
            t = torch.randint(lo, hi + 1, (part.shape[0],), generator=gen)
            out = model.recovery_step(part, t, generator=gen, perturb=True)
            u = unrecovered_fraction(out.step, out.estimate, per_sample=True)
            mags = out.step.norm(dim=1).flatten(1).mean(1)
            residual += float((u * mags).sum())
            size += float(mags.sum())
        rows.append({"lo": lo, "hi": hi, "U": residual / max(size, 1e-30)})
    return rows


def plot_recovery(rows: list[dict[str, float]], path: Path, title: str) -> None:
    """``recovery.csv`` rows (``step`` and one ``U_lo-hi`` column per band) as U against
    steps, written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands = [k for k in rows[-1] if k.startswith("U_")]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    steps = [r["step"] for r in rows]
    for band in bands:
        ax.plot(steps, [r[band] for r in rows], marker=".", label=f"t {band[2:]}")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel("U (unrecovered fraction)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


class RecoveryMonitor:
    """U per band every ``config.monitor.every`` steps of a run (see :class:`MonitorConfig
    <drdm.training.config.MonitorConfig>`); rows in ``out/recovery.csv`` (rows past the
    resumed step are dropped, as for ``loss.csv``) and a plot in ``out/recovery.png``."""

    def __init__(self, config: TrainConfig, base_dir: Path, out: Path, start: int) -> None:
        self.config = config
        self.every = config.monitor.every
        self.csv = out / "recovery.csv"
        self.png = out / "recovery.png"
        self.images: torch.Tensor | None = None
        if self.every <= 0:
            return
        mon = config.monitor
        if not mon.files and mon.phantoms is None:
            raise ValueError("monitor: set monitor.files and/or monitor.phantoms (or every: 0)")
        data = dataclasses.replace(
            config.data,
            files=mon.files,
            phantoms=mon.phantoms,
            missing_files=config.data.missing_files,
            augment=AugmentConfig(enabled=False),
        )
        self.images = build_training_data(data, base_dir).images
        self.rows = [r for r in self._read() if r["step"] <= start]
        # CPU time of this process from here on, added to the last logged value of the run
        known = [
            r["cpu_seconds"] for r in self.rows if math.isfinite(r.get("cpu_seconds", math.nan))
        ]
        self.cpu_offset = (known[-1] if known else 0.0) - time.process_time()

    def _read(self) -> list[dict[str, float]]:
        if not self.csv.is_file():
            return []
        with open(self.csv, newline="", encoding="utf-8") as f:
            return [
                {k: float(v) if v else math.nan for k, v in row.items()}
                for row in csv.DictReader(f)
            ]

    def __call__(self, step: int, network: torch.nn.Module, final: bool = False) -> None:
        """Measure at ``step`` if it is due (or ``final``); ``network`` is left as it was."""
        if self.images is None or not (final or step % self.every == 0):
            return
        if self.rows and self.rows[-1]["step"] >= step:
            return
        from ..diffusion import ForwardDiffusion
        from ..model import DRDM

        was_training = network.training
        model = DRDM(
            network,
            ForwardDiffusion(self.config.forward),
            self.config.data.image_size,
            engine="torch",
        )
        table = recovery_table(
            model, self.images, self.config.monitor.draws, self.config.monitor.seed
        )
        network.train(was_training)
        row: dict[str, float] = {"step": float(step)}
        row.update({f"U_{r['lo']}-{r['hi']}": r["U"] for r in table})
        row["cpu_seconds"] = time.process_time() + self.cpu_offset
        self.rows.append(row)
        with atomic_path(self.csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(row), restval="")
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: (int(v) if k == "step" else f"{v:.5f}") for k, v in r.items()})
        plot_recovery(self.rows, self.png, f"U per band during training ({self.csv.parent.name})")
