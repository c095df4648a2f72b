"""Figures of images and deformations (matplotlib, written as PNG).

Images are shown with array axis 0 vertical and axis 1 horizontal (``imshow`` of the array as
stored, no flips); 3D volumes are shown as their central slice along a chosen axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .io import atomic_path, file_stem
from .spatial import jacobian_det

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot():  # noqa: ANN201 - returns the pyplot module
    """matplotlib's pyplot with the non-interactive Agg backend (unless one is set)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def central_slice(array: np.ndarray, axis: int = 0) -> np.ndarray:
    """The middle slice of a 3D array along ``axis`` (2D arrays are returned unchanged)."""
    if array.ndim == 2:
        return array
    return np.take(array, array.shape[axis] // 2, axis=axis)


def _in_plane(ddf: np.ndarray, axis: int) -> np.ndarray:
    """``(ndim, *spatial)`` field -> ``(2, H, W)`` in-plane components of the displayed slice."""
    if ddf.shape[0] == 2:
        return ddf
    keep = [i for i in range(3) if i != axis]
    return np.stack([central_slice(ddf[i], axis) for i in keep])


def draw_grid(ax, ddf2d: np.ndarray, spacing: int = 8, color: str = "tab:orange") -> None:  # noqa: ANN001
    """Draw the deformed grid ``x + u(x)`` of a 2D field ``(2, H, W)`` (voxels) on ``ax``."""
    h, w = ddf2d.shape[1:]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos_r = rows + ddf2d[0]
    pos_c = cols + ddf2d[1]
    for r in range(0, h, spacing):
        ax.plot(pos_c[r, :], pos_r[r, :], color=color, lw=0.6)
    for c in range(0, w, spacing):
        ax.plot(pos_c[:, c], pos_r[:, c], color=color, lw=0.6)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_aspect("equal")


def jacobian_map(ddf: np.ndarray) -> np.ndarray:
    """Jacobian determinant of a ``(ndim, *spatial)`` voxel field as an array ``spatial``."""
    return jacobian_det(torch.as_tensor(ddf, dtype=torch.float64)[None])[0, 0].numpy()


def deformation_figure(
    path: str | Path,
    originals: Sequence[np.ndarray],
    deformed: Sequence[np.ndarray],
    ddfs: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    slice_axis: int = 0,
    grid_spacing: int | None = None,
) -> None:
    """One row per sample: original, deformed, deformation grid, Jacobian determinant.

    ``originals`` / ``deformed``: arrays of the spatial shape; ``ddfs``: ``(ndim, *spatial)``
    in voxels. 3D data are shown as central slices along ``slice_axis``. Written atomically.
    """
    plt = pyplot()
    n = len(originals)
    fig, axes = plt.subplots(n, 4, figsize=(12, 3.1 * n), squeeze=False)
    for row in range(n):
        orig = central_slice(np.asarray(originals[row]), slice_axis)
        defo = central_slice(np.asarray(deformed[row]), slice_axis)
        ddf = np.asarray(ddfs[row])
        det_full = jacobian_map(ddf)
        det = central_slice(det_full, slice_axis)
        plane = _in_plane(ddf, slice_axis)
        vmax = float(max(orig.max(), defo.max())) or 1.0
        label = titles[row] if titles else ""
        axes[row, 0].imshow(orig, cmap="gray", vmin=0, vmax=vmax)
        axes[row, 0].set_title(f"original {label}".strip(), fontsize=9)
        axes[row, 1].imshow(defo, cmap="gray", vmin=0, vmax=vmax)
        axes[row, 1].set_title(f"deformed {label}".strip(), fontsize=9)
        axes[row, 2].imshow(defo, cmap="gray", vmin=0, vmax=vmax)
        draw_grid(axes[row, 2], plane, spacing=grid_spacing or max(4, max(orig.shape) // 24))
        magnitude = np.sqrt((ddf**2).sum(axis=0)).max()
        axes[row, 2].set_title(f"deformation grid (max |u| {magnitude:.1f} vox)", fontsize=9)
        im = axes[row, 3].imshow(det, cmap="RdBu_r", vmin=0.0, vmax=2.0)
        folds = float((det_full < 0).mean() * 100)
        axes[row, 3].set_title(f"det J (folds {folds:.2f} %)", fontsize=9)
        fig.colorbar(im, ax=axes[row, 3], fraction=0.046, pad=0.04)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:  # noqa: ANN001
    """Save a matplotlib figure as PNG atomically and close it."""
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


# ------------------------------------------------------------------ overview montages
@dataclass
class OverviewRow:
    """One row of :func:`overview_figure`: an original, its deformed version and the field.

    Attributes:
        original, deformed: arrays ``(*spatial)`` (2D or 3D) on one grid.
        ddf: ``(ndim, *spatial)`` displacement in voxels with ``deformed = warp(original, ddf)``
            (pull-back).
        original_label, deformed_label: optional label maps ``(*spatial)``, drawn as contours.
        title: row title (e.g. ``"level 45, sample 2"``).
        spacing: voxel spacing (mm per axis) for the pixel aspect ratio and the slice axis.
        slice_axis: the axis 3D volumes are cut across (their central slice is shown), e.g.
            the slice axis of a 2D deformation run slice by slice; ``None``: the package's
            rule, :func:`drdm.io.geometry.auto_slice_axis` on the shape and spacing (the axis
            ``slice_axis="auto"`` slices along).
        max_disp_pct, mean_disp_pct, fold_pct: field statistics (computed when ``None``).
    """

    original: np.ndarray
    deformed: np.ndarray
    ddf: np.ndarray
    original_label: np.ndarray | None = None
    deformed_label: np.ndarray | None = None
    title: str = ""
    spacing: Sequence[float] | None = None
    slice_axis: int | None = None
    max_disp_pct: float | None = None
    mean_disp_pct: float | None = None
    fold_pct: float | None = None


def _display_axis(row: OverviewRow) -> int:
    if row.original.ndim == 2:
        return 0
    if row.slice_axis is not None:
        return int(row.slice_axis) % 3
    from .io.geometry import auto_slice_axis

    return auto_slice_axis(row.original.shape, row.spacing)


def _pixel_aspect(row: OverviewRow, axis: int) -> float:
    """Height / width of a displayed pixel from the spacing of the two in-plane axes."""
    if row.spacing is None:
        return 1.0
    spacing = [float(s) for s in row.spacing]
    if row.original.ndim == 3:
        spacing = [s for i, s in enumerate(spacing) if i != axis]
    return spacing[0] / spacing[1] if spacing[1] > 0 else 1.0


def draw_contours(ax, label: np.ndarray | None, values: Sequence[int]) -> None:  # noqa: ANN001
    """Outline each of ``values`` in the 2D ``label`` map on ``ax`` (one colour per value)."""
    if label is None:
        return
    colors = ("tab:red", "tab:green", "tab:cyan", "tab:orange", "tab:purple", "tab:pink")
    for k, value in enumerate(values):
        mask = (label == value).astype(np.float32)
        if 0 < mask.sum() < mask.size:
            ax.contour(mask, levels=[0.5], colors=[colors[k % len(colors)]], linewidths=0.8)


def _statistics(row: OverviewRow) -> tuple[float, float, float]:
    """Max and mean |u| (% of the size) and folds (%): the manifest's values, else computed
    as the manifest computes them (:mod:`drdm.metrics`)."""
    from .metrics import displacement_magnitude, fold_ratio

    if None not in (row.max_disp_pct, row.mean_disp_pct, row.fold_pct):
        return float(row.max_disp_pct), float(row.mean_disp_pct), float(row.fold_pct)  # type: ignore[arg-type]
    size = displacement_magnitude(np.asarray(row.ddf))
    return (
        float(size.max_percent),
        float(size.mean_percent),
        float(fold_ratio(np.asarray(row.ddf))) * 100.0,
    )


def overview_figure(
    rows: Sequence[OverviewRow] | str | Path,
    path: str | Path | None = None,
    max_rows: int = 6,
    grid_spacing: int | None = None,
) -> Figure:
    """Montage of deformations: one row per sample, four columns.

    Columns: the original with its label contours; the deformed image with the deformed
    label contours; the deformation grid ``x + u(x)`` over the deformed image; the Jacobian
    determinant (diverging map centred at 1, folds ``det < 0`` in black). 3D volumes show their
    central slice along the slice axis. Titles give the row title, max/mean ``|u|`` in % of the
    image size and the fold percentage.

    ``rows``: :class:`OverviewRow` objects, or the path of a manifest written by
    ``drdm augment`` / ``drdm synth`` (or its folder), read by :func:`rows_from_manifest`.
    At most ``max_rows`` rows are drawn (evenly spread over the list). With ``path`` the PNG
    is written atomically and the figure closed. Returns the matplotlib ``Figure``.
    """
    from matplotlib.colors import TwoSlopeNorm

    if isinstance(rows, (str, Path)):
        rows = rows_from_manifest(rows, max_rows=max_rows)
    rows = list(rows)
    if not rows:
        raise ValueError("overview_figure needs at least one row")
    if len(rows) > max_rows:
        rows = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, max_rows).round()]
    plt = pyplot()
    cmap = plt.get_cmap("RdBu_r").with_extremes(under="black")
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=2.0)
    n = len(rows)
    fig, axes = plt.subplots(n, 4, figsize=(13, 3.3 * n), squeeze=False)
    for r, row in enumerate(rows):
        axis = _display_axis(row)
        orig = central_slice(np.asarray(row.original, dtype=np.float64), axis)
        defo = central_slice(np.asarray(row.deformed, dtype=np.float64), axis)
        ddf = np.asarray(row.ddf, dtype=np.float64)
        det = central_slice(jacobian_map(ddf), axis)
        plane = _in_plane(ddf, axis)
        aspect = _pixel_aspect(row, axis)
        lab0 = None if row.original_label is None else central_slice(row.original_label, axis)
        lab1 = None if row.deformed_label is None else central_slice(row.deformed_label, axis)
        values = sorted(
            {int(v) for lab in (lab0, lab1) if lab is not None for v in np.unique(lab) if v != 0}
        )
        lo = float(min(orig.min(), defo.min()))
        hi = float(max(orig.max(), defo.max()))
        hi = hi if hi > lo else lo + 1.0
        max_pct, mean_pct, fold_pct = _statistics(row)
        head = f"{row.title}\n" if row.title else ""
        where = ""
        if np.asarray(row.original).ndim == 3:
            where = f" (slice {np.asarray(row.original).shape[axis] // 2} along axis {axis})"
        axes[r, 0].imshow(orig, cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
        draw_contours(axes[r, 0], lab0, values)
        axes[r, 0].set_title(f"{head}original{where}", fontsize=9)
        axes[r, 1].imshow(defo, cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
        draw_contours(axes[r, 1], lab1, values)
        axes[r, 1].set_title("deformed (+ deformed labels)", fontsize=9)
        axes[r, 2].imshow(defo, cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
        draw_grid(axes[r, 2], plane, spacing=grid_spacing or max(4, max(orig.shape) // 24))
        axes[r, 2].set_aspect(aspect)
        axes[r, 2].set_title(f"grid: max |φ| {max_pct:.1f} %, mean {mean_pct:.1f} %", fontsize=9)
        im = axes[r, 3].imshow(det, cmap=cmap, norm=norm, aspect=aspect)
        axes[r, 3].set_title(f"det J (folds {fold_pct:.2f} %, black)", fontsize=9)
        fig.colorbar(im, ax=axes[r, 3], fraction=0.046, pad=0.04, extend="both")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


# ------------------------------------------------------------------ manifests
def find_manifests(manifest_or_dir: str | Path) -> list[Path]:
    """The manifest(s) of a run: the file itself, or ``manifest.csv`` in a folder (else the
    folder's shard manifests ``manifest-shard*.csv``). :class:`~drdm.errors.InputError` if none.
    """
    from .errors import InputError

    path = Path(manifest_or_dir)
    if path.is_dir():
        single = path / "manifest.csv"
        if single.is_file():
            return [single]
        shards = sorted(path.glob("manifest-shard*.csv"))
        if shards:
            return shards
        raise InputError(f"{path}: no manifest.csv in this folder")
    if not path.is_file():
        raise InputError(f"{path}: no such manifest file or folder")
    return [path]


def _run_setting(folder: Path, name: str) -> int | None:
    """An integer setting of the run (``run.json`` beside the manifest: the ``frame`` used for
    4D inputs, an explicit ``slice_axis``), if recorded; ``None`` otherwise."""
    import json

    try:
        settings = json.loads((folder / "run.json").read_text(encoding="utf-8"))["settings"]
        value = settings.get(name)
        if value is None or isinstance(value, bool):
            return None
        return int(value)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _read_array(
    path: Path, kind: str, frame: int | None = None
) -> tuple[np.ndarray, tuple[float, ...]]:
    """An image or label map and its spacing (:func:`drdm.io.read_image`)."""
    from .io.image import read_image

    image = read_image(path, kind=kind, frame=frame)  # type: ignore[arg-type]
    return np.asarray(image.array), tuple(image.spacing)


def _read_field(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A ``(ndim, *spatial)`` voxel field from ``.npy`` or a NIfTI displacement file."""
    from .errors import InputError

    if path.name.lower().endswith(".npy"):
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            ddf = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read as .npy ({exc})") from None
    else:
        try:
            from .io.image import read_displacement
        except ImportError:  # pragma: no cover - older layouts
            raise InputError(
                f"{path}: reading NIfTI displacement fields needs drdm.io.image"
            ) from None
        ddf = read_displacement(path)
    ddf = np.asarray(ddf, dtype=np.float32)
    if ddf.ndim != len(shape) + 1 or tuple(ddf.shape[1:]) != tuple(shape):
        raise InputError(f"{path}: field of shape {ddf.shape} does not fit the image {shape}")
    return ddf


def _locate(value: str, folder: Path, manifest: Path) -> Path:
    """A path from a manifest cell: absolute, else relative to the manifest's folder, else to
    the working directory."""
    from .errors import InputError

    path = Path(value)
    candidates = [path] if path.is_absolute() else [folder / path, path]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise InputError(f"{manifest}: file {value!r} not found (relative to {folder} or the cwd)")


def _first(cell: str | None) -> str | None:
    """The first path of a ``;``-separated manifest cell, or ``None`` when empty."""
    parts = [p for p in (cell or "").split(";") if p.strip()]
    return parts[0].strip() if parts else None


def _slice_axis(row: dict[str, str], folder: Path) -> int | None:
    """The slice axis a run recorded for a row: its ``slice_axis`` cell, else an explicit axis
    in the run's settings; ``None`` (the display rule decides) when neither says."""
    cell = (row.get("slice_axis") or "").strip()
    if cell in ("0", "1", "2"):
        return int(cell)
    return _run_setting(folder, "slice_axis")


def _number(cell: str | None) -> float | None:
    try:
        return float(cell) if cell not in (None, "") else None
    except ValueError:
        return None


def rows_from_manifest(
    manifest_or_dir: str | Path, max_rows: int | None = None
) -> list[OverviewRow]:
    """:class:`OverviewRow` objects for the samples of an ``augment`` or ``synth`` manifest.

    Augment manifests (columns ``image, label, ddf, source_image, source_label, level,
    sample, ...``): original = ``source_image``, deformed = ``image``, field = ``ddf``.
    Synth manifests (``moving, fixed, ddf, moving_label, fixed_label, level_aug, level_syn,
    ...``): original = ``moving``, deformed = ``fixed``, field = ``phi_syn`` (``fixed ≈
    warp(moving, phi_syn)``). Output paths are relative to the manifest's folder; label cells
    may be empty (the first of several ``;``-separated label maps is drawn). With ``max_rows``
    only that many rows, evenly spread over the manifest, are read.
    """
    from .errors import InputError
    from .io.manifest import read_manifest

    entries: list[tuple[Path, dict[str, str]]] = []
    for manifest in find_manifests(manifest_or_dir):
        columns, rows = read_manifest(manifest)
        if not ({"image", "ddf", "source_image"} <= set(columns)) and not (
            {"moving", "fixed", "ddf"} <= set(columns)
        ):
            raise InputError(
                f"{manifest}: not a drdm augment/synth manifest (columns {', '.join(columns)})"
            )
        entries += [(manifest, row) for row in rows]
    if not entries:
        raise InputError(f"{manifest_or_dir}: the manifest has no rows")
    if max_rows is not None and len(entries) > max_rows:
        picks = np.linspace(0, len(entries) - 1, max(1, max_rows)).round().astype(int)
        entries = [entries[int(i)] for i in picks]
    cache: dict[tuple[Path, str, int | None], tuple[np.ndarray, tuple[float, ...]]] = {}

    def load(
        path: Path, kind: str, frame: int | None = None
    ) -> tuple[np.ndarray, tuple[float, ...]]:
        if (path, kind, frame) not in cache:
            cache[(path, kind, frame)] = _read_array(path, kind, frame)
        return cache[(path, kind, frame)]

    result = []
    for manifest, row in entries:
        folder = manifest.parent
        frame = None  # outputs are 2D/3D; augment's sources may be 4D series read at --frame
        if "moving" in row:  # synth
            original_cell, deformed_cell = row["moving"], row["fixed"]
            labels = (_first(row.get("moving_label")), _first(row.get("fixed_label")))
            title = (
                f"T'aug {row.get('level_aug', '?')}, T'syn {row.get('level_syn', '?')}, "
                f"sample {row.get('sample', '?')}"
            )
        else:  # augment
            original_cell, deformed_cell = row["source_image"], row["image"]
            labels = (_first(row.get("source_label")), _first(row.get("label")))
            title = f"level {row.get('level', '?')}, sample {row.get('sample', '?')}"
            frame = _run_setting(folder, "frame")
        original_path = _locate(original_cell, folder, manifest)
        deformed, spacing = load(_locate(deformed_cell, folder, manifest), "image")
        original, _ = load(original_path, "image", frame)
        if original.shape != deformed.shape:
            raise InputError(
                f"{manifest}: {original_cell} {original.shape} and {deformed_cell} "
                f"{deformed.shape} are on different grids"
            )
        label_arrays = [
            None if cell is None else load(_locate(cell, folder, manifest), "label", f)[0]
            for cell, f in zip(labels, (frame, None), strict=True)
        ]
        result.append(
            OverviewRow(
                original=original,
                deformed=deformed,
                ddf=_read_field(_locate(row["ddf"], folder, manifest), deformed.shape),
                original_label=label_arrays[0],
                deformed_label=label_arrays[1],
                title=f"{file_stem(original_path)}: {title}",
                spacing=spacing,
                slice_axis=_slice_axis(row, folder),
                max_disp_pct=_number(row.get("max_disp_pct")),
                mean_disp_pct=_number(row.get("mean_disp_pct")),
                fold_pct=_number(row.get("fold_pct")),
            )
        )
    return result
