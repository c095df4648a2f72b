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
        for name in ("forward_2d.png", "forward_3d.png"):
            shutil.copy(Path(tmp) / name, FIGURES / name)
            print(f"wrote {FIGURES / name}")


if __name__ == "__main__":
    run()
