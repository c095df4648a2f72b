"""Grid geometry shared by every layer: voxel spacing from an affine, and THE slice-axis rule.

Pure numpy, no file access: training (:mod:`drdm.training.data`), augmentation
(:func:`drdm.pipelines.resolve_slice_axis`), the commands and the figures all cut a 3D stack into
2D slices along the axis :func:`auto_slice_axis` picks, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

__all__ = ["ANISOTROPY_RATIO", "auto_slice_axis", "is_anisotropic", "spacing_from_affine"]

#: spacing ratio (largest / second largest) above which a volume counts as a stack of slices
ANISOTROPY_RATIO = 1.5


def spacing_from_affine(affine: np.ndarray, ndim: int) -> tuple[float, ...]:
    """Millimetres per voxel along the first ``ndim`` array axes of a 4 x 4 voxel -> world
    affine: the length of each column (a zero or non-finite column counts as 1 mm).

    >>> import numpy as np
    >>> spacing_from_affine(np.diag([1.5, 1.5, 10.0, 1.0]), 3)
    (1.5, 1.5, 10.0)
    """
    cols = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :ndim], axis=0)
    return tuple(float(c) if np.isfinite(c) and c > 0 else 1.0 for c in cols)


def _checked_spacing(shape: tuple[int, ...], spacing: Sequence[float]) -> list[float]:
    sp = [float(s) for s in spacing]
    if len(sp) != len(shape):
        raise InputError(f"spacing {tuple(sp)} does not match the volume shape {shape}")
    if not np.all(np.isfinite(sp)) or min(sp) <= 0:
        raise InputError(f"spacing must be positive and finite, got {tuple(sp)}")
    return sp


def is_anisotropic(spacing: Sequence[float]) -> bool:
    """Whether the largest spacing exceeds :data:`ANISOTROPY_RATIO` times the second largest
    (a stack of thick slices, e.g. 1.56 x 1.56 x 10 mm)."""
    sp = sorted(float(s) for s in spacing)
    return len(sp) >= 2 and sp[-1] > ANISOTROPY_RATIO * sp[-2]


def auto_slice_axis(shape: Sequence[int], spacing: Sequence[float] | None = None) -> int:
    """The axis along which a 3D volume of ``shape`` is cut into 2D slices.

    1. an axis of one voxel, if there is one (the last such axis);
    2. else, when ``spacing`` (mm per axis) is given and the volume is a stack of thick slices
       (:func:`is_anisotropic`: largest spacing > 1.5 x the second largest), the axis of the
       largest spacing;
    3. else the axis with the fewest voxels (the last one on ties).

    Raises :class:`~drdm.errors.InputError` for a spacing of the wrong length or a
    non-positive spacing.

    >>> auto_slice_axis((216, 256, 10), (1.56, 1.56, 10.0))  # thick slices: the coarse axis
    2
    >>> auto_slice_axis((64, 48, 64))  # no spacing: the axis with the fewest voxels
    1
    """
    shape = tuple(int(s) for s in shape)
    if min(shape) == 1:
        return max(i for i, s in enumerate(shape) if s == 1)
    if spacing is not None:
        sp = _checked_spacing(shape, spacing)
        if is_anisotropic(sp):
            return int(np.argmax(sp))
    fewest = min(shape)
    return max(i for i, s in enumerate(shape) if s == fewest)
