"""Deprecated: the old NIfTI-only reader and writers. Use :mod:`drdm.io` instead.

* ``read_volume`` / ``Volume`` now read through :func:`drdm.io.read_image` (ITK's geometry
  policy, NIfTI, MetaImage, NRRD and DICOM; units converted to mm): import them from
  :mod:`drdm.io`.
* ``write_volume(path, array, affine)`` -> :func:`drdm.io.write_image` with a
  :class:`drdm.io.MedicalImage` (keeps the input's grid and kind).
* ``write_ddf`` wrote VOXEL fields that ITK tools misread as millimetres; use
  :func:`drdm.io.write_displacement` (millimetres, SimpleITK-ready) or its ``format="npy"``.
* ``atomic_path`` and ``file_stem`` live in :mod:`drdm.io.files`.

Importing this module emits a :class:`DeprecationWarning`; it will be removed in the next
release.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from .files import atomic_path, file_stem
from .image import NIFTI_INTENT_VECTOR, Volume, _nifti_header_image, _save_nifti, read_volume

__all__ = [
    "NIFTI_INTENT_VECTOR",
    "Volume",
    "atomic_path",
    "file_stem",
    "read_volume",
    "write_ddf",
    "write_volume",
]

warnings.warn(
    "drdm.io.nifti is deprecated: use drdm.io (read_image / write_image / write_displacement)",
    DeprecationWarning,
    stacklevel=2,
)


def write_volume(path: str | Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Deprecated: write ``array`` (its own dtype) as NIfTI with ``affine`` as qform and
    sform, atomically. Use :func:`drdm.io.write_image`."""
    array = np.asarray(array)
    _save_nifti(_nifti_header_image(array, np.asarray(affine, np.float64), array.dtype), Path(path))


def write_ddf(path: str | Path, ddf: np.ndarray, affine: np.ndarray) -> None:
    """Deprecated: a ``(ndim, *spatial)`` field in VOXELS as a NIfTI vector image (intent
    name ``ddf_voxels``; :func:`drdm.io.read_displacement` reads it back). ITK tools read
    these numbers as millimetres: use :func:`drdm.io.write_displacement`."""
    ddf = np.asarray(ddf, dtype=np.float32)
    ndim = ddf.shape[0]
    data = np.moveaxis(ddf, 0, -1)
    data = data.reshape(*data.shape[:-1], *([1] * (3 - ndim)), 1, ndim)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_intent(NIFTI_INTENT_VECTOR, name="ddf_voxels")
    _save_nifti(image, Path(path))
