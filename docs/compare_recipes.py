"""Paired comparison of augmentation methods over seeds, from ``drdm experiment segment``
result folders (several folders merge: seeds run in parallel processes).

    python docs/compare_recipes.py results/stack32a results/stack32b \
        --reference bigaug --out docs/figures/experiments/stack_paired.png

Within a seed every method trains on the same images, from the same initial weights, with the
same batch order and number of copies and steps, so the per-seed DSC difference between two
methods is a paired measurement. For every method the script prints the mean DSC (± standard
error over seeds), the mean paired difference to ``--reference`` (± standard error), in how
many seeds the method is ahead, the two-sided p-values of the paired t-test and of the
Wilcoxon signed-rank test, and the mean ASD and HD95 (mm, over seeds of the per-seed means;
empty masks left out); ``--versus A,B`` adds the same line for one more pair. The figure
shows every seed's paired difference to the reference, with the mean and its 95 % confidence
interval (Student's t).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy import stats

from drdm.experiments.report import per_seed_means


def paired_line(name: str, values: np.ndarray, reference: np.ndarray, extra: str = "") -> str:
    """One markdown row: DSC, paired difference, wins, p-values (values in %), ``extra``."""
    diff = values - reference
    n = len(diff)
    se = diff.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    wins = int((diff > 0).sum())
    if n > 1 and np.any(diff != 0):
        p_t = float(stats.ttest_rel(values, reference).pvalue)
        p_w = float(stats.wilcoxon(values, reference).pvalue)
        p_text = f"{p_t:.3f} | {p_w:.3f}"
    else:
        p_text = "- | -"
    dsc_se = values.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    return (
        f"| {name} | {values.mean():.1f} ± {dsc_se:.1f} | {diff.mean():+.1f} ± {se:.1f} | "
        f"{wins}/{n} | {p_text} |{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="segmentation result folders")
    parser.add_argument("--reference", required=True, help="the method to compare against")
    parser.add_argument("--versus", action="append", default=[], help="A,B: also A against B")
    parser.add_argument(
        "--methods",
        help="comma-separated methods to show (default: all; the seeds used are "
        "those every shown method has)",
    )
    parser.add_argument("--out", type=Path, help="PNG of the per-seed paired differences")
    args = parser.parse_args()

    table = per_seed_means(args.folders)
    asd, hd95 = (per_seed_means(args.folders, m) for m in ("asd_mm", "hd95_mm"))
    methods = list(dict.fromkeys(m for m, _ in table))
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in methods]
        if unknown:
            raise SystemExit(f"--methods: {unknown} not among {methods}")
        methods = wanted
    if args.reference not in methods:
        raise SystemExit(f"--reference {args.reference}: not among {methods}")
    seeds = sorted(set.intersection(*({s for m2, s in table if m2 == m} for m in methods)))

    def dsc(method: str) -> np.ndarray:
        if method not in methods:
            raise SystemExit(f"method {method!r} not among {methods}")
        return np.array([table[(method, s)] * 100 for s in seeds])

    ref = dsc(args.reference)
    print(f"Seeds {seeds[0]}-{seeds[-1]} ({len(seeds)}); DSC % mean ± s.e. over seeds; ")
    print(f"Δ: paired per-seed difference to `{args.reference}`, mean ± s.e.\n")
    print(
        f"| method | DSC | Δ vs {args.reference} | ahead in | p (t-test) | p (Wilcoxon) "
        "| ASD (mm) | HD95 (mm) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for method in methods:
        distances = "".join(
            f" {np.nanmean([d[(method, s)] for s in seeds]):.2f} |" for d in (asd, hd95)
        )
        print(paired_line(method, dsc(method), ref, distances))
    for pair in args.versus:
        a, _, b = pair.partition(",")
        print(f"\n| method | DSC | Δ vs {b} | ahead in | p (t-test) | p (Wilcoxon) |")
        print("|---|---|---|---|---|---|")
        print(paired_line(a, dsc(a), dsc(b)))

    if args.out is None:
        return
    from drdm.viz import pyplot, save_figure

    others = [m for m in methods if m != args.reference]
    fig, ax = pyplot().subplots(figsize=(1.2 + 1.1 * len(others), 4), layout="constrained")
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(seeds))  # fixed, for legibility
    for k, method in enumerate(others):
        diff = dsc(method) - ref
        ax.scatter(k + jitter, diff, s=14, alpha=0.7)
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
        ax.errorbar(k + 0.3, diff.mean(), half, fmt="D", color="black", capsize=3)
    ax.axhline(0.0, color="grey", lw=1)
    ax.set_xticks(range(len(others)), others, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"DSC % minus {args.reference} (same seed)")
    ax.set_title(f"per-seed paired differences, {len(seeds)} seeds (mean, 95 % CI)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, args.out, dpi=100)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
