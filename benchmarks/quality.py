"""Quality of generated deformations beside the paper's Table 1 (2D cardiac MRI).

For each level T' in {30, 45, 55, 65, 70}, generates >= 20 deformations of one real image with
a DRDM model and reports, as mean ± std over the deformations: the maximum and the mean
displacement magnitude |phi| in % of the image size, and the fold ratio (% of pixels with a
negative Jacobian determinant), beside the paper's values. The random starting fields
phi_{T':1} are summarised too. Usage (e.g. with the authors' checkpoint imported to /tmp):

    drdm import-official ../shared/data/official_drdm/cmr_recresacnet_000000.pth /tmp/official
    OMP_WAIT_POLICY=PASSIVE python benchmarks/quality.py --model /tmp/official

``--phantoms N`` deforms N held-out built-in phantoms instead (a seed no training config
uses; cycled over the deformations): cardiac slices for 2D models, thorax volumes of
``--phantom-size`` voxels per axis for 3D models (which always use phantoms):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/quality.py --model default-3d --samples 8
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from drdm import DRDM
from drdm.data.phantoms import cardiac_phantom_2d, thorax_phantom_3d
from drdm.io import read_volume
from drdm.spatial import fold_ratio, magnitude_stats

# Table 1 of the paper: T' -> (max |phi| %, mean |phi| %, fold ratio %), each (mean, std)
PAPER_TABLE1 = {
    30: ((7.8, 1.3), (2.4, 0.6), (0.7, 1.5)),
    45: ((10.4, 2.4), (3.0, 0.8), (0.9, 1.2)),
    55: ((11.8, 3.2), (3.3, 0.8), (2.4, 3.2)),
    65: ((12.7, 4.0), (3.6, 0.9), (6.6, 5.5)),
    70: ((14.8, 3.5), (4.3, 1.4), (9.8, 7.2)),
}
DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "samples"
    / "mnms_OpenDataset_162867.nii.gz"
)


def _fmt(values: torch.Tensor, digits: int = 1) -> str:
    return f"{values.mean().item():.{digits}f} ± {values.std().item():.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="packaged name or checkpoint dir")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="2D NIfTI image")
    parser.add_argument("--samples", type=int, default=20, help="deformations per level")
    parser.add_argument("--levels", type=int, nargs="+", default=list(PAPER_TABLE1))
    parser.add_argument("--batch", type=int, default=4, help="deformations per generate call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--phantoms", type=int, default=0, help="N held-out phantoms instead")
    parser.add_argument("--phantom-size", type=int, default=64, help="3D phantom side (voxels)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = DRDM.from_pretrained(args.model, device=args.device)
    if args.phantoms > 0 or model.ndim == 3:
        count = max(1, args.phantoms)
        gen = torch.Generator().manual_seed(1000)  # training configs use phantom seed 0
        if model.ndim == 2:
            images = [cardiac_phantom_2d(256, gen).image.float() for _ in range(count)]
        else:
            size = (args.phantom_size,) * 3
            images = [thorax_phantom_3d(size, gen).image.float() for _ in range(count)]
        source = f"{count} held-out phantoms (seed 1000) {tuple(images[0].shape)}"
    else:
        images = [torch.as_tensor(read_volume(args.image).array, dtype=torch.float32)]
        source = f"image {args.image.name} {tuple(images[0].shape)}"
    generator = torch.Generator().manual_seed(args.seed)
    print(
        f"model {args.model!r} (preset {model.preset!r}, model grid {model.image_size}, "
        f"T = {model.num_steps}); {source}; "
        f"{args.samples} deformations per level, seed {args.seed}"
    )
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    print()
    print(
        "| T' | max \\|φ\\| % | paper | mean \\|φ\\| % | paper | folds % | paper "
        "| random φ_T':1 mean % | random φ_T':1 folds % |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for level in args.levels:
        ddfs, initial = [], []
        remaining = args.samples
        k = 0
        while remaining > 0:
            n = min(args.batch, remaining)
            image = images[k % len(images)]
            k += 1
            out = model.generate(image, level, num_samples=n, generator=generator)
            ddfs.append(out.ddf.cpu())
            initial.append(out.initial_ddf.cpu())
            remaining -= n
        ddf, init = torch.cat(ddfs).double(), torch.cat(initial).double()
        stats, folds = magnitude_stats(ddf), fold_ratio(ddf) * 100
        init_stats, init_folds = magnitude_stats(init), fold_ratio(init) * 100
        paper = PAPER_TABLE1.get(level)
        p = [f"{m} ± {s}" for m, s in paper] if paper else ["–"] * 3
        print(
            f"| {level} | {_fmt(stats.max_percent)} | {p[0]} | {_fmt(stats.mean_percent)} "
            f"| {p[1]} | {_fmt(folds)} | {p[2]} | {_fmt(init_stats.mean_percent)} "
            f"| {_fmt(init_folds)} |",
            flush=True,
        )
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
