"""U against CPU time for the diagnosis runs of issue 17 (``benchmarks/diagnose_overfit.py``
curves saved as JSON, and ``recovery.csv`` of ``drdm train`` runs with a monitor).

    python docs/plot_diagnosis.py --out docs/figures/diagnosis_u_cpu.png \
        --curve "fixed draw, 64=docs/results/diag/fixed.json" ...
        --run "gate: all t, M&Ms slice=runs/gate-mnms-2d"

A ``--run`` folder's U comes from its ``recovery.csv`` (the band 21-40 is drawn; ``--band``
picks another) and its CPU time from the same file's ``cpu_seconds`` or, for rows without
it, from ``loss.csv`` (the trainer's seconds per step, wall time of a one-thread process).
``--run "LABEL=FOLDER@MINUTES"`` shifts a run that continues another (``init_from``) to start
at that CPU minute.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--curve", action="append", default=[], help="LABEL=diagnose JSON")
    parser.add_argument("--run", action="append", default=[], help="LABEL=train run folder")
    parser.add_argument("--band", default="21-40")
    parser.add_argument("--target", type=float, default=0.6, help="dotted line: the goal U")
    parser.add_argument("--target-label", default="gate U = 0.6")
    parser.add_argument(
        "--title", default="Issue 17 diagnosis: U on held-out forward draws against CPU time"
    )
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for spec in args.curve:
        label, path = spec.rsplit("=", 1)
        curve = json.loads(Path(path).read_text())["curve"]
        xs = [p.get("cpu_seconds", p["seconds"]) / 60 for p in curve]
        ax.plot(xs, [p["U"][0] for p in curve], marker=".", label=label)
    for spec in args.run:
        label, folder = spec.rsplit("=", 1)
        folder, _, start = folder.partition("@")
        offset = float(start) if start else 0.0
        seconds: dict[int, float] = {}
        if (Path(folder) / "loss.csv").is_file():  # archived runs keep recovery.csv alone
            with open(Path(folder) / "loss.csv", newline="") as f:
                seconds = {int(float(r["step"])): float(r["seconds"]) for r in csv.DictReader(f)}
        with open(Path(folder) / "recovery.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        if any(r.get("cpu_seconds") for r in rows):  # rows logged before CPU time was kept
            rows = [r for r in rows if r.get("cpu_seconds")]
        # the run's CPU seconds where the monitor logged them, else the trainer's seconds per
        # step (wall time of a one-thread process) summed up to that step
        xs = [
            offset
            + (
                float(r["cpu_seconds"])
                if r.get("cpu_seconds")
                else sum(s for k, s in seconds.items() if k <= int(float(r["step"])))
            )
            / 60
            for r in rows
        ]
        ax.plot(xs, [float(r[f"U_{args.band}"]) for r in rows], marker="o", label=label)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.axhline(args.target, color="red", lw=0.8, ls=":", label=args.target_label)
    ax.set_xlabel("CPU minutes (one thread)")
    ax.set_ylabel("U (unrecovered fraction)")
    ax.set_title(args.title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out)


if __name__ == "__main__":
    main()
