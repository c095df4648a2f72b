"""At what image resolution is the recoverable part of a forward step visible?

The authors' checkpoint, converted to our forward process (drdm.training.distill: timestep
matched by magnitude, output scaled by the least-squares factor), recovers about half of our
steps on the real slice when it sees the deformed image at its own 256 x 256 resolution. A
student network on a coarser model grid only ever sees the image at that grid. This script
shows the teacher the *same* deformations two ways, per model grid G in ``--grids``:

* ``sharp``: the 256 x 256 image warped by the field (what the teacher was trained on);
* ``from grid G``: the image area-resized to G x G, warped there (what a G-grid student sees),
  then bilinearly upsampled back to 256 x 256 for the teacher;

and reports the unrecovered fraction U (least-squares scale fitted per case on the same draws,
so U is the best any rescaling of the teacher could reach). If U stays near 1 from the coarse
image, the information the teacher recovers from lives in image detail finer than G.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/teacher_resolution.py \\
        --teacher ../shared/data/official_drdm/cmr_recresacnet_000000.pth
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from drdm import DRDM
from drdm.io import read_volume
from drdm.spatial import compose, resize_ddf, warp
from drdm.training.distill import TeacherTargets, downsample, load_teacher

DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[2] / "shared/data/samples/mnms_OpenDataset_162867.nii.gz"
)
DEFAULT_TEACHER = (
    Path(__file__).resolve().parents[2] / "shared/data/official_drdm/cmr_recresacnet_000000.pth"
)


def unrecovered(step: torch.Tensor, psi_hat: torch.Tensor) -> float:
    """``U = E|compose(psi_hat, step)| / E|step|``."""
    return float(compose(psi_hat, step).norm(dim=1).mean() / step.norm(dim=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--model", default="default", help="whose forward process (ours)")
    parser.add_argument("--grids", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--draws", type=int, default=3, help="batches of 4 per band")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    process = DRDM.from_pretrained(args.model).process
    teacher = load_teacher(args.teacher, cpu)
    image = torch.as_tensor(read_volume(args.image).array, dtype=torch.float32)[None, None]
    full = tuple(image.shape[2:])
    print(
        f"teacher {args.teacher.name} at {full}; forward process of {args.model!r}; image "
        f"{args.image.name}; {args.draws} x 4 draws per band, seed {args.seed}; "
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}\n"
    )
    print("| model grid | t | U, teacher sees the sharp image | U, teacher sees the grid's image |")
    print("|---|---|---|---|")
    for grid in args.grids:
        size = (grid, grid)
        small = downsample(image, size)
        targets = TeacherTargets(teacher, process, size, full)
        cal = targets.calibrate(
            lambda n, s=small: (image.expand(n, -1, -1, -1), s.expand(n, -1, -1, -1)),
            torch.Generator().manual_seed(args.seed + 100),
            cpu,
            batches_per_band=2,
        )
        generator = torch.Generator().manual_seed(args.seed)
        for lo, hi in [(1, 20), (21, 40), (41, 60), (61, 80)]:
            sums = {"sharp": [0.0, 0.0, []], "grid": [0.0, 0.0, []]}
            for _ in range(args.draws):
                t = torch.randint(lo, hi + 1, (4,), generator=generator)
                with torch.inference_mode():
                    fwd = process.sample(
                        small.expand(4, -1, -1, -1), t, generator=generator, perturb=True
                    )
                    sharp = warp(image.expand(4, -1, -1, -1), resize_ddf(fwd.cumulative, full))
                    coarse = F.interpolate(fwd.images, size=full, mode="bilinear")
                    for name, seen in (("sharp", sharp), ("grid", coarse)):
                        raw = teacher.network(seen, cal.teacher_timestep[t - 1])
                        p = resize_ddf(raw, size)
                        acc = sums[name]
                        acc[0] += float((fwd.step * -p).sum())
                        acc[1] += float((p * p).sum())
                        acc[2].append((fwd.step, p))
            u = {}
            for name, (num, den, pairs) in sums.items():
                scale = num / den if den > 0 else 0.0
                u[name] = sum(unrecovered(s, scale * p) for s, p in pairs) / len(pairs)
            print(f"| {grid} | {lo}-{hi} | {u['sharp']:.2f} | {u['grid']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
