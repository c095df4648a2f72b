"""Labelled images for the downstream experiments: built-in phantoms and dataset folders.

Every item is a :class:`LabelledImage`: an intensity image in ``[0, 1]`` and an integer label
map on the same grid, with the voxel size in mm and the subject it belongs to. Items are
resampled to a square (cubic) grid of ``size`` voxels: the array is zero-padded symmetrically
to a square (cube) first, then resized (linear for the image, nearest for the labels), and the
spacing is updated so that distances stay in mm.

Sources:

* :func:`cardiac_phantoms` / :func:`thorax_phantoms`: seeded synthetic images with labels
  (:mod:`drdm.data.phantoms`; cardiac labels 1 RV cavity, 2 myocardium, 3 LV cavity; thorax
  labels 1 left lung, 2 right lung).
* :func:`read_acdc`: an ACDC-style folder ``patientXXX/patientXXX_frameYY.nii.gz`` with
  ``patientXXX_frameYY_gt.nii.gz`` labels (short-axis 3D stacks), cut into 2D slices along the
  axis with the largest spacing (slices without any label are dropped).
* :func:`read_lung_folder`: a Learn2Reg-style lung CT folder, images in ``imagesTr/`` (or
  ``images/``) and masks of the same file names in ``masksTr/``, ``labelsTr/``, ``masks/`` or
  ``labels/``; the subject of ``LungCT_0001_0000.nii.gz`` is ``LungCT_0001``.

The real M&Ms sample shipped for DRDM training has no label map, so it cannot serve as a
training or test image of the segmentation experiment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..io.files import file_stem
from ..io.geometry import spacing_from_affine
from ..io.image import read_image, read_volume

__all__ = [
    "CARDIAC_CLASSES",
    "THORAX_CLASSES",
    "LabelledImage",
    "cardiac_phantoms",
    "read_acdc",
    "read_lung_folder",
    "resample_item",
    "split_subjects",
    "stack_items",
    "thorax_phantoms",
]

#: label value -> short class name used in the tables
CARDIAC_CLASSES: dict[int, str] = {1: "RV", 2: "Myo", 3: "LV"}
THORAX_CLASSES: dict[int, str] = {1: "left lung", 2: "right lung"}

_NIFTI = re.compile(r"\.nii(\.gz)?$")


@dataclass
class LabelledImage:
    """One image with its label map.

    Attributes:
        image: float32 ``(*spatial)`` in ``[0, 1]``.
        label: int64 ``(*spatial)``, 0 = background.
        spacing: voxel size in mm per array axis.
        subject: the subject the image comes from (train/test splits are by subject).
        name: a unique name (used in the result tables).
    """

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, ...]
    subject: str
    name: str

    @property
    def ndim(self) -> int:
        return self.image.ndim


# ------------------------------------------------------------------------------ resampling
def _pad_square(array: np.ndarray) -> np.ndarray:
    side = max(array.shape)
    pads = []
    for s in array.shape:
        before = (side - s) // 2
        pads.append((before, side - s - before))
    return np.pad(array, pads)


def resample_item(item: LabelledImage, size: int) -> LabelledImage:
    """Pad ``item`` to a square (cube) and resize it to ``size`` voxels per axis; the spacing
    becomes ``spacing * side / size`` (a non-isotropic spacing stays non-isotropic)."""
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    image = _pad_square(item.image)
    label = _pad_square(item.label)
    side = image.shape
    if all(s == size for s in side):
        return LabelledImage(
            image.astype(np.float32), label.astype(np.int64), item.spacing, item.subject, item.name
        )
    nd = image.ndim
    mode = "bilinear" if nd == 2 else "trilinear"
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    out = F.interpolate(x, size=(size,) * nd, mode=mode, align_corners=False)[0, 0]
    lab = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))[None, None]
    lab_out = F.interpolate(lab.float(), size=(size,) * nd, mode="nearest-exact")[0, 0]
    spacing = tuple(float(sp) * n / size for sp, n in zip(item.spacing, side, strict=True))
    return LabelledImage(
        out.numpy().astype(np.float32),
        lab_out.round().long().numpy(),
        spacing,
        item.subject,
        item.name,
    )


def stack_items(items: Sequence[LabelledImage]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, *spatial) float32, labels (N, 1, *spatial) int64)`` of same-size items."""
    if not items:
        raise ValueError("no images")
    images = torch.stack([torch.from_numpy(np.asarray(it.image, dtype=np.float32)) for it in items])
    labels = torch.stack([torch.from_numpy(np.asarray(it.label, dtype=np.int64)) for it in items])
    return images[:, None], labels[:, None]


def _normalise(array: np.ndarray, percentiles: tuple[float, float] = (0.0, 99.5)) -> np.ndarray:
    lo, hi = np.percentile(array, percentiles)
    if hi <= lo:
        return np.zeros_like(array, dtype=np.float32)
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------ phantoms
def cardiac_phantoms(
    count: int, size: int, seed: int, fov_mm: float = 192.0, prefix: str = "cardiac"
) -> list[LabelledImage]:
    """``count`` 2D cardiac phantoms (``size`` x ``size`` pixels, a ``fov_mm`` field of view)
    drawn in sequence from ``torch.Generator().manual_seed(seed)``; each is its own subject."""
    from ..data.phantoms import cardiac_phantom_2d

    g = torch.Generator().manual_seed(int(seed))
    items = []
    for i in range(count):
        ph = cardiac_phantom_2d(size, g, spacing=fov_mm / size)
        name = f"{prefix}-s{seed}-{i:03d}"
        items.append(
            LabelledImage(ph.image.numpy(), ph.label.numpy(), tuple(ph.spacing), name, name)
        )
    return items


def thorax_phantoms(
    count: int, size: int, seed: int, prefix: str = "thorax"
) -> list[LabelledImage]:
    """``count`` 3D thorax CT phantoms (``size``^3 voxels) drawn in sequence from
    ``torch.Generator().manual_seed(seed)``; each is its own subject."""
    from ..data.phantoms import thorax_phantom_3d

    g = torch.Generator().manual_seed(int(seed))
    items = []
    for i in range(count):
        ph = thorax_phantom_3d(size, g)
        name = f"{prefix}-s{seed}-{i:03d}"
        items.append(
            LabelledImage(ph.image.numpy(), ph.label.numpy(), tuple(ph.spacing), name, name)
        )
    return items


# ------------------------------------------------------------------------------ folders
def _read_pair(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The image (float), its label map (int64, validated by :func:`read_image`) and the
    image's voxel spacing."""
    vol = read_volume(image_path, allow_ndim=(2, 3))
    lab = read_image(label_path, kind="label", frame_option=None)
    if lab.array.shape != vol.array.shape:
        raise InputError(
            f"{label_path}: label shape {lab.array.shape} differs from the image's "
            f"{vol.array.shape} ({image_path.name})"
        )
    return vol.array, lab.array.astype(np.int64), spacing_from_affine(vol.affine, vol.ndim)


def read_acdc(
    folder: str | Path, size: int, max_subjects: int | None = None
) -> list[LabelledImage]:
    """2D slices of an ACDC-style folder, resampled to ``size`` x ``size``.

    Layout: ``folder/patientXXX/patientXXX_frameYY.nii.gz`` with the label map
    ``patientXXX_frameYY_gt.nii.gz`` beside it (other files, e.g. ``_4d.nii.gz`` and
    ``Info.cfg``, are ignored). Every frame is a 3D stack cut along its coarsest axis (the
    largest spacing, the last axis on ties); each volume is normalised to ``[0, 1]`` (0 and
    99.5 percentiles); slices without a label are dropped. ``subject`` is the patient folder.
    ``max_subjects`` keeps the first patients in sorted order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory (expected ACDC patient folders)")
    patients = sorted(p for p in folder.iterdir() if p.is_dir())
    items: list[LabelledImage] = []
    used = 0
    for patient in patients:
        frames = sorted(
            f
            for f in patient.iterdir()
            if _NIFTI.search(f.name) and "_frame" in f.name and not file_stem(f).endswith("_gt")
        )
        found = False
        for frame in frames:
            stem = file_stem(frame)
            suffix = frame.name[len(stem) :]
            gt = patient / f"{stem}_gt{suffix}"
            if not gt.exists():
                continue
            array, label, spacing = _read_pair(frame, gt)
            found = True
            array = _normalise(array)
            if array.ndim == 2:
                slices = [(array, label, spacing, f"{stem}")]
            else:
                axis = int(np.argmax(np.asarray(spacing) + 1e-6 * np.arange(3)))
                keep = [a for a in range(3) if a != axis]
                sp2 = (spacing[keep[0]], spacing[keep[1]])
                slices = [
                    (
                        np.take(array, k, axis=axis),
                        np.take(label, k, axis=axis),
                        sp2,
                        f"{stem}_z{k:02d}",
                    )
                    for k in range(array.shape[axis])
                ]
            for img2, lab2, sp, name in slices:
                if not lab2.any():
                    continue
                item = LabelledImage(img2.astype(np.float32), lab2, sp, patient.name, name)
                items.append(resample_item(item, size))
        if found:
            used += 1
            if max_subjects is not None and used >= max_subjects:
                break
    if not items:
        raise InputError(
            f"{folder}: no labelled frames found (expected patientXXX/patientXXX_frameYY.nii.gz "
            "with patientXXX_frameYY_gt.nii.gz)"
        )
    return items


_IMAGE_DIRS = ("imagesTr", "images")
_MASK_DIRS = ("masksTr", "labelsTr", "masks", "labels")


def _subject_of(stem: str) -> str:
    match = re.match(r"^(.*)_\d{4}$", stem)
    return match.group(1) if match else stem


def read_lung_folder(
    folder: str | Path, size: int, max_subjects: int | None = None
) -> list[LabelledImage]:
    """3D volumes of a Learn2Reg-style lung CT folder, resampled to ``size``^3.

    Layout: ``folder/imagesTr/NAME.nii.gz`` (or ``images/``) with a mask of the same file name
    in ``masksTr/``, ``labelsTr/``, ``masks/`` or ``labels/`` (images without a mask are
    skipped). Intensities are normalised per volume to ``[0, 1]`` (0.5 and 99.5 percentiles).
    The subject is the name without a trailing ``_NNNN`` (``LungCT_0001_0000`` ->
    ``LungCT_0001``), so the inspiration/expiration scans of one patient share a subject.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory (expected a Learn2Reg-style lung CT folder)")
    image_dir = next((folder / d for d in _IMAGE_DIRS if (folder / d).is_dir()), None)
    mask_dir = next((folder / d for d in _MASK_DIRS if (folder / d).is_dir()), None)
    if image_dir is None or mask_dir is None:
        raise InputError(
            f"{folder}: expected an images folder ({' or '.join(_IMAGE_DIRS)}) and a masks "
            f"folder ({' or '.join(_MASK_DIRS)})"
        )
    items: list[LabelledImage] = []
    subjects: set[str] = set()
    for path in sorted(p for p in image_dir.iterdir() if _NIFTI.search(p.name)):
        mask = mask_dir / path.name
        if not mask.exists():
            continue
        stem = file_stem(path)
        subject = _subject_of(stem)
        if max_subjects is not None and subject not in subjects and len(subjects) >= max_subjects:
            continue
        array, label, spacing = _read_pair(path, mask)
        if array.ndim != 3:
            raise InputError(f"{path}: expected a 3D CT volume, got shape {array.shape}")
        item = LabelledImage(_normalise(array, (0.5, 99.5)), label, spacing, subject, stem)
        items.append(resample_item(item, size))
        subjects.add(subject)
    if not items:
        raise InputError(f"{folder}: no image in {image_dir.name}/ has a mask in {mask_dir.name}/")
    return items


# ------------------------------------------------------------------------------ splits
def split_subjects(
    items: Sequence[LabelledImage],
    num_test: int | None,
    seed: int,
) -> tuple[list[str], list[str]]:
    """Split the subjects of ``items`` into a (train pool, test) pair, shuffled by ``seed``.

    ``num_test``: number of held-out test subjects (``None``: half, rounded down, at least 1).
    Raises :class:`InputError` if fewer than two subjects are available.
    """
    subjects = sorted({it.subject for it in items})
    if len(subjects) < 2:
        raise InputError(
            f"need at least 2 subjects to split into training and test sets, got {len(subjects)}"
        )
    if num_test is None:
        num_test = max(1, len(subjects) // 2)
    if not 1 <= num_test < len(subjects):
        raise InputError(
            f"test subjects {num_test}: must be between 1 and {len(subjects) - 1} "
            f"({len(subjects)} subjects available)"
        )
    order = torch.randperm(len(subjects), generator=torch.Generator().manual_seed(int(seed)))
    shuffled = [subjects[i] for i in order.tolist()]
    return sorted(shuffled[num_test:]), sorted(shuffled[:num_test])


def choose_subjects(pool: Sequence[str], count: int, seed: int) -> list[str]:
    """``count`` subjects of ``pool`` chosen at random by ``seed`` (sorted)."""
    if not 1 <= count <= len(pool):
        raise InputError(f"training subjects {count}: must be between 1 and {len(pool)}")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(int(seed)))
    return sorted(pool[i] for i in order[:count].tolist())
