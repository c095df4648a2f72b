"""Regenerate the figures shown in README.md and docs/ from the package itself.

python docs/make_figures.py
"""

from __future__ import annotations

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


if __name__ == "__main__":
    run()
