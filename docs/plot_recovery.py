"""Figure: the unrecovered fraction U per band of timesteps, from saved recovery_eval outputs.

Reads the markdown tables that ``benchmarks/recovery_eval.py`` prints (saved in
``docs/results/``) and draws U against the band, one line per file:

    python docs/plot_recovery.py --out docs/figures/recovery_u.png \\
        --run "packaged default (real)=docs/results/recovery_default_real.md" ...
"""

from __future__ import annotations

import argparse
from pathlib import Path


def read_u(path: Path) -> tuple[list[str], list[float]]:
    """The ``t`` and ``U`` columns of a recovery_eval table."""
    bands, values = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and "-" in cells[0] and cells[0].replace("-", "").isdigit():
            bands.append(cells[0])
            values.append(float(cells[1]))
    if not bands:
        raise SystemExit(f"{path}: no recovery_eval table found")
    return bands, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="LABEL=FILE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.8), layout="constrained")
    for k, spec in enumerate(args.run):
        label, _, name = spec.partition("=")
        bands, values = read_u(Path(name))
        style = "--" if "phantom" in label else "-"
        ax.plot(bands, values, style, marker="o", color=f"C{k}", label=label)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.text(
        0.02,
        0.51,
        "issue 12 target from t = 21 (U ≤ 0.5)",
        fontsize=8,
        color="grey",
        transform=ax.get_yaxis_transform(),
    )
    ax.set_xlabel("band of timesteps t")
    ax.set_ylabel("unrecovered fraction U (1: nothing recovered)")
    ax.set_ylim(0.2, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("How much of the forward step each network recovers (each on its own grid)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
