"""Reading and writing images and displacement fields with their geometry."""

from .nifti import Volume, atomic_path, file_stem, read_volume, write_ddf, write_volume

__all__ = ["Volume", "atomic_path", "file_stem", "read_volume", "write_ddf", "write_volume"]
