"""Speed, memory and field statistics of the forward process at t = T = 80.

For 2D 256x256 and 3D 128^3 at batch 1 and 8, the package's implementation
(``integration="exp"``) is timed beside the straightforward reference written to the paper
(``integration="compose"``: unit DVFs composed one at a time, one sample at a time, on the same
control grid). Every configuration runs in a fresh subprocess so its peak resident memory
(``ru_maxrss``) is its own.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/forward_benchmark.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

CASES = [(2, 256, 1), (2, 256, 8), (3, 128, 1), (3, 128, 8)]


def run_one(
    ndim: int, size: int, batch: int, integration: str, repeats: int, threads: int, stats_n: int
) -> dict:
    import torch

    from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
    from drdm.spatial import fold_ratio, magnitude_stats

    torch.set_num_threads(threads)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    process = ForwardDiffusion(ForwardDiffusionConfig(ndim=ndim, integration=integration))
    images = torch.rand(batch, 1, *([size] * ndim), generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    t = torch.full((batch,), 80)
    times, means, maxes, folds = [], [], [], []
    runs = 0
    while runs < repeats or len(means) < stats_n:  # untimed extra draws for the statistics
        start = time.perf_counter()
        out = process.sample(images, t, generator=generator)
        if runs < repeats:
            times.append(time.perf_counter() - start)
        runs += 1
        stats = magnitude_stats(out.cumulative)
        means += stats.mean_percent.tolist()
        maxes += stats.max_percent.tolist()
        folds += (fold_ratio(out.cumulative) * 100).tolist()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "per_sample_s": min(times) / batch,
        "peak_mb": peak,
        "baseline_mb": baseline,
        "mean_pct": sum(means) / len(means),
        "max_pct": sum(maxes) / len(maxes),
        "fold_pct": sum(folds) / len(folds),
        "samples": len(means),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the fast method")
    parser.add_argument("--reference-repeats", type=int, default=1)
    parser.add_argument(
        "--stats-2d", type=int, default=32, help="samples for the 2D field statistics"
    )
    parser.add_argument("--stats-3d", type=int, default=8, help="samples for the 3D statistics")
    parser.add_argument("--one", nargs=5, metavar=("NDIM", "SIZE", "BATCH", "METHOD", "STATS"))
    args = parser.parse_args()
    if args.one:
        ndim, size, batch, method, stats_n = args.one
        repeats = args.repeats if method == "exp" else args.reference_repeats
        result = run_one(
            int(ndim), int(size), int(batch), method, repeats, args.threads, int(stats_n)
        )
        print(json.dumps(result))
        return

    omp = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(
        f"forward process at t = 80 (T = 80), default ForwardDiffusionConfig; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {args.threads}, OMP_WAIT_POLICY={omp}; "
        f"time per sample: best of {args.repeats} runs (drdm), {args.reference_repeats} "
        f"run(s) (reference); statistics over >= {args.stats_2d} (2D) / {args.stats_3d} (3D) "
        f"samples each"
    )
    header = (
        "| case | batch | method | s / sample | speed-up | peak RSS MB (after import) "
        "| mean |phi| % | max |phi| % | folds % |"
    )
    print(header)
    print("|" + "---|" * 9)
    for ndim, size, batch in CASES:
        results = {}
        for method in ("exp", "compose"):
            stats_n = args.stats_2d if ndim == 2 else args.stats_3d
            cmd = [sys.executable, __file__, "--one", str(ndim), str(size), str(batch), method]
            cmd += [str(stats_n)]
            cmd += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
            cmd += ["--reference-repeats", str(args.reference_repeats)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[method] = json.loads(done.stdout.strip().splitlines()[-1])
        ratio = results["compose"]["per_sample_s"] / results["exp"]["per_sample_s"]
        for method, label in (("exp", "drdm (exp)"), ("compose", "reference")):
            r = results[method]
            speedup = ratio if method == "exp" else 1.0
            print(
                f"| {ndim}D {size}^{ndim} | {batch} | {label} | {r['per_sample_s']:.3f} | "
                f"{speedup:.1f}x | {r['peak_mb']:.0f} ({r['baseline_mb']:.0f}) | "
                f"{r['mean_pct']:.2f} | {r['max_pct']:.2f} | {r['fold_pct']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
