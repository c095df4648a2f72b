"""Held-out DSC against the number of augmented copies, from several ``drdm experiment segment``
result folders that differ only in ``--copies``.

    python docs/plot_copies.py --run 4=results/copies4 --run 8=results/recipes \
        --run 16=results/copies16 --method none --method elastic --method bigaug \
        --method drdm=drdm@32/48 --out docs/figures/experiments/copies_dsc.png

``--run COPIES=DIR[,DIR...]`` may list several folders of one setting (e.g. seeds run in
parallel processes). ``--method NAME[=ALIAS,...]`` names a row of the plot and the method
strings that stand for it in the folders (``drdm`` without levels in one run is
``drdm@32/48`` in another). Only seeds present in every setting are used. Prints a markdown
table (mean ± standard error over seeds of the per-seed mean DSC, averaged over the classes
and test images) and writes the figure.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from drdm.experiments.report import per_seed_means


def parse_pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, _, rest = value.partition("=")
        if not key:
            raise SystemExit(f"{option} {value!r}: expected KEY=VALUE")
        pairs.append((key, rest))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="COPIES=FOLDER[,FOLDER]")
    parser.add_argument("--method", action="append", required=True, help="NAME[=ALIAS,...]")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()

    runs = [(int(c), [Path(d) for d in ds.split(",")]) for c, ds in parse_pairs(args.run, "--run")]
    methods = [(name, [name, *filter(None, aliases.split(","))]) for name, aliases in
               parse_pairs(args.method, "--method")]  # fmt: skip
    tables = {copies: per_seed_means(folders) for copies, folders in runs}

    def values(copies: int, aliases: list[str]) -> dict[int, float]:
        found = {s: v for (m, s), v in tables[copies].items() if m in aliases}
        if not found:
            raise SystemExit(f"no results for {aliases[0]} in the {copies}-copies folder")
        return found

    seeds = sorted(set.intersection(*(set(values(c, a)) for c, _ in runs for _, a in methods)))
    stats: dict[str, list[tuple[int, float, float]]] = {}
    for name, aliases in methods:
        for copies, _ in sorted(runs):
            v = [values(copies, aliases)[s] * 100 for s in seeds]
            mean = sum(v) / len(v)
            sd = math.sqrt(sum((x - mean) ** 2 for x in v) / max(1, len(v) - 1))
            stats.setdefault(name, []).append((copies, mean, sd / math.sqrt(len(v))))

    copies_list = [c for c, _ in sorted(runs)]
    print(f"DSC % (mean ± standard error over seeds {seeds}):\n")
    print("| method | " + " | ".join(f"{c} copies" for c in copies_list) + " |")
    print("|---|" + "---|" * len(copies_list))
    for name, points in stats.items():
        print(f"| {name} | " + " | ".join(f"{m:.1f} ± {e:.1f}" for _, m, e in points) + " |")

    from drdm.viz import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 4), layout="constrained")
    for k, (name, points) in enumerate(stats.items()):
        x = [c * (1 + 0.03 * (k - len(stats) / 2)) for c, _, _ in points]  # dodge
        ax.errorbar(x, [m for _, m, _ in points], [e for _, _, e in points], marker="o",
                    capsize=3, label=name)  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(copies_list, [str(c) for c in copies_list])
    ax.set_xlabel("augmented copies per training image")
    ax.set_ylabel("held-out DSC % (mean ± s.e. over seeds)")
    ax.set_title(f"2 labelled phantoms, {len(seeds)} seeds, same steps for all")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, args.out, dpi=100)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
