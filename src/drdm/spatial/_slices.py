"""A 3D volume as a batch of 2D slices and back, and the slice-wise fields of a 2D
deformation applied to every slice of a 3D volume.

A slice-wise field is a ``(3, *spatial)`` displacement whose component along the slice axis is
zero everywhere: each slice is deformed in its own plane. The slice axis is state of the code
that made the field (a 2D sampler run slice by slice along it); it is passed to every function
here, never inferred from the field's values.
"""

from __future__ import annotations

import operator

from torch import Tensor

__all__ = [
    "check_slice_axis",
    "field_to_slices",
    "from_slices",
    "plane_axes",
    "slices_to_field",
    "to_slices",
]


def plane_axes(axis: int) -> list[int]:
    """The two in-plane spatial axes of a 3D volume sliced along ``axis`` (0, 1 or 2)."""
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis!r}")
    return [a for a in range(3) if a != axis]


def to_slices(volume: Tensor, axis: int) -> Tensor:
    """``(C, *spatial3)`` -> ``(n, C, h, w)``: the slices along spatial ``axis`` as a batch."""
    return volume.movedim(axis + 1, 0)


def from_slices(slices: Tensor, axis: int) -> Tensor:
    """``(n, C, h, w)`` -> ``(C, *spatial3)``: the inverse of :func:`to_slices`."""
    return slices.movedim(0, axis + 1)


def field_to_slices(ddf: Tensor, axis: int) -> Tensor:
    """A slice-wise field ``(3, *spatial)`` -> its in-plane fields ``(n, 2, h, w)``, one per
    slice along ``axis`` (the component along ``axis`` is dropped)."""
    plane = ddf[plane_axes(axis)]  # (2, *spatial)
    return plane.movedim(axis + 1, 0)


def slices_to_field(ddf2: Tensor, axis: int) -> Tensor:
    """Per-slice in-plane fields ``(n, 2, h, w)`` -> the slice-wise field ``(3, *spatial)``
    (component ``axis`` zero); the inverse of :func:`field_to_slices`."""
    plane = ddf2.movedim(0, axis + 1)  # (2, *spatial)
    full = plane.new_zeros((3, *plane.shape[1:]))
    full[plane_axes(axis)] = plane
    return full


def check_slice_axis(ddf: Tensor, slice_axis: int | None) -> int | None:
    """``slice_axis`` checked against the field ``ddf`` ``(ndim, *spatial)`` it describes.

    ``None`` (the field has its own dimensionality) is returned as is; an axis (0, 1 or 2) needs
    a 3D field whose component along it is zero everywhere (a ``ValueError`` otherwise: a
    slice-wise warp would silently drop that component). This checks the caller's axis; it
    never picks one.
    """
    if slice_axis is None:
        return None
    if isinstance(slice_axis, bool):
        raise ValueError(f"slice_axis must be 0, 1, 2 or None, got {slice_axis!r}")
    axis = operator.index(slice_axis)
    if ddf.shape[0] != 3 or ddf.dim() != 4:
        raise ValueError(
            f"slice_axis {axis} applies to 3D fields (3, *spatial), got shape {tuple(ddf.shape)}"
        )
    plane_axes(axis)
    if bool(ddf[axis].any()):
        raise ValueError(
            f"the field is not slice-wise along axis {axis}: its component along that axis "
            "is not zero (pass slice_axis=None for a 3D field)"
        )
    return axis
