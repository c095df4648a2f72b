"""``drdm adapt`` on a family the base model has not seen: U on held-out images before and
after fine-tuning, against CPU time.

The packaged 2D ``default`` model was trained on cardiac short-axis phantoms and one real
cardiac MRI slice. This benchmark writes axial slices of built-in 3D *thorax* phantoms (lungs,
body outline, vessels: another anatomy) as NIfTI files, holds out a fifth of them, and runs
:func:`drdm.training.adapt.adapt` for ``--time-limit`` seconds (one thread).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/adapt_benchmark.py --time-limit 1200 \
        --out results/adapt_thorax > docs/results/adapt_thorax.md
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from drdm.data.phantoms import thorax_phantom_3d
from drdm.training.adapt import AdaptConfig, adapt


def write_slices(folder: Path, volumes: int, seed: int) -> list[Path]:
    """The central axial slice of each of ``volumes`` 64^3 thorax phantoms (one file per
    phantom, so the held-out files share no anatomy with the training files)."""
    gen = torch.Generator().manual_seed(seed)
    paths = []
    for v in range(volumes):
        vol = thorax_phantom_3d((64, 64, 64), gen).image.float().numpy()
        path = folder / f"thorax{v:02d}.nii.gz"
        array = vol[:, :, 32].astype(np.float32)[:, :, None]
        nib.save(nib.Nifti1Image(array, np.diag([5.0, 5.0, 5.0, 1.0])), str(path))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default="default")
    parser.add_argument("--time-limit", type=float, default=1200.0, help="seconds")
    parser.add_argument("--volumes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: temporary)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        files = write_slices(data, args.volumes, args.seed)
        out = args.out if args.out is not None else Path(tmp) / "adapt"
        cpu0, wall0 = time.process_time(), time.perf_counter()
        report = adapt(
            files,
            out,
            AdaptConfig(init=args.init, time_limit=args.time_limit, lr=args.lr, seed=args.seed),
            device="cpu",
            quiet=True,
        )
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(
        f"drdm adapt, base {args.init!r}, on the central axial slices of "
        f"{len(report.train_files)} thorax phantoms (held out: {len(report.holdout_files)} other "
        f"phantoms); "
        f"time limit {args.time_limit:g} s, lr {args.lr:g}, {report.steps} steps; "
        f"{cpu / 60:.1f} CPU-min in all ({wall / 60:.1f} min wall, evaluation included); "
        f"{platform.machine()}, torch {torch.__version__}, 1 thread, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}\n"
    )
    print(report.table())


if __name__ == "__main__":
    main()
