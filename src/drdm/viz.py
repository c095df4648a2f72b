"""Figures of images and deformations (matplotlib, written as PNG).

Images are shown with array axis 0 vertical and axis 1 horizontal (``imshow`` of the array as
stored, no flips); 3D volumes are shown as their central slice along a chosen axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .io import atomic_path
from .spatial import jacobian_det


def _matplotlib():  # noqa: ANN202 - returns the pyplot module
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
    plt = _matplotlib()
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
    plt = _matplotlib()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
