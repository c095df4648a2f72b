"""Training images: collecting the sources and preprocessing them (paper 3.2).

Every source image ends up as one ``(1, *image_size)`` float32 tensor in ``[0, 1]`` held in
memory (CPU), built once when training starts:

1. **sources**: NIfTI files, folders or glob patterns (:func:`expand_files`) and/or built-in
   phantoms (:mod:`drdm.data.phantoms`). For a 2D model, 3D files are cut into 2D slices along
   a chosen axis or the auto-detected one (:func:`auto_slice_axis`);
2. **intensities** (:func:`normalise_intensity`, files only; phantoms are made in ``[0, 1]``):
   an optional threshold raises everything below it to it (removing e.g. air), then the
   file's low/high percentiles map linearly to 0 and 1 (clipped). The window is computed once
   per file, so the slices of one stack keep their relative brightness;
3. **geometry** (:func:`fit_to_size`): each image is resampled to isotropic voxels (using its
   voxel spacing) so that its longest physical side fills the model size, keeping the aspect
   ratio (Gaussian anti-aliasing when shrinking), and padded with zeros, centred, to exactly
   the model size.
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..io import read_volume, spacing_from_affine
from ..spatial import smooth
from .config import DataConfig

__all__ = [
    "TrainingData",
    "auto_slice_axis",
    "build_training_data",
    "draw_indices",
    "expand_files",
    "fit_to_size",
    "normalise_intensity",
]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class TrainingData:
    """The preprocessed training set.

    Attributes:
        images: ``(N, 1, *image_size)`` float32 CPU tensor in ``[0, 1]``.
        from_file: ``(N,)`` bool, ``True`` for images that came from files (not phantoms).
        description: human-readable summary of the sources (recorded with the model).
    """

    images: Tensor
    from_file: Tensor
    description: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(_NIFTI_SUFFIXES)


def expand_files(entries: Sequence[str], base_dir: Path, missing: str = "error") -> list[Path]:
    """Resolve ``data.files`` entries to a sorted, de-duplicated list of NIfTI files.

    Each entry is a file, a folder (searched recursively for ``.nii``/``.nii.gz``) or a glob
    pattern; relative entries are taken relative to ``base_dir`` (the config file's folder).
    A missing entry raises :class:`~drdm.errors.InputError` naming it, or with
    ``missing="warn"`` prints a warning to stderr and is skipped.
    """
    found: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if any(c in entry for c in "*?["):
            matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
            matches = [p for p in matches if p.is_file() and _is_nifti(p)]
            problem = None if matches else f"{path}: pattern matches no NIfTI file"
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and _is_nifti(p))
            problem = None if matches else f"{path}: folder holds no .nii/.nii.gz file"
        elif path.is_file():
            matches, problem = [path], None
        else:
            matches, problem = [], f"{path}: no such file or folder (data.files)"
        if problem is not None:
            if missing == "error":
                raise InputError(problem)
            print(f"drdm train: warning: {problem}; training without it", file=sys.stderr)
        found.extend(matches)
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p.resolve(), None)
    return list(unique)


def auto_slice_axis(shape: Sequence[int], spacing: Sequence[float]) -> int:
    """The axis to cut a 3D stack into 2D slices along: the package's one rule,
    :func:`drdm.io.geometry.auto_slice_axis` (the axis of clearly the largest spacing, ratio
    above 1.5, else the one with the fewest voxels), the same as ``drdm augment`` uses."""
    from ..io.geometry import auto_slice_axis as rule

    return rule(shape, spacing)


def normalise_intensity(
    array: np.ndarray, threshold: float | None, percentiles: Sequence[float]
) -> np.ndarray:
    """Threshold and map linearly to ``[0, 1]`` (paper 3.2).

    Values below ``threshold`` (file units, ``None``: no threshold) are raised to it; then
    the ``percentiles`` ``(low, high)`` of the result map to 0 and 1 and values outside are
    clipped. A constant image maps to zeros. Returns float32 of the same shape.
    """
    data = np.asarray(array, dtype=np.float64)
    if threshold is not None:
        data = np.maximum(data, float(threshold))
    lo, hi = np.percentile(data, [float(percentiles[0]), float(percentiles[1])])
    if threshold is not None:
        lo = max(lo, float(threshold))
    if not hi > lo:
        return np.zeros(data.shape, dtype=np.float32)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def fit_to_size(
    image: Tensor | np.ndarray, spacing: Sequence[float] | None, size: Sequence[int]
) -> Tensor:
    """Resample an image to isotropic voxels filling ``size`` and pad it to exactly ``size``.

    Args:
        image: ``(*spatial)`` array (2D or 3D, ``len(size)`` axes), any real dtype.
        spacing: voxel size per axis (any unit); ``None`` treats voxels as isotropic.
        size: the output spatial shape.

    Returns:
        float32 tensor of shape ``size``: the image scaled by one factor for all axes (in
        physical units) so that it just fits, centred, zero-padded. Linear interpolation,
        with a Gaussian pre-filter (``sigma = (1/f - 1) / 2`` voxels) along axes shrunk by
        ``f < 1``.
    """
    x = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    size = [int(s) for s in size]
    if x.dim() != len(size):
        raise ValueError(f"image has {x.dim()} axes, size has {len(size)}")
    shape = list(x.shape)
    spacing = [1.0] * len(shape) if spacing is None else [float(s) for s in spacing]
    extent = [n * s for n, s in zip(shape, spacing, strict=True)]
    scale = min(t / e for t, e in zip(size, extent, strict=True))
    new = [min(t, max(1, round(e * scale))) for t, e in zip(size, extent, strict=True)]
    x = x[None, None]
    for axis, (n_old, n_new) in enumerate(zip(shape, new, strict=True)):
        factor = n_new / n_old
        if factor < 1:
            sigma = (1.0 / factor - 1.0) / 2.0
            if sigma > 0.1:
                x = smooth(x, [sigma if i == axis else 0.0 for i in range(len(shape))])
    if new != shape:
        mode = "bilinear" if len(size) == 2 else "trilinear"
        x = F.interpolate(x, size=new, mode=mode, align_corners=False)
    pad: list[int] = []
    for t, n in reversed(list(zip(size, new, strict=True))):
        before = (t - n) // 2
        pad += [before, t - n - before]
    if any(pad):
        x = F.pad(x, pad, value=0.0)
    return x[0, 0]


def _file_images(path: Path, config: DataConfig) -> tuple[list[Tensor], str]:
    """Preprocessed ``(*image_size)`` images of one file and a short note on what was taken."""
    nd = config.ndim
    volume = read_volume(path, allow_ndim=(2, 3) if nd == 2 else (3,))
    array = normalise_intensity(volume.array, config.threshold, config.intensity_percentiles)
    spacing = spacing_from_affine(volume.affine, array.ndim) if config.use_spacing else None
    if array.ndim == nd:
        images = [fit_to_size(array, spacing, config.image_size)]
        note = "x".join(str(s) for s in array.shape)
    else:  # a 3D stack for a 2D model: slices
        if config.slice_axis == "auto":
            axis = auto_slice_axis(array.shape, spacing or (1.0, 1.0, 1.0))
        else:
            axis = int(config.slice_axis)
        in_plane = None if spacing is None else [s for i, s in enumerate(spacing) if i != axis]
        slices = [np.take(array, k, axis=axis) for k in range(array.shape[axis])]
        if config.skip_blank_slices:
            slices = [s for s in slices if float(np.ptp(s)) > 1e-6]
        images = [fit_to_size(s, in_plane, config.image_size) for s in slices]
        note = f"{len(images)} of {array.shape[axis]} slices along axis {axis}"
    if config.skip_blank_slices and array.ndim == nd and float(np.ptp(array)) <= 1e-6:
        images = []
    return images, note


def _phantom_images(config: DataConfig) -> list[Tensor]:
    from ..data.phantoms import cardiac_phantom_2d, thorax_phantom_3d

    ph = config.phantoms
    assert ph is not None
    generator = torch.Generator().manual_seed(int(ph.seed))
    make = cardiac_phantom_2d if ph.kind == "cardiac2d" else thorax_phantom_3d
    # phantoms are made at the model size, already in [0, 1]: no intensity preprocessing
    return [make(tuple(config.image_size), generator).image.float() for _ in range(ph.count)]


def build_training_data(config: DataConfig, base_dir: str | Path) -> TrainingData:
    """Collect and preprocess every training image of ``config`` (files relative to
    ``base_dir``). Raises :class:`~drdm.errors.InputError` for unusable files or when no
    image is left."""
    base_dir = Path(base_dir)
    images: list[Tensor] = []
    flags: list[bool] = []
    parts: list[str] = []
    if config.phantoms is not None:
        ph = config.phantoms
        made = _phantom_images(config)
        images += made
        flags += [False] * len(made)
        parts.append(f"{len(made)} built-in {ph.kind} phantoms (seed {ph.seed})")
    files = expand_files(config.files, base_dir, config.missing_files)
    notes = []
    n_file_images = 0
    for path in files:
        got, note = _file_images(path, config)
        images += got
        flags += [True] * len(got)
        n_file_images += len(got)
        notes.append(f"{path.name} ({note})")
    if files:
        shown = ", ".join(notes[:5]) + (f", ... ({len(notes) - 5} more)" if len(notes) > 5 else "")
        plural = "s" if n_file_images != 1 else ""
        parts.append(f"{n_file_images} image{plural} from {len(files)} NIfTI file(s): {shown}")
    if not images:
        raise InputError("data: no training image left (every file missing, empty or blank)")
    size = "x".join(str(s) for s in config.image_size)
    pre = [f"{size}"]
    if files:
        lo, hi = config.intensity_percentiles
        thr = f"threshold {config.threshold:g}, " if config.threshold is not None else ""
        pre.append(f"files resized/padded, {thr}intensities p{lo:g}-p{hi:g} -> [0, 1]")
    aug = config.augment
    if aug.enabled:
        pre.append(
            f"augmented (rotation U(0, {aug.rotation_deg:g} deg), translation "
            f"U(+-{aug.translation:g}) of the size, flip p={aug.flip_prob:g}, crop "
            f"U({aug.crop_min:g}, {aug.crop_max:g}))"
        )
    description = " + ".join(parts) + "; " + ", ".join(pre)
    # interpolation keeps [0, 1] up to rounding; clamp the last ulp
    stacked = torch.stack(images)[:, None].clamp(0.0, 1.0).contiguous()
    return TrainingData(stacked, torch.tensor(flags, dtype=torch.bool), description)


def draw_indices(
    data: TrainingData, batch: int, file_fraction: float | None, generator: torch.Generator
) -> Tensor:
    """``(batch,)`` indices into ``data``: uniform over all images, or from the files with
    probability ``file_fraction`` (when both sources are present)."""
    n = len(data)
    file_idx = torch.nonzero(data.from_file).flatten()
    other_idx = torch.nonzero(~data.from_file).flatten()
    if file_fraction is None or len(file_idx) == 0 or len(other_idx) == 0:
        return torch.randint(0, n, (batch,), generator=generator)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    pick_file = file_idx[torch.randint(0, len(file_idx), (batch,), generator=generator)]
    pick_other = other_idx[torch.randint(0, len(other_idx), (batch,), generator=generator)]
    return torch.where(u < file_fraction, pick_file, pick_other)
