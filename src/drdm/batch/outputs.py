"""What every command writes for one sample: output names, field statistics and the writer.

* Output names (:func:`output_suffix`, :func:`label_names`, :func:`ddf_suffix`) and writing
  (:func:`write_outputs`): the input's format, grid and kind; fields in mm (``nifti``) or voxels
  (``npy``).
* :func:`field_metrics`: the manifest's displacement and folding statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..choices import DdfFormat
from ..errors import InputError
from ..io import MedicalImage

__all__ = [
    "ddf_suffix",
    "field_metrics",
    "label_names",
    "output_suffix",
    "write_outputs",
]

#: image formats written as themselves; others (.mhd, .nhdr, DICOM folders) become these
_SUFFIXES = {
    ".nii.gz": ".nii.gz",
    ".nii": ".nii",
    ".mha": ".mha",
    ".mhd": ".mha",
    ".nrrd": ".nrrd",
    ".nhdr": ".nrrd",
}


def output_suffix(path: str | Path) -> str:
    """The file ending of an output image: the input's (``.mhd`` -> ``.mha``, ``.nhdr`` ->
    ``.nrrd``; a DICOM folder or anything else -> ``.nii.gz``)."""
    path = Path(path)
    name = path.name.lower()
    for suffix, out in _SUFFIXES.items():
        if name.endswith(suffix) and not path.is_dir():
            return out
    return ".nii.gz"


def ddf_suffix(ddf_format: str) -> str:
    """``.npy`` for ``ddf_format="npy"``, else ``.nii.gz``."""
    return ".npy" if ddf_format == "npy" else ".nii.gz"


def label_names(prefix: str, count: int, suffix: str, stem: str = "label") -> list[str]:
    """``[prefix_label.ext]`` for one label map, ``[prefix_label1.ext, ...]`` for several."""
    if count == 1:
        return [f"{prefix}_{stem}{suffix}"]
    return [f"{prefix}_{stem}{k}{suffix}" for k in range(1, count + 1)]


def field_metrics(ddf: np.ndarray) -> dict[str, float]:
    """``max_disp_pct``, ``mean_disp_pct`` (|u| in % of the size per axis,
    :func:`drdm.metrics.displacement_magnitude`) and ``fold_pct`` (% of voxels with a negative
    Jacobian determinant, :func:`drdm.metrics.fold_ratio`) of a ``(ndim, *spatial)`` voxel
    field, rounded to 4 decimals (the manifest's and the commands' statistics)."""
    from ..metrics import displacement_magnitude, fold_ratio

    size = displacement_magnitude(ddf)
    return {
        "max_disp_pct": round(float(size.max_percent), 4),
        "mean_disp_pct": round(float(size.mean_percent), 4),
        "fold_pct": round(float(fold_ratio(ddf)) * 100.0, 4),
    }


def write_outputs(
    out: Path,
    like: MedicalImage,
    ddf: tuple[str, np.ndarray] | None,
    images: Sequence[tuple[str, np.ndarray]] = (),
    labels: Sequence[tuple[str, np.ndarray]] = (),
    ddf_format: DdfFormat = "nifti",
) -> None:
    """Write one sample's files under ``out`` on ``like``'s grid (each atomically): the field
    ``(name, (ndim, *spatial) voxels)`` in mm (NIfTI) or voxels (``.npy``), label maps with
    their own integer dtype, images as float32 (:func:`drdm.io.write_image`).

    Everything is checked before the first file is written: a non-finite image (e.g. from
    intensities near the float32 limit) is an :class:`~drdm.errors.InputError` naming the
    input.
    """
    from ..io.image import write_displacement, write_image

    for name, array in images:
        if np.issubdtype(np.asarray(array).dtype, np.floating) and not np.isfinite(array).all():
            raise InputError(
                f"{like.path or name}: the deformed image has NaN or Inf values (intensities "
                "too large for float32 arithmetic?); rescale the image"
            )
    if ddf is not None:
        write_displacement(out / ddf[0], ddf[1], like, format=ddf_format)  # type: ignore[arg-type]
    for name, array in labels:
        write_image(out / name, array, like.with_array(array), kind="label")
    for name, array in images:
        write_image(out / name, array, like)
