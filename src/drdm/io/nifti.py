"""NIfTI input/output with validation and atomic writes.

Arrays keep the axis order nibabel returns (the order on disk); no axes are flipped or
reordered. A 3D file with a single slice (``X x Y x 1``) is read as a 2D image.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError

NIFTI_INTENT_VECTOR = 1007


@dataclass
class Volume:
    """An image array with its voxel-to-world affine (4 x 4, RAS+ millimetres)."""

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    @property
    def ndim(self) -> int:
        return self.array.ndim


def file_stem(path: str | Path) -> str:
    """The file name without ``.nii.gz`` / ``.nii`` (or its last suffix otherwise)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def read_volume(path: str | Path, allow_ndim: tuple[int, ...] = (2, 3)) -> Volume:
    """Read a NIfTI image (``.nii`` / ``.nii.gz``) as a float array with its affine.

    Raises :class:`~drdm.errors.InputError` (message names the file) when the file is missing,
    unreadable or corrupt, has a dimensionality outside ``allow_ndim`` (after dropping a
    trailing singleton third axis), or holds NaN/Inf voxels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a NIfTI file")
    try:
        image = nib.load(str(path))
        array = np.asarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read as NIfTI ({reason})") from None
    if array.ndim == 3 and array.shape[2] == 1 and 2 in allow_ndim:
        array = array[:, :, 0]
    if array.ndim not in allow_ndim:
        wanted = " or ".join(f"{d}D" for d in allow_ndim)
        raise InputError(
            f"{path}: image is {array.ndim}D with shape {array.shape}, expected {wanted}"
        )
    if min(array.shape) < 2:
        raise InputError(f"{path}: every axis needs at least 2 voxels, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{path}: voxel type {array.dtype} is not numeric")
    array = array.astype(np.float64 if array.dtype == np.float64 else np.float32)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"{path}: contains {bad} NaN or Inf voxel(s)")
    return Volume(array=array, affine=np.asarray(image.affine, dtype=np.float64), path=path)


@functools.cache
def _process_umask() -> int:
    """The process umask, read once: reading it means setting it, which is not thread-safe,
    so it is not done on every write."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file owner-only (0600); give it the permissions a plain open()
        # would (0666 minus the umask) so outputs are readable like any other file
        os.chmod(tmp, 0o666 & ~_process_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_nifti(image: nib.Nifti1Image, path: Path) -> None:
    # nibabel picks gzip from the file name, so write to a temporary name with the same suffix
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path) as tmp:
        real_tmp = tmp.with_name(tmp.name + suffix)
        try:
            nib.save(image, str(real_tmp))
            os.replace(real_tmp, tmp)
        finally:
            if real_tmp.exists():
                real_tmp.unlink()


def write_volume(path: str | Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write ``array`` as NIfTI with ``affine`` (qform and sform both set), atomically."""
    image = nib.Nifti1Image(np.asarray(array), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    _save_nifti(image, Path(path))


def write_ddf(path: str | Path, ddf: np.ndarray, affine: np.ndarray) -> None:
    """Write a displacement field ``(ndim, *spatial)`` in voxels as a NIfTI vector image.

    Stored with shape ``(*spatial, 1, ndim)`` (a 2D field as ``(X, Y, 1, 1, 2)``) and the
    NIfTI vector intent; component ``i`` is the displacement along array axis ``i`` in voxels
    (pull-back convention, ``warped(x) = image(x + u(x))``).
    """
    ddf = np.asarray(ddf, dtype=np.float32)
    ndim = ddf.shape[0]
    data = np.moveaxis(ddf, 0, -1)
    data = data.reshape(*data.shape[:-1], *([1] * (3 - ndim)), 1, ndim)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_intent(NIFTI_INTENT_VECTOR, name="ddf_voxels")
    _save_nifti(image, Path(path))
