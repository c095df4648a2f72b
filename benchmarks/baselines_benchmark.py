"""Speed and field statistics of the baseline deformation samplers (drdm.baselines).

For each method and grid: milliseconds per field (median over ``--repeats`` batches of
``--batch`` images, a quarter of that in 3D), mean and maximum ``|u|`` in % of the image size
(averaged over all fields drawn) and the fraction of fields with any folding voxel (negative
Jacobian determinant). Prints a markdown table.

    OMP_NUM_THREADS=1 python3 benchmarks/baselines_benchmark.py [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from drdm.baselines import BigAug, ElasticSampler, MRBSSampler
from drdm.spatial import fold_ratio, magnitude_stats

GRIDS = [(2, (128, 128)), (2, (256, 256)), (3, (64, 64, 64)), (3, (128, 128, 128))]


def methods(ndim):
    return {
        "elastic": ElasticSampler(ndim),
        "mrbs": MRBSSampler(ndim),
        "bigaug (spatial)": BigAug(ndim).field_sampler(),
        "bigaug (intensity)": BigAug(ndim).intensity_transform(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), batch {args.batch}, median of {args.repeats}\n"
    )
    print("| method | grid | ms / image | mean |u| % | max |u| % | fields with folds |")
    print("|---|---|---|---|---|---|")
    for ndim, size in GRIDS:
        batch = args.batch if ndim == 2 else max(1, args.batch // 4)
        images = torch.rand(batch, 1, *size, generator=torch.Generator().manual_seed(0))
        for name, method in methods(ndim).items():
            times, means, maxes, folds = [], [], [], []
            for r in range(args.repeats):
                g = torch.Generator().manual_seed(r)
                start = time.perf_counter()
                out = method(images, g) if "intensity" in name else method.sample_ddf(images, g)
                times.append((time.perf_counter() - start) * 1000 / batch)
                if "intensity" not in name:
                    stats = magnitude_stats(out)
                    means += stats.mean_percent.tolist()
                    maxes += stats.max_percent.tolist()
                    folds += (fold_ratio(out) > 0).float().tolist()
            grid = "x".join(map(str, size))
            ms = statistics.median(times)
            if "intensity" in name:
                print(f"| {name} | {grid} | {ms:.1f} | | | |")
                continue
            print(
                f"| {name} | {grid} | {ms:.1f} | {statistics.mean(means):.2f} | "
                f"{statistics.mean(maxes):.2f} | {statistics.mean(folds):.2f} |"
            )


if __name__ == "__main__":
    main()
