"""TorchIO transforms: DRDM deformation (replayable, invertible) and BigAug's intensity part.

>>> from drdm.adapters.torchio import RandomDRDMDeformation         # doctest: +SKIP
>>> transform = RandomDRDMDeformation(model)                        # doctest: +SKIP
>>> deformed = transform(subject)                                   # doctest: +SKIP
>>> deformed.get_composed_history()(subject)       # the same deformation # doctest: +SKIP
>>> deformed.apply_inverse_transform()             # back to the original # doctest: +SKIP

All images of the subject (they must share one grid) are deformed by the same field, sampled
from the first ``ScalarImage``: ``ScalarImage``s are warped linearly (or cubically), every
``LabelMap`` with the label method (label values and dtype kept; one-hot channels jointly).
TorchIO stores images as ``(C, W, H, D)`` in nibabel's array order; a 2D image is
``(C, W, H, 1)``. A 2D model therefore works slice by slice, along the one-voxel axis for 2D
images and along the axis chosen from the reference image's spacing for 3D stacks (see
:func:`drdm.pipelines.resolve_slice_axis`). Affines are unchanged.

Following TorchIO's design, :class:`RandomDRDMDeformation` samples the field and applies the
deterministic :class:`DRDMFieldDeformation`, which is what the subject's history records (the
field itself, ``(3, W, H, D)`` float32 voxels): ``subject.get_composed_history()`` replays it
exactly, and ``get_inverse_transform()`` / ``apply_inverse_transform()`` warp with its inverse
(Newton's method, :func:`drdm.spatial.invert_field`; slice-wise fields, recorded with their
``slice_axis``, slice by slice). The field is recorded once per subject
(a :class:`~drdm.adapters.records.SharedField`: the patches of a ``Queue`` share it;
``benchmarks/record_memory.py``); ``invertible=False`` records the transform without it.
Integer ``ScalarImage``s come back float32, as with TorchIO's ``RandomElasticDeformation``.

Units: the subject's spacing picks the slice axis and makes the stacked BigAug rotation a
rotation in mm. A DRDM field is relative to the image's extent (the network sees every image
resized to its own square grid), so the same voxels with another spacing get the same DRDM
field, by design.

Randomness follows TorchIO: without ``seed`` every call draws its seed from torch's global
generator (``torch.manual_seed`` reproduces a run; PyTorch seeds it per DataLoader worker);
with ``seed`` a per-process generator as in :class:`drdm.pipelines.DRDMDeform`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from .records import SharedField

try:
    import torchio as tio
    from torchio.transforms.augmentation import RandomTransform
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "drdm.adapters.torchio needs TorchIO; install it with: pip install drdm[torchio]"
    ) from err

from ..choices import Padding
from ..pipelines.transforms import (
    BigAugIntensity,
    DRDMDeform,
    check_mode,
    warp_channels,
)
from ..spatial import check_padding, check_slice_axis

__all__ = [
    "BigAugIntensityTransform",
    "DRDMFieldDeformation",
    "RandomBigAugIntensity",
    "RandomDRDMDeformation",
]

#: TorchIO's interpolation names -> drdm's image modes. ``"lanczos"`` and ``"gaussian"`` are
#: SimpleITK's kernels, reimplemented (:func:`drdm.spatial.sample`): Lanczos equal to
#: SimpleITK's to 1e-14, Gaussian to 2e-5 away from the edges (tests/spatial/test_modes.py)
_TIO_IMAGE_MODES = {
    "linear": "linear",
    "bspline": "cubic",
    "cubic": "cubic",
    "nearest": "nearest",
    "lanczos": "lanczos",
    "gaussian": "gaussian",
}


#: TorchIO names accepted under another kernel, with the one-line warning that says so
_TIO_SUBSTITUTES = {
    "bspline": (
        "image_interpolation 'bspline' (SimpleITK's cubic B-spline) is not implemented: drdm "
        "warps with the Keys cubic kernel ('cubic') instead"
    ),
}


def _image_mode(name: str) -> str:
    key = str(name).lower()
    mode = _TIO_IMAGE_MODES.get(key)
    if mode is None:
        raise ValueError(
            f"image_interpolation must be one of {sorted(_TIO_IMAGE_MODES)}, got {name!r}"
        )
    if key in _TIO_SUBSTITUTES:
        warnings.warn(_TIO_SUBSTITUTES[key], UserWarning, stacklevel=3)
    return mode


class DRDMFieldDeformation(tio.SpatialTransform):
    """Warp every image of a subject by a given displacement field (deterministic).

    The field is kept as a :class:`~drdm.adapters.records.SharedField`: the history records
    it once per subject, and the patches a ``Queue`` cuts share it instead of each holding a
    copy; its ``repr`` is a summary.

    Args:
        ddf: ``(3, W, H, D)`` float displacement in voxels of the subject's grid (pull-back,
            TorchIO's array order; a zero component along the slice axis for 2D models), or
            ``None`` for a record made with ``RandomDRDMDeformation(invertible=False)``, which
            cannot be applied (replaying or inverting it raises ``RuntimeError``).
        image_interpolation: for ``ScalarImage``s: ``"linear"``, ``"cubic"`` (Keys cubic;
            ``"bspline"`` warps with it too, with a warning: no B-spline prefilter here),
            ``"nearest"``, ``"lanczos"`` (SimpleITK's 5-lobe Lanczos windowed sinc) or
            ``"gaussian"`` (SimpleITK's Gaussian interpolation, a smoothing kernel of sigma
            0.8 voxel).
        label_method: ``"onehot"`` or ``"nearest"`` for ``LabelMap``s.
        padding: ``"zeros"``, ``"border"`` or ``"reflection"`` (mirrored about the edge voxel
            centres).
        slice_axis: the axis of ``(W, H, D)`` along which a 2D model deformed the volume slice
            by slice (the field's component along it is zero; warps and the inverse are then
            exactly in-plane); ``None`` for a 3D field.
        invert: warp with the inverse field instead (what ``inverse()`` returns).
        **kwargs: TorchIO's ``Transform`` options.

    ``ScalarImage``s come back floating (float32 for integer images, as TorchIO's elastic
    deformation gives); ``LabelMap``s keep their dtype and values.
    """

    def __init__(
        self,
        ddf: torch.Tensor | None,
        image_interpolation: str = "linear",
        label_method: str = "onehot",
        padding: Padding = "zeros",
        invert: bool = False,
        slice_axis: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        field = None
        if ddf is not None:
            field = torch.as_tensor(ddf)
            if not field.is_floating_point() or field.dim() != 4 or field.shape[0] != 3:
                raise ValueError(
                    f"ddf must be a float (3, W, H, D) field, got {tuple(field.shape)}"
                )
            check_slice_axis(field, slice_axis)
            field = SharedField(field)
        _image_mode(image_interpolation)
        check_mode(label_method, True, "label_method")
        check_padding(padding)
        self.ddf = field
        self.image_interpolation = image_interpolation
        self.label_method = label_method
        self.padding = padding
        self.invert_transform = bool(invert)
        self.slice_axis = slice_axis
        self.args_names = ["ddf", "image_interpolation", "label_method", "padding", "slice_axis"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        """Warp the subject's images (TorchIO copies the subject first)."""
        if self.ddf is None:
            raise RuntimeError(
                "DRDMFieldDeformation: the field was not recorded "
                "(RandomDRDMDeformation(invertible=False)), so this deformation cannot be "
                "replayed or inverted"
            )
        # the inverse once per recorded field (shared by the copies TorchIO makes of it)
        axis = self.slice_axis
        if self.invert_transform:
            field = self.ddf.inverse(axis)
        else:
            field = self.ddf.as_subclass(torch.Tensor)
        field = field.float()
        images = subject.get_images_dict(
            intensity_only=False, include=self.include, exclude=self.exclude
        )
        for name, image in images.items():
            data = image.data
            if tuple(data.shape[1:]) != tuple(field.shape[1:]):
                raise ValueError(
                    f"image {name!r} is {tuple(data.shape[1:])}, the field {tuple(field.shape[1:])}"
                )
            if image.type == tio.LABEL:
                mode = self.label_method
            else:
                mode = _image_mode(self.image_interpolation)
                mode = "bilinear" if mode == "linear" else mode
                if not data.is_floating_point():  # as TorchIO's elastic: float32
                    data = data.float()
            moved = warp_channels(data, field, mode, self.padding, axis)  # type: ignore[arg-type]
            image.set_data(moved)
        return subject


class RandomDRDMDeformation(RandomTransform, tio.SpatialTransform):
    """Deform every image of a ``tio.Subject`` with one sampled field (history records it).

    Args:
        model_or_sampler: a :class:`~drdm.DRDM` model, a
            :class:`~drdm.pipelines.FieldBank` or a :class:`~drdm.pipelines.FieldSampler`.
        level, levels: a fixed level or levels to choose from per call (DRDM models only;
            default ``(32, 48)`` for T = 80).
        slice_axis: ``"auto"`` (from the reference image's spacing) or an axis of ``(W, H, D)``.
        image_interpolation: ``"linear"``, ``"cubic"`` (``"bspline"`` warns), ``"nearest"``,
            ``"lanczos"`` or ``"gaussian"``, as in :class:`DRDMFieldDeformation`.
        label_method: ``"onehot"`` or ``"nearest"``; ``padding``: ``"zeros"``, ``"border"``
            or ``"reflection"``.
        stack: geometric transforms composed into the same field: ``None`` (default) the DRDM
            field alone, ``"bigaug"`` BigAug's rotation, scaling and elastic field (the
            geometry of ``drdm augment``'s default recipe), ``"affine"``; see
            :class:`~drdm.pipelines.DRDMDeform`. Geometry only: add
            :class:`RandomBigAugIntensity` for BigAug's intensity part.
        seed: ``None`` (default): seeds from torch's global generator; an int: per-process
            generators as in :class:`~drdm.pipelines.DRDMDeform`.
        batch_size: slices per network call for DRDM models.
        bank_key: for a bank: the subject attribute holding the key (default: the reference
            image's file path, else lookup by content).
        invertible: record the field in the history (default; one shared storage per
            subject, also across the patches of a ``Queue``), so that the history replays and
            inverts. ``False`` records the transform without its field (``ddf=None``):
            nothing of the field's size is kept, and replaying or inverting raises
            ``RuntimeError``.
        **kwargs: TorchIO's ``Transform`` options (``p``, ``include``, ``exclude``, ...).
    """

    def __init__(
        self,
        model_or_sampler: Any,
        level: int | None = None,
        levels: Sequence[int] | None = None,
        slice_axis: str | int | None = "auto",
        image_interpolation: str = "linear",
        label_method: str = "onehot",
        padding: Padding = "zeros",
        stack: str | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        bank_key: str | None = None,
        invertible: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _image_mode(image_interpolation)
        check_mode(label_method, True, "label_method")
        check_padding(padding)
        self.image_interpolation = image_interpolation
        self.label_method = label_method
        self.padding = padding
        self.bank_key = bank_key
        self.invertible = bool(invertible)
        self.deformer = DRDMDeform(
            model_or_sampler,
            level=level,
            levels=levels,
            slice_axis=slice_axis,  # type: ignore[arg-type]
            padding=padding,  # type: ignore[arg-type]
            stack=stack,
            layout="channel_first",
            seed=seed,
            batch_size=batch_size,
        )
        self.source = _describe(model_or_sampler)
        self.levels = None if self.deformer.bank is not None else _levels(self.deformer)
        self.slice_axis = slice_axis
        self.stack = self.deformer.stack
        self.seed = seed
        self.args_names = [
            "source",
            "levels",
            "slice_axis",
            "image_interpolation",
            "label_method",
            "padding",
            "stack",
            "seed",
            "invertible",
        ]

    def _bank_key(self, subject: tio.Subject, reference: tio.Image) -> Any:
        if self.deformer.bank is None:
            return None
        if self.bank_key is not None:
            return subject[self.bank_key]
        path = getattr(reference, "path", None)
        if path is not None and str(path) in self.deformer.bank:
            return str(path)
        return None

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        """Sample one field from the first ``ScalarImage`` and apply
        :class:`DRDMFieldDeformation` with it (recorded in the subject's history)."""
        subject.check_consistent_spatial_shape()
        images = subject.get_images_dict(
            intensity_only=False, include=self.include, exclude=self.exclude
        )
        if not images:
            return subject
        scalars = [img for img in images.values() if img.type != tio.LABEL]
        if not scalars:
            raise ValueError("RandomDRDMDeformation needs a ScalarImage in the subject")
        reference = scalars[0]
        ref = reference.data.float()[None]
        key = self._bank_key(subject, reference)
        ddf, axis = self.deformer.sample_fields(
            ref,
            self.deformer.generator(),
            spacing=tuple(float(s) for s in reference.spacing),
            keys=None if key is None else [key],
        )
        arguments = {
            "ddf": ddf[0].float().cpu(),
            "image_interpolation": self.image_interpolation,
            "label_method": self.label_method,
            "padding": self.padding,
            "slice_axis": axis,
        }
        transform = DRDMFieldDeformation(**self._add_base_args(arguments))
        out = transform(subject)
        if not self.invertible:  # keep the record (what ran), not the field
            name, parameters = out.applied_transforms[-1]
            out.applied_transforms[-1] = (name, {**parameters, "ddf": None})
        return out


def _describe(source: Any) -> str:
    """A one-line description of a model, bank or sampler for ``repr``."""
    from ..model import DRDM

    if isinstance(source, DRDM):
        return f"DRDM({source.ndim}D, T={source.num_steps}, grid={source.image_size})"
    return type(source).__name__


def _levels(deformer: DRDMDeform) -> tuple[int, ...] | None:
    levels = tuple(int(s.level) for s in deformer.samplers if hasattr(s, "level"))
    return levels or None


class BigAugIntensityTransform(tio.IntensityTransform):
    """BigAug's six intensity transforms with the draws of a given ``seed`` (deterministic:
    replaying it on the same images gives the same result). Not invertible.

    Args:
        seed: seeds the draws (one generator, images in the subject's order).
        slice_axis: axis of ``(W, H, D)`` treated as slices (filters in-plane).
        options: fields of :class:`~drdm.baselines.BigAugConfig` (e.g. ``{"probability": 1}``).
        **kwargs: TorchIO's ``Transform`` options.
    """

    def __init__(
        self,
        seed: int,
        slice_axis: int | None = None,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.seed = int(seed)
        self.slice_axis = slice_axis
        self.options = dict(options or {})
        self._change = BigAugIntensity(
            slice_axis=slice_axis, layout="channel_first", **self.options
        )
        self.args_names = ["seed", "slice_axis", "options"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        """Change every ``ScalarImage`` (one draw each, in the subject's order)."""
        g = torch.Generator().manual_seed(self.seed)
        for image in self.get_images(subject):
            image.set_data(self._change.apply(image.data.float(), g))
        return subject


class RandomBigAugIntensity(RandomTransform, tio.IntensityTransform):
    """BigAug's intensity part for TorchIO subjects: draws a seed (torch's global generator,
    or per-process generators from ``seed``) and applies :class:`BigAugIntensityTransform`,
    which the history records.

    Args:
        slice_axis: axis of ``(W, H, D)`` treated as slices (filters in-plane), e.g. 2 for
            TorchIO's ``(C, W, H, 1)`` 2D images.
        seed: ``None``: torch's global generator; an int: per-process generators.
        **kwargs: fields of :class:`~drdm.baselines.BigAugConfig` (e.g. ``probability``) and
            TorchIO's ``Transform`` options (``p``, ``include``, ...).
    """

    def __init__(
        self, slice_axis: int | None = None, seed: int | None = None, **kwargs: Any
    ) -> None:
        import dataclasses

        from ..baselines import BigAugConfig

        names = {f.name for f in dataclasses.fields(BigAugConfig)}
        self.options = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        super().__init__(**kwargs)
        self.slice_axis = slice_axis
        self._seeds = BigAugIntensity(seed=seed)

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        """Draw a seed and apply the deterministic transform with it."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self._seeds.generator()))
        arguments = {"seed": seed, "slice_axis": self.slice_axis, "options": self.options}
        return BigAugIntensityTransform(**self._add_base_args(arguments))(subject)
