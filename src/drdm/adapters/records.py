"""The recorded field of the adapters' transforms: one storage per sample, however often the
record is copied.

MONAI and TorchIO copy a sample's transform records with ``copy.deepcopy``: TorchIO once per
patch a ``Queue`` cuts (every patch's history held its own copy of the full-volume field),
MONAI per key and per later transform (``MetaTensor.copy_meta_from``). A :class:`SharedField`
is a ``torch.Tensor`` whose deep copy is itself, so all those records share one storage;
pickling (DataLoader workers, ``torch.save``) writes it once per pickle, as any tensor. Its
``repr`` is a one-line summary, so that printing a history does not print the field.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

__all__ = ["SharedField"]

#: inverses of the live shared fields of this process, by ``id`` (dropped with the field)
_INVERSES: dict[int, Tensor] = {}


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

    def inverse(self) -> Tensor:
        """The inverse field (:func:`drdm.pipelines.invert_field`, float32, a plain tensor),
        computed once per field and process and shared by every record that holds it (every
        key of a MONAI sample); kept while the field lives, never pickled."""
        key = id(self)
        cached = _INVERSES.get(key)
        if cached is None:
            from ..pipelines.transforms import invert_field

            cached = invert_field(self.as_subclass(Tensor).float())
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
