"""Reading and writing images and displacement fields with their geometry."""

from .image import (
    GeometryWarning,
    ITKGeometry,
    MedicalImage,
    check_same_grid,
    find_pairs,
    image_suffix,
    read_displacement,
    read_image,
    resample_label_to,
    write_displacement,
    write_image,
)
from .nifti import Volume, atomic_path, file_stem, read_volume, write_ddf, write_volume

__all__ = [
    "GeometryWarning",
    "ITKGeometry",
    "MedicalImage",
    "Volume",
    "atomic_path",
    "check_same_grid",
    "file_stem",
    "find_pairs",
    "image_suffix",
    "read_displacement",
    "read_image",
    "read_volume",
    "resample_label_to",
    "write_ddf",
    "write_displacement",
    "write_image",
    "write_volume",
]
