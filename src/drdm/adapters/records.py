"""The recorded field of the adapters' transforms: one storage per sample, however often the
record is copied.

MONAI and TorchIO copy a sample's transform records with ``copy.deepcopy``: TorchIO once per
patch a ``Queue`` cuts (every patch's history held its own copy of the full-volume field),
MONAI per key and per later transform (``MetaTensor.copy_meta_from``). A :class:`SharedField`
is a ``torch.Tensor`` whose deep copy is itself, so all those records share one storage;
pickling (DataLoader workers, ``torch.save``) writes it once per pickle, as any tensor. Its
``repr`` is a one-line summary, so that printing a history does not print the field.

The inverse paths invert a recorded field once per record: :meth:`SharedField.inverse` keeps
the inverse while the field lives, and :func:`invert_record` remembers the last two plain
fields it inverted (MONAI's ``Invertd`` hands every key its own deep copy of a collated record).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

from ..spatial import invert_field

__all__ = ["SharedField", "invert_record"]

#: inverses of the live shared fields of this process, by ``(id, slice axis)`` (dropped with
#: the field)
_INVERSES: dict[tuple[int, int | None], Tensor] = {}
#: the fields :func:`invert_record` inverted last in this process, newest first: (options, a
#: copy of the field, its inverse); rebound as a whole, so readers in other threads see a
#: consistent tuple
_RECENT_INVERSES: tuple[tuple[tuple[Any, ...], Tensor, Tensor], ...] = ()
_RECENT_KEPT = 2


def invert_record(
    ddf: Tensor,
    slice_axis: int | None = None,
    iterations: int = 30,
    tolerance: float = 1e-5,
) -> Tensor:
    """:func:`drdm.spatial.invert_field` (same arguments, same result) that remembers the last
    two fields it inverted in this process.

    A field equal to one of the last two (same shape, dtype, device, values and arguments) is
    not inverted again: each record is inverted once, whatever its number of keys. The returned
    tensor is a fresh copy, so changing it in place changes nothing remembered.

    Args:
        ddf: ``(ndim, *spatial)`` or ``(B, ndim, *spatial)`` floating field (voxels, pull-back).
        slice_axis: the slice axis of a slice-wise 3D field (inverted slice by slice), else
            ``None``.
        iterations: the most Newton steps.
        tolerance: a point has converged when its residual is below this (voxels).

    Returns:
        The inverse field, same shape, dtype and device as ``ddf`` (voxels).
    """
    if not isinstance(ddf, Tensor) or not ddf.is_floating_point():
        raise TypeError("ddf must be a floating torch tensor")
    global _RECENT_INVERSES
    options = (
        tuple(ddf.shape),
        ddf.dtype,
        ddf.device,
        slice_axis,
        int(iterations),
        float(tolerance),
    )
    for known, field, inverse in _RECENT_INVERSES:
        if known == options and torch.equal(field, ddf):
            return inverse.clone()
    inverse = invert_field(ddf, iterations, tolerance, slice_axis=slice_axis)
    entry = (options, ddf.detach().clone(), inverse)
    _RECENT_INVERSES = (entry, *_RECENT_INVERSES[: _RECENT_KEPT - 1])
    return inverse.clone()


class SharedField(Tensor):
    """A displacement field in a transform record: read-only by convention, shared by
    ``copy.deepcopy`` (not copied). Operations on it give plain tensors.

    ``SharedField(ddf)`` wraps ``ddf`` (detached, same storage); :meth:`summary` (the
    ``repr``) gives its shape, dtype and largest displacement.
    """

    __torch_function__ = torch._C._disabled_torch_function_impl  # results are plain tensors

    @staticmethod
    def __new__(cls: type[SharedField], data: Tensor) -> SharedField:
        if isinstance(data, SharedField):
            return data
        return Tensor._make_subclass(cls, torch.as_tensor(data).detach(), False)  # type: ignore[return-value]

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedField:
        return self

    def inverse(self, slice_axis: int | None = None) -> Tensor:
        """The inverse field (:func:`invert_record`, float32, a plain tensor; ``slice_axis``:
        that of a slice-wise field, recorded beside it), computed once per field and process
        and shared by every record that holds it (every key of a MONAI sample); kept while the
        field lives, never pickled."""
        key = (id(self), slice_axis)
        cached = _INVERSES.get(key)
        if cached is None:
            cached = invert_record(self.as_subclass(Tensor).float(), slice_axis)
            _INVERSES[key] = cached
            weakref.finalize(self, _INVERSES.pop, key, None)
        return cached

    def summary(self) -> str:
        """``SharedField(shape, dtype, max |u| = ... voxels)``."""
        plain = self.as_subclass(Tensor)
        largest = float(plain.norm(dim=0).max()) if plain.numel() and plain.dim() > 1 else 0.0
        dtype = str(self.dtype).replace("torch.", "")
        return f"SharedField({tuple(self.shape)}, {dtype}, max |u| = {largest:.3g} voxels)"

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return self.summary()
