"""Result files of the experiments: CSV, markdown tables and box plots, written atomically."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.files import atomic_path

__all__ = [
    "box_plots",
    "example_grid",
    "mean_std",
    "per_seed_means",
    "pm",
    "triple_figure",
    "write_csv",
    "write_text",
]


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` (dicts) as CSV with the given column order, atomically; floats keep 6
    significant digits, non-finite values are written as ``inf``/``nan``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def per_seed_means(
    folders: Iterable[str | Path], metric: str = "dsc"
) -> dict[tuple[str, int], float]:
    """``(method, seed) -> mean`` of ``metric`` (a ``results.csv`` column: ``dsc`` as a
    fraction, ``asd_mm``, ``hd95_mm``, ...) over all test images and classes of segmentation
    result folders, non-finite values (empty masks) left out; several folders merge (e.g. seeds
    run in parallel processes). A ``(method, seed)`` found in two folders is an error."""
    result: dict[tuple[str, int], float] = {}
    for folder in folders:
        values: dict[tuple[str, int], list[float]] = {}
        with open(Path(folder) / "results.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                key = (row["method"], int(row["seed"]))
                values.setdefault(key, []).append(float(row[metric]))
        for key, vals in values.items():
            if key in result:
                raise ValueError(f"{folder}: method {key[0]!r} seed {key[1]} is in two folders")
            finite = [v for v in vals if math.isfinite(v)]
            result[key] = sum(finite) / len(finite) if finite else math.nan
    return result


def mean_std(values: Iterable[float]) -> tuple[float, float, int, int]:
    """``(mean, std, n_finite, n_nonfinite)`` over the finite values (std with ``ddof=0``;
    ``nan`` when there is no finite value)."""
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    bad = int(arr.size - finite.size)
    if finite.size == 0:
        return math.nan, math.nan, 0, bad
    return float(finite.mean()), float(finite.std()), int(finite.size), bad


def pm(values: Iterable[float], scale: float = 1.0, digits: int = 1) -> str:
    """``"mean ± std"`` of the finite values times ``scale``; a trailing ``†k`` counts the
    ``k`` non-finite values left out (an empty mask has no surface distance)."""
    mean, std, n, bad = mean_std(values)
    if n == 0:
        return "n/a" + (f" †{bad}" if bad else "")
    text = f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
    return text + (f" †{bad}" if bad else "")


def box_plots(
    path: str | Path,
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    title: str,
    ylabels: Mapping[str, str] | None = None,
) -> None:
    """One row of box plots, one panel per key of ``panels`` (e.g. a class or a metric), one
    box per method inside a panel; non-finite values are left out. Saved as PNG atomically."""
    from ..viz import pyplot, save_figure

    plt = pyplot()

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.6, 3.6), squeeze=False)
    for ax, (panel, groups) in zip(axes[0], panels.items(), strict=True):
        names = list(groups)
        data = []
        for name in names:
            arr = np.asarray(groups[name], dtype=np.float64)
            data.append(arr[np.isfinite(arr)])
        ax.boxplot(data, showmeans=True, meanprops={"marker": "^", "markersize": 5})
        ax.set_xticks(range(1, len(names) + 1), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(panel, fontsize=10)
        if ylabels and panel in ylabels:
            ax.set_ylabel(ylabels[panel])
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _show(ax, image: np.ndarray, label: np.ndarray | None = None) -> None:  # noqa: ANN001
    from ..viz import draw_contours

    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    if label is not None:
        draw_contours(ax, label, [int(v) for v in np.unique(label) if v != 0])
    ax.set_xticks([])
    ax.set_yticks([])


def example_grid(
    path: str | Path,
    rows: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray | None]]],
    title: str,
) -> None:
    """A grid of 2D images with label contours: one row per key (e.g. a method), the
    ``(image, label)`` pairs of the row from left to right. Saved as PNG atomically."""
    from ..viz import pyplot, save_figure

    plt = pyplot()

    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(1.6 * ncols + 0.8, 1.7 * len(rows) + 0.4), squeeze=False
    )
    for r, (name, items) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            if c < len(items):
                _show(ax, *items[c])
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def triple_figure(
    path: str | Path,
    triples: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    title: str,
) -> None:
    """Synthetic registration triples: per method, rows of ``moving | fixed | ddf`` (2D images,
    the field ``(2, H, W)`` in voxels drawn as a deformed grid over the fixed image)."""
    from ..viz import draw_grid, pyplot, save_figure

    plt = pyplot()

    n = sum(len(v) for v in triples.values())
    fig, axes = plt.subplots(n, 3, figsize=(5.6, 1.9 * n + 0.4), squeeze=False)
    r = 0
    for name, items in triples.items():
        for moving, fixed, ddf in items:
            _show(axes[r, 0], moving)
            _show(axes[r, 1], fixed)
            _show(axes[r, 2], fixed)
            step = max(2, fixed.shape[0] // 16)
            draw_grid(axes[r, 2], ddf, spacing=step)
            axes[r, 0].set_ylabel(name, fontsize=8)
            r += 1
    for c, text in enumerate(("moving", "fixed", "ddf_syn (grid)")):
        axes[0, c].set_title(text, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
