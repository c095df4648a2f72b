"""Figure of the sampler's speed/quality trade-off from saved ``sampler_schedule.py`` outputs.

Reads the markdown that ``benchmarks/sampler_schedule.py`` prints (saved under
``docs/results/``): for every setting, the unrecovered fraction U relative to the full
sampler's (per timestep band, the authors' checkpoint, which recovers) and the mean |phi| of
Table 1 relative to the full sampler's (the packaged model), against the number of network
passes at T' = 55.

    python docs/plot_sampler_schedule.py --default docs/results/sampler_schedule_default.md \
        --official docs/results/sampler_schedule_official_*.md \
        --out docs/figures/sampler_schedule.png
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from drdm.viz import pyplot, save_figure

ROW = re.compile(r"^\| (stride [^|]+) \| (.+) \|$")


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the markdown table under the line starting with ``heading``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("###"):
            break
        match = ROW.match(line.strip())
        if match:
            rows.append([match.group(1), *[c.strip() for c in match.group(2).split("|")]])
    return rows


def passes(label: str) -> int:
    stride = int(re.search(r"stride (\d+)", label).group(1))  # type: ignore[union-attr]
    k = re.search(r"K = (\d+)", label)
    return len(range(55, 0, -stride)) * (int(k.group(1)) if k else 2)


def recovery(text: str) -> dict[str, float]:
    """Setting -> mean over bands of U / U_full."""
    out = {}
    for cells in table_rows(text, "### Unrecovered"):
        ratios = []
        for cell in cells[2:]:
            u, full = re.match(r"([\d.]+) \(([\d.]+)\)", cell).groups()  # type: ignore[union-attr]
            ratios.append(float(u) / float(full))
        out[cells[0]] = sum(ratios) / len(ratios)
    return out


def magnitude(text: str) -> dict[str, float]:
    """Setting -> mean over levels of mean|phi| / mean|phi| of the full sampler."""
    values: dict[str, list[float]] = {}
    for cells in table_rows(text, "### Table 1"):
        values.setdefault(cells[0], []).append(float(cells[2].split("±")[0]))
    full = values["stride 1"]
    return {k: sum(a / b for a, b in zip(v, full, strict=True)) / len(v) for k, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default", type=Path, required=True)
    parser.add_argument("--official", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ours = args.default.read_text()
    theirs: dict[str, float] = {}
    for path in args.official:
        theirs.update(recovery(path.read_text()))
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (
        (axes[0], theirs, "U / U of the full sampler\n(authors' checkpoint)"),
        (axes[1], magnitude(ours), "mean |φ| / full sampler's\n(packaged model, Table 1)"),
    )
    for ax, data, ylabel in panels:
        for rule, marker in (("composed", "o"), ("shares", "s"), ("velocity", "^")):
            points = sorted(
                (passes(k), v, k) for k, v in data.items() if rule in k and "K =" not in k
            )
            full = [(passes(k), v, k) for k, v in data.items() if k == "stride 1"]
            points = sorted(full + points)
            if len(points) > 1:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=rule)
                for x, y, k in points:
                    ax.annotate(k.split(",")[0].replace("stride ", "s="), (x, y), fontsize=7)
        ax.axhspan(0.9, 1.1, color="0.9", zorder=0, label="±10 %")
        ax.set_xscale("log")
        ax.set_xlabel("U-Net passes at T' = 55 (log)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle("fewer network calls: what the recovery keeps")
    fig.tight_layout()
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
