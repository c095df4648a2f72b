"""Regenerate the figures shown in README.md and docs/ from the package itself.

python docs/make_figures.py [--training-run runs/default-2d]

``--training-run`` also draws the loss curves of a ``drdm train`` output folder (its
``loss.csv``) as ``docs/figures/default_2d_loss.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

from drdm.cli.main import main

FIGURES = Path(__file__).resolve().parent / "figures"


def run() -> None:
    FIGURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if main(["demo", "--out", tmp, "--seed", "0"]) != 0:
            raise SystemExit("drdm demo failed")
        copies = {
            "forward_2d.png": "forward_2d.png",
            "forward_3d.png": "forward_3d.png",
            "augment/overview.png": "demo_augment.png",
            "synth/overview.png": "demo_synth.png",
        }
        for source, name in copies.items():
            if not (Path(tmp) / source).is_file():
                print(f"skipped {name}: the demo wrote no {source} (no default model installed?)")
                continue
            shutil.copy(Path(tmp) / source, FIGURES / name)
            print(f"wrote {FIGURES / name}")


def plot_training(run_dir: Path) -> None:
    """The loss curves of a training run (``run_dir/loss.csv``) as default_2d_loss.png, with
    the step of the packaged default weights marked."""
    from drdm.pretrained import pretrained_dir
    from drdm.training.history import plot_losses

    with open(run_dir / "loss.csv", newline="", encoding="utf-8") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    config = json.loads((pretrained_dir("default") / "config.json").read_text())
    shipped = config.get("extra", {}).get("training", {}).get("steps")
    marks = {int(shipped): f"packaged weights (step {shipped})"} if shipped else None
    path = FIGURES / "default_2d_loss.png"
    title = f"training of the default 2D model ({len(rows)} steps)"
    plot_losses(rows, path, title=title, marks=marks)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="regenerate the docs figures")
    parser.add_argument("--training-run", type=Path, default=None)
    args = parser.parse_args()
    if args.training_run is not None:
        plot_training(args.training_run)
    run()
