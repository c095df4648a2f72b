"""Reading and writing images, label maps and displacement fields with their geometry.

The package's one I/O path: :func:`read_image` (ITK's geometry policy; NIfTI, MetaImage, NRRD,
DICOM series; spatial units converted to mm) and :func:`write_image` /
:func:`write_displacement` (the input's grid and kind kept, fields in millimetres), with
:func:`atomic_path` under every write (:mod:`drdm.io.files`) and the grid helpers of
:mod:`drdm.io.geometry` (spacing, the slice-axis rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .files import (
    atomic_path,
    check_output_file,
    check_output_folder,
    file_stem,
    image_suffix,
    remove_stale_temporaries,
)
from .geometry import auto_slice_axis, spacing_from_affine

if TYPE_CHECKING:
    from .image import (
        GeometryWarning,
        ITKGeometry,
        MedicalImage,
        Volume,
        check_same_grid,
        read_displacement,
        read_image,
        read_volume,
        resample_label_to,
        write_displacement,
        write_image,
    )

#: names of :mod:`drdm.io.image`, imported on first use: the readers need nibabel (and through
#: it scipy), which ``drdm.pipelines`` and the adapters must not pull in
_IMAGE_NAMES = (
    "GeometryWarning",
    "ITKGeometry",
    "MedicalImage",
    "Volume",
    "check_same_grid",
    "read_displacement",
    "read_image",
    "read_volume",
    "resample_label_to",
    "write_displacement",
    "write_image",
)

__all__ = [
    "GeometryWarning",
    "ITKGeometry",
    "MedicalImage",
    "Volume",
    "atomic_path",
    "auto_slice_axis",
    "check_output_file",
    "check_output_folder",
    "check_same_grid",
    "file_stem",
    "image_suffix",
    "read_displacement",
    "read_image",
    "read_volume",
    "remove_stale_temporaries",
    "resample_label_to",
    "spacing_from_affine",
    "write_displacement",
    "write_image",
]


def __getattr__(name: str) -> Any:
    """The readers and writers of :mod:`drdm.io.image` (imported on first use)."""
    if name in _IMAGE_NAMES:
        from . import image

        return getattr(image, name)
    raise AttributeError(f"module 'drdm.io' has no attribute {name!r}")
