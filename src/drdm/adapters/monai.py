"""MONAI dictionary transforms: DRDM deformation (invertible) and BigAug's intensity part.

>>> from drdm.adapters.monai import DRDMDeformd                     # doctest: +SKIP
>>> deform = DRDMDeformd(["image", "label"], model, mode=("bilinear", "nearest"),
...                      label_keys=["label"])                      # doctest: +SKIP
>>> inverse = Invertd("pred", transform=Compose([..., deform, ...]), orig_keys="label")
...                                                                  # doctest: +SKIP

Inputs are MONAI's channel-first ``(C, *spatial)`` arrays or ``MetaTensor``s. The voxel spacing
(slice axis of a 2D model on 3D stacks, stacked rotations in mm) comes from each
``MetaTensor``'s affine. Outputs keep the input's type, affine, metadata and
``applied_operations``, and this transform pushes its own record onto them (``prob`` misses
included, as MONAI's random transforms do); the field under ``ddf_key`` is a ``MetaTensor``
with the image's affine.

Inversion (``Invertd``, ``Compose.inverse``): the record holds the sampled field ``u``
(``(ndim, *spatial)`` float32 voxels, pull-back: 0.5 MB for a 256 x 256 field) as a
:class:`~drdm.adapters.records.SharedField`, one storage per sample however often MONAI copies
the records (every key, every later transform, every crop of ``RandSpatialCropSamplesd``:
``benchmarks/record_memory.py``); the inverse
warps with ``v = invert_field(u)`` (Newton's method, :func:`drdm.spatial.invert_field`, slice
by slice for the slice-wise fields of a 2D model on 3D stacks, whose slice axis the record holds;
residual below 1e-3 voxels wherever the deformed image held content), label keys with their
label method (``Invertd(nearest_interp=True)`` gives nearest). Round trip on a label:
``φ⁻¹(φ(L))`` loses only what two label interpolations lose (Dice > 0.96 on the tests'
phantoms) and what left the field of view. With ``invertible=False`` no field is stored and
inverting raises a clear ``RuntimeError``.

Lazy resampling: this transform is not lazy. In ``Compose(..., lazy=True)`` MONAI applies the
pending operations of earlier lazy transforms before calling it (the result equals
``lazy=False``; tested); called directly on a ``MetaTensor`` with pending operations it raises.

Randomness follows MONAI: every call draws a seed from the transform's ``self.R``
(``set_random_state``, ``Compose``'s seeding under ``monai.utils.set_determinism``, MONAI's
``DataLoader`` seeding its workers); inside a ``DataLoader`` worker the worker's seed is mixed
in as well, so workers of a plain PyTorch ``DataLoader`` do not repeat each other's
deformations.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch

try:
    from monai.config import KeysCollection
    from monai.data import MetaTensor
    from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
    from monai.utils import TraceKeys, ensure_tuple
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "drdm.adapters.monai needs MONAI; install it with: pip install drdm[monai]"
    ) from err

from ..choices import Padding
from ..pipelines.core import IntensityTransform
from ..pipelines.transforms import (
    BigAugIntensity,
    DRDMDeform,
    check_mode,
    warp_channels,
)
from ..seeding import worker_generator
from .records import SharedField, invert_record

__all__ = ["BigAugIntensityd", "DRDMDeformd"]


def _spacing_of(value: Any) -> tuple[float, ...] | None:
    if isinstance(value, MetaTensor):  # channel-first: ndim - 1 spatial axes
        return tuple(float(s) for s in value.pixdim[: value.ndim - 1])
    return None


def _check_not_pending(value: Any, key: Hashable) -> None:
    if isinstance(value, MetaTensor) and value.pending_operations:
        names = [op.get(TraceKeys.CLASS_NAME) for op in value.pending_operations]
        raise RuntimeError(
            f"DRDMDeformd: {key!r} has pending lazy operations {names}; run it inside "
            "Compose(..., lazy=True), which applies them first, or apply them before"
        )


class DRDMDeformd(RandomizableTransform, MapTransform, InvertibleTransform):
    """Deform ``keys`` (images) and ``label_keys`` (label maps) of a dict sample with one field.

    Args:
        keys: entries to deform; the field is sampled from the first one that is not a label.
        model_or_sampler: a :class:`~drdm.DRDM` model, a
            :class:`~drdm.pipelines.FieldBank` or a :class:`~drdm.pipelines.FieldSampler`.
        label_keys: entries warped as label maps (added to ``keys`` if missing there).
        level, levels: a fixed level or levels to choose from per call (DRDM models only;
            default ``(32, 48)`` for T = 80).
        prob: probability of deforming a sample.
        mode: interpolation per key (one value or a sequence matching ``keys`` + added label
            keys): ``"bilinear"`` (or ``"trilinear"``), ``"bicubic"``, ``"lanczos"`` or
            ``"gaussian"`` for images (:func:`~drdm.pipelines.transforms.check_mode`;
            MONAI's ``"area"``, a downsampling average, warps linearly with a warning);
            ``"nearest"`` or ``"onehot"``/``"bilinear"`` (each label's indicator
            interpolated, arg-max) for label keys. Default ``"bilinear"`` for images and
            ``"onehot"`` for labels.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"`` (MONAI's names: mirrored
            about the edge voxel centres, as ``grid_sample`` with ``align_corners=True``).
        slice_axis, spacing: slice axis of a 2D model on 3D stacks; ``spacing`` (mm per
            spatial axis) overrides the ``MetaTensor``'s.
        stack: geometric transforms composed into the same field: ``None`` (default) the DRDM
            field alone, ``"bigaug"`` BigAug's rotation, scaling and elastic field (the
            geometry of ``drdm augment``'s default recipe), ``"affine"``; see
            :class:`~drdm.pipelines.DRDMDeform`. Geometry only: compose
            :class:`BigAugIntensityd` for BigAug's intensity part.
        intensity: optional intensity transform after the warp (default none).
        ddf_key: if set, the field ``(ndim, *spatial)`` in voxels (pull-back) is stored there
            as a ``MetaTensor`` with the reference image's affine (zeros when not deformed).
        seed: seeds ``self.R`` (as ``set_random_state(seed)``).
        batch_size: slices per network call for DRDM models.
        bank_key: the entry holding the bank key of a sample (banks only; default: the
            reference ``MetaTensor``'s ``filename_or_obj``, else lookup by content).
        invertible: store the field in the record so that ``Invertd`` works (default);
            ``False`` stores none and inversion raises.
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        model_or_sampler: Any,
        label_keys: Sequence[Hashable] = (),
        level: int | None = None,
        levels: Sequence[int] | None = None,
        prob: float = 1.0,
        mode: str | Sequence[str] | None = None,
        padding_mode: Padding = "zeros",
        slice_axis: str | int | None = "auto",
        spacing: Sequence[float] | None = None,
        stack: str | None = None,
        intensity: IntensityTransform | None = None,
        ddf_key: str | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        bank_key: str | None = None,
        invertible: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        label_keys = list(ensure_tuple(label_keys))
        all_keys = list(ensure_tuple(keys))
        all_keys += [k for k in label_keys if k not in all_keys]
        MapTransform.__init__(self, all_keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.label_keys = tuple(label_keys)
        if all(k in self.label_keys for k in self.keys):
            raise ValueError("DRDMDeformd needs at least one image key that is not a label key")
        if mode is None:
            modes = ["onehot" if k in self.label_keys else "bilinear" for k in self.keys]
        else:
            modes = list(ensure_tuple(mode))
            if len(modes) == 1:
                modes = modes * len(self.keys)
            if len(modes) != len(self.keys):
                raise ValueError(f"mode has {len(modes)} entries for the keys {self.keys}")
        self.mode = dict(zip(self.keys, modes, strict=True))
        self.padding_mode = padding_mode
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.ddf_key = ddf_key
        self.bank_key = bank_key
        self.invertible = bool(invertible)
        self.deformer = DRDMDeform(
            model_or_sampler,
            level=level,
            levels=levels,
            slice_axis=slice_axis,  # type: ignore[arg-type]
            padding=padding_mode,  # type: ignore[arg-type]
            stack=stack,
            intensity=intensity,
            layout="channel_first",
            batch_size=batch_size,
        )
        for key, value in self.mode.items():  # validate now, not at the first sample
            check_mode(value, key in self.label_keys, key)
        self._seed = 0
        if seed is not None:
            self.set_random_state(seed=seed)

    def randomize(self, data: Any = None) -> None:
        """Decide whether to deform and draw this call's seed from ``self.R``."""
        super().randomize(None)
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def _bank_key(self, d: Mapping[Hashable, Any], reference: Any) -> Any:
        if self.deformer.bank is None:
            return None
        if self.bank_key is not None:
            return d[self.bank_key]
        if isinstance(reference, MetaTensor):
            name = reference.meta.get("filename_or_obj")
            if isinstance(name, str):  # the file's entry; the bank checks its geometry
                return self.deformer.bank.key_for(name, reference.affine)
        return None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a new dict with the selected entries deformed by one sampled field."""
        d = dict(data)
        self.randomize(None)
        names = list(self.key_iterator(d))
        if not names:
            return d
        flags = [k in self.label_keys for k in names]
        if all(flags):
            raise KeyError("DRDMDeformd: the sample has none of the image keys")
        for k in names:
            _check_not_pending(d[k], k)
        reference = d[names[flags.index(False)]]
        if not self._do_transform:
            for key in names:
                self.push_transform(d, key, extra_info={"mode": self.mode[key]})
            if self.ddf_key is not None:  # channel-first inputs: the field has ndim - 1 axes
                zeros = torch.zeros(reference.ndim - 1, *reference.shape[1:])
                d[self.ddf_key] = self._as_field(zeros, reference)
            return d
        spacing = self.spacing or _spacing_of(reference)
        outputs, ddf, axis = self.deformer.apply(
            [d[k] for k in names],
            flags,
            generator=worker_generator(self._seed),
            spacing=spacing,
            modes=[self.mode[k] for k in names],
            names=names,
            key=self._bank_key(d, reference),
        )
        stored = SharedField(ddf.detach().to("cpu", torch.float32))  # one storage per sample
        for key, out in zip(names, outputs, strict=True):
            original = d[key]
            if isinstance(original, MetaTensor):
                out = MetaTensor(out, affine=original.affine.clone())
                out.copy_meta_from(original, copy_attr=True)
            d[key] = out
            extra: dict[str, Any] = {"mode": self.mode[key]}
            if self.invertible:
                extra["ddf"] = stored
                if axis is not None:  # slice-wise: inverted slice by slice along it
                    extra["slice_axis"] = axis
            self.push_transform(d, key, extra_info=extra)
        if self.ddf_key is not None:
            d[self.ddf_key] = self._as_field(ddf, reference)
        return d

    @staticmethod
    def _as_field(ddf: torch.Tensor, reference: Any) -> Any:
        if isinstance(reference, MetaTensor):
            return MetaTensor(ddf, affine=reference.affine.clone())
        return ddf

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Undo the deformation of the selected entries (``Invertd``, ``Compose.inverse``):
        warp with the inverse of the recorded field, with each key's recorded mode."""
        d = dict(data)
        for key in self.key_iterator(d):
            record = self.pop_transform(d, key)
            if not record.get(TraceKeys.DO_TRANSFORM, True):
                continue
            extra = record.get(TraceKeys.EXTRA_INFO, {}) or {}
            if "ddf" not in extra:
                raise RuntimeError(
                    f"DRDMDeformd: cannot invert {key!r}: the transform was built with "
                    "invertible=False, so the field was not recorded"
                )
            value = d[key]
            mode = str(extra.get("mode", "bilinear"))
            axis = _recorded_axis(extra.get("slice_axis"))
            d[key] = _warp_inverse(value, extra["ddf"], mode, self, axis)
        return d


def _recorded_axis(value: Any) -> int | None:
    """The slice axis of a record (absent: ``None``); collated records hold it as a tensor or
    a list with one entry per batch element."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.flatten()[0].item()
    elif isinstance(value, (list, tuple)):
        value = value[0]
    return int(value)


def _warp_inverse(
    value: Any, recorded: Any, mode: str, owner: DRDMDeformd, slice_axis: int | None
) -> Any:
    """Warp a channel-first value by the inverse of the ``recorded`` field (slice-wise along
    ``slice_axis``, if given) with ``mode``; a record's :class:`SharedField` is inverted once
    for all its keys."""
    x = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
    ddf = torch.as_tensor(recorded)
    while ddf.dim() > x.dim():  # collated records: (1, ndim, *spatial)
        ddf = ddf[0]
    if tuple(ddf.shape[1:]) != tuple(x.shape[1:]):
        raise RuntimeError(
            f"DRDMDeformd.inverse: the recorded field is on a {tuple(ddf.shape[1:])} grid, the "
            f"data is {tuple(x.shape[1:])} (invert the spatial transforms after it first)"
        )
    if isinstance(ddf, SharedField):
        inverse = ddf.inverse(slice_axis).to(x.device)
    else:
        plain = ddf.as_subclass(torch.Tensor).to(x.device, torch.float32)
        inverse = invert_record(plain, slice_axis)
    result = warp_channels(x, inverse, mode, owner.padding_mode, slice_axis)  # type: ignore[arg-type]
    if isinstance(value, MetaTensor):
        restored = MetaTensor(result, affine=value.affine.clone())
        restored.copy_meta_from(value, copy_attr=True)
        return restored
    return result


class BigAugIntensityd(RandomizableTransform, MapTransform):
    """BigAug's six intensity transforms on the image ``keys`` of a dict sample (label maps are
    never touched): compose after :class:`DRDMDeformd` for ``drdm augment``'s default recipe.
    One draw per key and call; seeds from ``self.R`` as in :class:`DRDMDeformd`. Not
    invertible (``Invertd`` of label keys passes over it).

    Args:
        keys: image entries (channel-first).
        prob: probability of changing a sample.
        slice_axis: spatial axis of 3D stacks to treat as slices (filters in-plane).
        seed: seeds ``self.R``.
        allow_missing_keys: skip absent keys.
        **options: fields of :class:`~drdm.baselines.BigAugConfig`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        slice_axis: int | None = None,
        seed: int | None = None,
        allow_missing_keys: bool = False,
        **options: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.intensity = BigAugIntensity(
            slice_axis=slice_axis, layout="channel_first", seed=0, **options
        )
        self._seed = 0
        if seed is not None:
            self.set_random_state(seed=seed)

    def randomize(self, data: Any = None) -> None:
        """Decide whether to change the sample and draw this call's seed from ``self.R``."""
        super().randomize(None)
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a new dict with the image keys' intensities changed (one draw per key)."""
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        g = worker_generator(self._seed)
        for key in self.key_iterator(d):
            original = d[key]
            out = self.intensity.apply(original, g)
            if isinstance(original, MetaTensor):
                out = MetaTensor(out, affine=original.affine.clone())
                out.copy_meta_from(original, copy_attr=True)
            d[key] = out
        return d
