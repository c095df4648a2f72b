"""On-the-fly deformation for training pipelines (PyTorch ``Dataset`` / ``DataLoader``).

>>> deform = DRDMDeform(DRDM.from_pretrained("default"), seed=0)  # doctest: +SKIP
...     # a DRDM field at level 32 or 48 (stack="bigaug" adds BigAug's geometry)
>>> image, label = deform(image, label)            # (C, H, W) tensors   # doctest: +SKIP
>>> sample = deform({"image": image, "label": label})                   # doctest: +SKIP
>>> sample = BigAugIntensity(seed=0)(sample)  # BigAug's appearance part, if wanted # doctest: +SKIP

One deformation is sampled per call (per batch element with ``layout="batch"``) and applied
to the image(s) and every label map with ONE warp at native resolution (see
:func:`drdm.pipelines.deform_volume` for the geometry: 2D models slice by slice on 3D stacks).
:class:`DRDMDeform` changes geometry only, unless an ``intensity`` transform is given;
BigAug's six intensity transforms are their own transform, :class:`BigAugIntensity`, to
compose after it (``drdm augment``'s default recipe is ``DRDMDeform(stack="bigaug")`` followed by
``BigAugIntensity``).

Sources of the deformation: a :class:`~drdm.DRDM` model (a fresh DRDM field per
call: seconds on a CPU), any :class:`~drdm.pipelines.FieldSampler`, or a
:class:`~drdm.pipelines.FieldBank` of instance-specific DRDM fields generated once per training
image (a field drawn from the image's bank per call: augmentation speed; see
:mod:`drdm.pipelines.bank`).

Layout (``layout=``): ``"spatial"`` ``(*spatial)``, ``"channel_first"`` ``(C, *spatial)``,
``"batch"`` ``(B, C, *spatial)`` (one independent field per element, all elements' network
passes batched, on the input's device). ``"auto"`` (default) accepts only what cannot be
misread: as many axes as the model has spatial axes -> ``"spatial"``; a 3D model and 4 axes
-> ``"channel_first"``; a 2D model and 3 axes ``(1, H, W)`` -> ``"channel_first"``. Anything
else (``(216, 256, 10)`` for a 2D model: 216 channels or a stack?) is an error naming the
choices. Label maps follow the image: ``(*spatial)`` or ``(L, *spatial)`` (``(B, *spatial)``
or ``(B, L, *spatial)`` in a batch). A label with ``L > 1`` channels that is one-hot (values
0/1, exactly one 1 per voxel) is warped jointly, so every voxel keeps exactly one class; other
multi-channel labels are warped channel by channel.

Randomness: an explicit ``generator=`` argument is used as given. Otherwise, with ``seed``
set, each process (the main process and every ``DataLoader`` worker) creates its own
``torch.Generator`` lazily, seeded from ``seed`` and, inside a worker, from the worker's seed
(which PyTorch makes different for every worker and every epoch); a run is then reproducible
when the ``DataLoader``'s own seed is (``generator=torch.Generator().manual_seed(...)`` or
``torch.manual_seed``). With ``seed=None`` every call draws its seed from torch's global
generator, so ``torch.manual_seed`` reproduces a run in the main process and PyTorch's
per-worker seeding makes workers differ.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import numpy as np
import torch
from torch import Tensor

from ..choices import (
    IMAGE_MODES,
    LABEL_METHODS,
    ImageMode,
    LabelMethod,
    Padding,
    check_choice,
)
from ..errors import InputError
from ..seeding import PerProcessGenerator
from ..spatial import (
    check_padding,
    check_slice_axis,
    field_to_slices,
    from_slices,
    slices_to_field,
    to_slices,
    warp,
    warp_label_maps,
)
from .core import (
    DRDMSampler,
    FieldSampler,
    IntensityTransform,
    SliceAxis,
    apply_intensity,
    image_tensor,
    label_tensor,
    resolve_slice_axis,
    restore_label,
    stack_field,
    warp_tensors,
)
from .registry import (
    DEFAULT_LEVEL_FRACTIONS,
    DEFAULT_LEVELS,
    DEFAULT_STACK,
    default_levels,
    resolve_stack,
)

if TYPE_CHECKING:
    from .bank import FieldBank

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_LEVEL_FRACTIONS",
    "DEFAULT_STACK",
    "Applied",
    "BigAugIntensity",
    "DRDMDeform",
    "Layout",
    "check_mode",
    "default_levels",
    "resolve_stack",
    "warp_channels",
]

Layout = Literal["auto", "spatial", "channel_first", "batch"]
LAYOUTS: tuple[str, ...] = get_args(Layout)

#: drdm's, MONAI's and TorchIO's interpolation names -> drdm's image modes. Every kernel is
#: drdm's own (:func:`drdm.spatial.sample`); the one name that is no warp kernel, MONAI's
#: ``"area"``, is a substitute (:data:`_SUBSTITUTES`), which a warning announces.
_IMAGE_MODES = {
    **{mode: mode for mode in IMAGE_MODES},
    "bilinear": "linear",
    "trilinear": "linear",
    "bicubic": "cubic",
    "area": "linear",
}
#: image modes accepted under another kernel, with the one-line warning that says so
_SUBSTITUTES = {
    "area": (
        "interpolation 'area' is MONAI's downsampling average (F.interpolate), which has "
        "nothing to average in a warp onto the same grid: drdm warps with 'linear' instead"
    ),
}
_LABEL_MODES = {**{m: m for m in LABEL_METHODS}, "bilinear": "onehot", "linear": "onehot"}


Array = np.ndarray | Tensor


# ---------------------------------------------------------------------------- helpers
def _geometric_stack(name: str | None, ndim: int, spacing: Sequence[float] | None) -> Any:
    """The geometric part of stack ``name`` (:func:`drdm.pipelines.make_stack`) for ``ndim``
    axes, rotating in mm when ``spacing`` (mm per axis) is given."""
    from ..baselines import BigAug
    from .registry import make_stack

    then, _ = make_stack(name, ndim)
    if then is None or spacing is None:
        return then
    return BigAug(ndim, config=then.owner.config, spacing=spacing).field_sampler()


def _is_onehot(lab: Tensor) -> bool:
    """``(L, *spatial)`` int64 with L > 1, values 0/1 and exactly one 1 per voxel."""
    if lab.shape[0] < 2:
        return False
    return bool(((lab == 0) | (lab == 1)).all()) and bool((lab.sum(0) == 1).all())


def _warp_label(
    lab: Tensor, ddf: Tensor, method: str, padding: str, slice_axis: int | None
) -> Tensor:
    """Warp ``(L, *spatial)`` int64 label channels (:func:`~drdm.spatial.warp_label_maps`;
    slice-wise along ``slice_axis``); one-hot labels jointly (one class per voxel; outside the
    image with zero padding: class 0)."""
    if _is_onehot(lab):
        index = lab.argmax(0, keepdim=True)
        moved = warp_label_maps(index, ddf, method, padding, slice_axis)  # type: ignore[arg-type]
        classes = torch.arange(lab.shape[0], device=lab.device).view(-1, *[1] * (lab.dim() - 1))
        return (moved == classes).to(lab.dtype)
    return warp_label_maps(lab, ddf, method, padding, slice_axis)  # type: ignore[arg-type]


def _restore_image(out: Tensor, original: Array, drop_channel: bool) -> Array:
    """``(C, *spatial)`` (or a batch) -> the original's layout and kind; floating dtypes kept."""
    out = out[0] if drop_channel else out
    if isinstance(original, Tensor):
        dtype = original.dtype if original.is_floating_point() else torch.float32
        return out.to(device=original.device, dtype=dtype)
    array = out.cpu().numpy()
    if np.issubdtype(original.dtype, np.floating):
        array = array.astype(original.dtype, copy=False)
    return array


def _plain(x: Array) -> Array:
    """Tensor subclasses (MONAI's MetaTensor) as plain tensors; arrays unchanged."""
    return x.as_subclass(Tensor) if isinstance(x, Tensor) and type(x) is not Tensor else x


# ---------------------------------------------------------------------------- DRDMDeform
class Applied(NamedTuple):
    """What :meth:`DRDMDeform.apply` returns.

    Attributes:
        outputs: the deformed arrays, in the order, kinds, shapes and dtypes given.
        ddf: the field ``(ndim, *spatial)`` (``(B, ndim, *spatial)`` for batches) in voxels,
            float32, on the reference's device.
        slice_axis: the slice axis of slice-wise fields (a 2D model on 3D volumes: the field's
            component along it is zero), else ``None``; pass it on to invert or replay the field.
    """

    outputs: list[Any]
    ddf: Tensor
    slice_axis: int | None


class DRDMDeform(PerProcessGenerator):
    """Random deformation of an image and its label maps, one deformation per sample.

    Args:
        model_or_sampler: a :class:`~drdm.DRDM` model (a fresh DRDM field per call),
            a :class:`~drdm.pipelines.FieldBank` (a field drawn from the image's bank per call), or
            any :class:`~drdm.pipelines.FieldSampler` (e.g. a baseline from ``drdm.baselines``).
        level: a fixed deformation level ``T'`` (DRDM models only).
        levels: levels to choose from uniformly at random per sample (DRDM models only);
            default :func:`default_levels` of the model's T (``(32, 48)`` for T = 80).
        keys: image entries of a dict sample (the field is sampled from the first one and
            applied to all); they must be present.
        label_keys: label-map entries of a dict sample (skipped when absent).
        slice_axis: for a 2D model on 3D volumes (:func:`drdm.pipelines.resolve_slice_axis`).
        spacing: voxel size in mm per spatial axis (default: none known). It picks the slice
            axis of 3D stacks and makes the stacked rotation a rotation in mm; DRDM fields
            themselves are relative to the image extent (the network sees every image on its
            own square grid), so they do not depend on it.
        label_method: ``"onehot"`` (each label's indicator interpolated linearly, arg-max) or
            ``"nearest"`` label warping.
        interpolation: image warping (:func:`check_mode`): ``"linear"`` (also
            ``"bilinear"``/``"trilinear"``), ``"cubic"`` (``"bicubic"``), ``"lanczos"``
            (SimpleITK's 5-lobe windowed sinc), ``"gaussian"`` (SimpleITK's smoothing
            Gaussian, sigma 0.8 voxel), or MONAI's ``"area"``, which is warped linearly with a
            warning. ``padding``: ``"zeros"``, ``"border"`` or ``"reflection"`` (mirrored
            about the edge voxel centres).
        stack: geometric transforms composed after the deformation into the same field (one
            warp). ``None`` (default): the DRDM field (or the sampler's) alone. ``"bigaug"``:
            BigAug's rotation (±20°), scaling (0.4-1.6) and elastic deformation, each with
            probability 1/2 (the geometry of ``drdm augment``'s default recipe); ``"affine"``:
            its rotation and scaling. The stacked transforms have the model's dimensionality: a
            2D model on a 3D stack rotates and scales every slice alike. Never changes
            intensities.
        intensity: optional :class:`~drdm.pipelines.IntensityTransform` applied to the deformed
            images (after the warp). Default none: geometry only. For BigAug's appearance part
            compose :class:`BigAugIntensity` (or pass ``BigAug(2).intensity_transform()``).
        layout: ``"auto"``, ``"spatial"``, ``"channel_first"`` or ``"batch"`` (module
            docstring).
        seed: base seed of the per-process generators (module docstring); ``None``: each
            call's seed comes from torch's global generator.
        ddf_key: if set, dict samples also get the field ``(ndim, *spatial)`` (voxels,
            pull-back; ``(B, ndim, *spatial)`` for batches) under this key.
        batch_size: slices or images per network call for DRDM models (``None``: all at once).
        bank_key: for a :class:`~drdm.pipelines.FieldBank`: the dict entry holding the sample's bank
            key (e.g. ``"id"``); ``None``: the bank finds the image by its content (or its only
            entry). Tuple calls pass ``key=``.

    Outputs keep each input's kind (tensor or array), shape and device; images keep a floating
    dtype (float32 for integer images), label maps their dtype and values.
    """

    def __init__(
        self,
        model_or_sampler: Any,
        level: int | None = None,
        levels: Sequence[int] | None = None,
        *,
        keys: Sequence[str] = ("image",),
        label_keys: Sequence[str] = ("label",),
        slice_axis: SliceAxis = "auto",
        spacing: Sequence[float] | None = None,
        label_method: LabelMethod = "onehot",
        interpolation: ImageMode = "linear",
        padding: Padding = "zeros",
        stack: str | None = None,
        intensity: IntensityTransform | None = None,
        layout: Layout = "auto",
        seed: int | None = None,
        ddf_key: str | None = None,
        batch_size: int | None = None,
        bank_key: str | None = None,
    ) -> None:
        from ..model import DRDM
        from .bank import FieldBank

        if level is not None and levels is not None:
            raise ValueError("give either level or levels, not both")
        self.bank: FieldBank | None = None
        self.samplers: list[FieldSampler] = []
        if isinstance(model_or_sampler, DRDM):
            if level is not None:
                chosen = [level]
            elif levels is None:
                chosen = list(default_levels(model_or_sampler.num_steps))
            else:
                chosen = list(levels)
            if not chosen:
                raise ValueError("levels must not be empty")
            self.samplers = [
                DRDMSampler(model_or_sampler, lvl, batch_size=batch_size) for lvl in chosen
            ]
            model_ndim = model_or_sampler.ndim
        elif isinstance(model_or_sampler, FieldBank):
            if level is not None or levels is not None:
                raise ValueError("level/levels apply to DRDM models; a bank holds its fields")
            if len(model_or_sampler) == 0:
                raise ValueError("the field bank is empty")
            self.bank = model_or_sampler
            model_ndim = model_or_sampler.ndim
        else:
            ndim = getattr(model_or_sampler, "ndim", None)
            if not callable(getattr(model_or_sampler, "sample_ddf", None)) or ndim not in (2, 3):
                kind = type(model_or_sampler).__name__
                raise TypeError(f"expected a DRDM model, a FieldBank or a FieldSampler, got {kind}")
            if level is not None or levels is not None:
                raise ValueError("level/levels apply to DRDM models only, not to a FieldSampler")
            self.samplers = [model_or_sampler]
            model_ndim = int(ndim)
        self._ndim = int(model_ndim)
        self.stack = None if stack in (None, "none") else stack
        self.then = _geometric_stack(self.stack, self._ndim, None)  # validates the name
        self._then_cache: dict[tuple[float, ...], Any] = {}
        if isinstance(keys, str) or isinstance(label_keys, str):
            raise TypeError("keys and label_keys must be sequences of strings, not a string")
        if not keys:
            raise ValueError("keys must name at least one image entry")
        self.keys = tuple(keys)
        self.label_keys = tuple(label_keys)
        self.slice_axis = slice_axis
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.label_method = check_choice("label_method", label_method, LABEL_METHODS)
        self.interpolation = _image_mode(interpolation)
        self.padding = check_padding(padding)
        self.intensity = intensity
        self.layout = check_choice("layout", layout, LAYOUTS)
        self.seed = seed
        self.ddf_key = ddf_key
        self.bank_key = bank_key

    @property
    def ndim(self) -> int:
        """Spatial dimensionality of the model/sampler/bank (2 or 3)."""
        return self._ndim

    def __repr__(self) -> str:
        source = f"bank={self.bank!r}" if self.bank is not None else f"samplers={self.samplers!r}"
        return (
            f"DRDMDeform({source}, stack={self.stack!r}, layout={self.layout!r}, "
            f"keys={self.keys}, label_keys={self.label_keys}, seed={self.seed})"
        )

    # ------------------------------------------------------------------ layout
    def resolve_layout(self, image: Array) -> str:
        """The layout of ``image`` (``"spatial"``, ``"channel_first"`` or ``"batch"``): the
        ``layout`` argument, or for ``"auto"`` the only reading that cannot be wrong (module
        docstring). Raises :class:`~drdm.errors.InputError` for ambiguous shapes."""
        if self.layout != "auto":
            return self.layout
        shape = tuple(image.shape)
        if self.bank is not None:  # the bank knows its volumes' shapes
            shapes = self.bank.spatial_shapes()
            if shape in shapes:
                return "spatial"
            if shape[1:] in shapes:
                return "channel_first"
        dims = len(shape)
        if dims == self.ndim:
            return "spatial"
        if (self.ndim == 3 and dims == 4) or (self.ndim == 2 and dims == 3 and shape[0] == 1):
            return "channel_first"
        readings = {
            "channel_first": "(C, *spatial)",
            "spatial": "a (*spatial) volume (a stack of 2D slices for a 2D model)",
            "batch": "(B, C, *spatial)",
        }
        options = "; ".join(f"layout={k!r} for {v}" for k, v in readings.items())
        raise InputError(
            f"ambiguous input of shape {shape} for a {self.ndim}D model: pass {options}"
        )

    # ------------------------------------------------------------------ fields
    def _then_for(self, spacing: Sequence[float] | None) -> Any:
        if self.then is None or spacing is None:
            return self.then
        key = tuple(float(s) for s in spacing)
        if key not in self._then_cache:
            self._then_cache[key] = _geometric_stack(self.stack, self.ndim, key)
        return self._then_cache[key]

    def sample_fields(
        self,
        images: Tensor,
        generator: torch.Generator,
        spacing: Sequence[float] | None = None,
        keys: Sequence[Hashable | None] | None = None,
    ) -> tuple[Tensor, int | None]:
        """Sample one field per image, the stack included (no warping).

        Args:
            images: ``(B, C, *spatial)`` floating tensor (2 or 3 spatial axes).
            generator: the only source of randomness.
            spacing: mm per spatial axis (default: the constructor's).
            keys: bank keys per image (banks only; ``None``: found by content).

        Returns:
            ``(B, ndim, *spatial)`` fields in voxels (pull-back, ``ndim`` of the volume; a zero
            component along the slice axis for slice-wise fields) and that slice axis or
            ``None``.
        """
        sp = tuple(spacing) if spacing is not None else self.spacing
        spatial = tuple(images.shape[2:])
        vnd = len(spatial)
        batch = images.shape[0]
        if sp is not None and len(sp) != vnd:
            raise InputError(f"spacing {sp} does not match the {vnd} spatial axes {spatial}")
        if self.bank is not None:
            fields, axes = [], set()
            for b in range(batch):
                key = None if keys is None else keys[b]
                field, entry_axis = self.bank.draw_with_axis(generator, key=key, image=images[b])
                fields.append(field)
                axes.add(entry_axis)
            if len(axes) > 1:
                raise InputError(f"the batch draws bank fields of different slice axes {axes}")
            base = torch.stack(fields).to(images.device, images.dtype)
            axis = axes.pop()
        else:
            base, axis = self._sample_base(images, generator, sp)
        if self.then is None:
            return base, axis
        plane = sp if axis is None or sp is None else [s for a, s in enumerate(sp) if a != axis]
        then = self._then_for(plane)
        stacked = [stack_field(then, images[b], base[b], axis, generator) for b in range(batch)]
        return torch.stack(stacked), axis

    def _sample_base(
        self, images: Tensor, g: torch.Generator, spacing: Sequence[float] | None
    ) -> tuple[Tensor, int | None]:
        """Fields of the samplers: the level chosen per image, one sampler call per level."""
        batch, spatial = images.shape[0], tuple(images.shape[2:])
        vnd, snd = len(spatial), self.ndim
        if snd == 3 and (vnd == 2 or min(spatial) == 1):
            raise InputError(f"a 3D deformation model cannot deform a 2D image (shape {spatial})")
        if len(self.samplers) == 1:
            choice = torch.zeros(batch, dtype=torch.int64)
        else:
            choice = torch.randint(len(self.samplers), (batch,), generator=g)
        axis = None if snd == vnd else resolve_slice_axis(spatial, spacing, self.slice_axis)
        out = images.new_zeros((batch, vnd, *spatial))
        for index, sampler in enumerate(self.samplers):
            members = torch.nonzero(choice == index).flatten().tolist()
            if not members:
                continue
            if axis is None:
                fields = sampler.sample_ddf(images[members], g)
            else:  # every member's slices in one call
                slices = torch.cat([to_slices(images[b], axis) for b in members])
                flat = sampler.sample_ddf(slices, g).split(spatial[axis])
                fields = torch.stack([slices_to_field(f, axis) for f in flat])
            expected = (len(members), vnd, *spatial)
            if tuple(fields.shape) != expected:
                got = tuple(fields.shape)
                raise ValueError(f"{type(sampler).__name__} returned {got}, expected {expected}")
            out[members] = fields.to(out.device, out.dtype)
        return out, axis

    # ------------------------------------------------------------------ core
    def apply(
        self,
        arrays: Sequence[Array],
        is_label: Sequence[bool],
        generator: torch.Generator | None = None,
        spacing: Sequence[float] | None = None,
        *,
        modes: Sequence[str | None] | None = None,
        names: Sequence[Hashable] | None = None,
        key: Hashable | Sequence[Hashable] | None = None,
        layout: str | None = None,
        ddf: Tensor | None = None,
        ddf_slice_axis: int | None = None,
    ) -> Applied:
        """Deform ``arrays`` with ONE sampled field per sample.

        Args:
            arrays: images and label maps in one layout (the first non-label array decides it
                and is the reference the field is sampled from).
            is_label: which arrays are label maps.
            generator: the randomness (default: :meth:`generator`).
            spacing: mm per spatial axis (default: the constructor's).
            modes: per array, an image interpolation or a label method (the names of
                :func:`check_mode`); ``None`` entries take the constructor's.
            names: per array, the name used in error messages (e.g. the dict key).
            key: the bank key of the sample (a sequence for batches); banks only.
            layout: overrides the constructor's layout for this call.
            ddf: a given field ``(ndim, *spatial)`` (``(B, ndim, *spatial)`` for batches) to
                apply instead of sampling one (replaying a recorded deformation).
            ddf_slice_axis: the slice axis of a given slice-wise ``ddf`` (the
                :attr:`Applied.slice_axis` it was recorded with); ``None``: it acts in its own
                dimensionality.

        Returns:
            :class:`Applied`: the deformed arrays (same order, kinds, shapes and dtypes), the
            field and its slice axis.
        """
        if len(arrays) != len(is_label):
            raise ValueError("arrays and is_label must have the same length")
        if all(is_label):
            raise ValueError("at least one image (not a label map) is needed")
        n = len(arrays)
        names = list(names) if names is not None else [f"input {i}" for i in range(n)]
        modes = list(modes) if modes is not None else [None] * n
        ref_index = list(is_label).index(False)
        reference = _plain(arrays[ref_index])
        lay = layout or self.resolve_layout(reference)
        if lay not in ("spatial", "channel_first", "batch"):
            raise ValueError(f"layout must be 'spatial', 'channel_first' or 'batch', got {lay!r}")
        device = reference.device if isinstance(reference, Tensor) else None
        batched = lay == "batch"
        if batched:
            if reference.ndim not in (4, 5):
                raise InputError(
                    f"{names[ref_index]}: layout='batch' needs (B, C, *spatial), "
                    f"got shape {tuple(reference.shape)}"
                )
            ref = torch.stack([image_tensor(r, True, device) for r in _plain(reference)])
        else:
            ref = image_tensor(reference, lay == "channel_first", device)[None]
        spatial = tuple(ref.shape[2:])
        batch = ref.shape[0]
        keys = None if key is None else (list(key) if batched else [key])  # type: ignore[arg-type]
        if keys is not None and len(keys) != batch:
            raise ValueError(f"{len(keys)} bank keys for a batch of {batch}")
        if ddf is None:
            g = generator if generator is not None else self.generator()
            fields, axis = self.sample_fields(ref, g, spacing, keys)
        else:
            g = generator if generator is not None else self.generator()
            given = _plain(ddf)
            fields = (given if batched else given[None]).to(ref.device, ref.dtype)
            if tuple(fields.shape) != (batch, len(spatial), *spatial):
                raise InputError(
                    f"the given field has shape {tuple(ddf.shape)}, the image's grid is {spatial}"
                )
            axis = None if ddf_slice_axis is None else check_slice_axis(fields[0], ddf_slice_axis)
        outputs: list[Array] = []
        for i, (array, label) in enumerate(zip(arrays, is_label, strict=True)):
            array = _plain(array)
            if label:
                method = _label_mode(modes[i] or self.label_method, names[i])
                parts = array if batched else [array]
                if batched and len(parts) != batch:
                    raise InputError(f"{names[i]} has {len(parts)} elements, the batch {batch}")
                moved = []
                for b, part in enumerate(parts):
                    what = names[i] if isinstance(names[i], str) else f"label map {i}"
                    lab = label_tensor(part, spatial, what, ref.device)
                    warped_lab = _warp_label(lab, fields[b], method, self.padding, axis)
                    moved.append(restore_label(warped_lab, part))
                outputs.append(_stack_like(moved, array) if batched else moved[0])
                continue
            interp = _image_mode(modes[i] or self.interpolation)
            if i == ref_index:
                x = ref
            elif batched:
                x = torch.stack([image_tensor(r, True, ref.device) for r in array])
            else:
                x = image_tensor(array, lay == "channel_first", ref.device)[None]
            if tuple(x.shape[2:]) != spatial or x.shape[0] != batch:
                raise InputError(
                    f"{names[i]} has shape {tuple(array.shape)}, the image's grid is {spatial}"
                )
            warped = []
            for b in range(batch):
                out, _ = warp_tensors(
                    x[b],
                    [],
                    fields[b].to(x.dtype),
                    "onehot",
                    interp,
                    self.padding,  # type: ignore[arg-type]
                    axis,
                )
                assert out is not None
                warped.append(apply_intensity(self.intensity, out, g, axis))
            result = torch.stack(warped) if batched else warped[0]
            outputs.append(_restore_image(result, array, lay == "spatial"))
        ddf_out = fields.float() if batched else fields[0].float()
        return Applied(outputs, ddf_out, axis)

    # ------------------------------------------------------------------ calls
    def __call__(
        self,
        data: Array | Mapping[str, Any],
        *labels: Array,
        generator: torch.Generator | None = None,
        key: Hashable | Sequence[Hashable] | None = None,
    ) -> Any:
        """``deform(image, *labels)`` -> the deformed image, or ``(image, *labels)`` when label
        maps are given; ``deform(sample_dict)`` -> a new dict (see :meth:`apply_dict`).
        ``key``: the bank key of the sample (banks only)."""
        if isinstance(data, Mapping):
            if labels:
                raise TypeError("a dict sample takes no further positional arguments")
            return self.apply_dict(data, generator=generator)
        names = ["image"] + [f"label map {i}" for i in range(len(labels))]
        for name, value in zip(names, (data, *labels), strict=True):
            if isinstance(value, (tuple, list)):
                raise TypeError(
                    f"DRDMDeform: the {name} is a {type(value).__name__} of {len(value)}; pass "
                    "the image and its label maps as separate arguments, deform(image, label)"
                )
            if not isinstance(value, (Tensor, np.ndarray)):
                raise TypeError(
                    f"DRDMDeform: the {name} must be a torch tensor or a numpy array (or the "
                    f"image a dict sample), got {type(value).__name__}"
                )
        outputs = self.apply(
            [data, *labels], [False] + [True] * len(labels), generator, names=names, key=key
        ).outputs
        return outputs[0] if not labels else tuple(outputs)

    def apply_dict(
        self,
        sample: Mapping[str, Any],
        keys: Sequence[str] | None = None,
        label_keys: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
        spacing: Sequence[float] | None = None,
    ) -> dict[str, Any]:
        """Deform the entries ``keys`` (images, required) and ``label_keys`` (label maps,
        skipped when absent) of ``sample`` with one field; other entries are passed through.
        Returns a new dict (with the field under ``ddf_key`` if set)."""
        keys = self.keys if keys is None else tuple(keys)
        label_keys = self.label_keys if label_keys is None else tuple(label_keys)
        missing = [k for k in keys if k not in sample]
        if missing:
            raise KeyError(f"sample has no image entry {missing[0]!r} (has {sorted(sample)})")
        names = list(keys) + [k for k in label_keys if k in sample and k not in keys]
        flags = [False] * len(keys) + [True] * (len(names) - len(keys))
        bank_key = None
        if self.bank is not None and self.bank_key is not None:
            if self.bank_key not in sample:
                raise KeyError(f"sample has no bank key entry {self.bank_key!r}")
            bank_key = sample[self.bank_key]
            if isinstance(bank_key, Tensor):
                bank_key = bank_key.tolist()
        outputs, ddf, _ = self.apply(
            [sample[k] for k in names], flags, generator, spacing, names=names, key=bank_key
        )
        result = dict(sample)
        result.update(zip(names, outputs, strict=True))
        if self.ddf_key is not None:
            first = sample[keys[0]]
            result[self.ddf_key] = ddf if isinstance(first, Tensor) else ddf.cpu().numpy()
        return result


def check_mode(mode: str, label: bool, name: Hashable = "input") -> str:
    """The drdm name of an interpolation ``mode`` (drdm's, MONAI's or TorchIO's name) for an
    image or a label map; a ``ValueError`` naming ``name`` otherwise.

    Images (``label=False``): ``"linear"`` from ``"linear"``/``"bilinear"``/``"trilinear"``;
    ``"cubic"`` (Keys) from ``"cubic"``/``"bicubic"``; ``"lanczos"`` and ``"gaussian"``, the
    kernels of SimpleITK's ``sitkLanczosWindowedSinc`` and ``sitkGaussian`` (TorchIO's names;
    see :func:`drdm.spatial.sample`); MONAI's ``"area"`` is a downsampling average, not a warp
    kernel: it becomes ``"linear"`` with a one-line ``UserWarning`` saying so. Label maps
    (``label=True``): ``"onehot"`` from ``"onehot"``/``"bilinear"``/``"linear"``, or
    ``"nearest"``; image kernels (``"area"``, ``"bicubic"``, ``"lanczos"``, ...) are refused
    there, since they would blend label values into values that are no label.
    """
    return _label_mode(mode, name) if label else _image_mode(mode)


def warp_channels(
    x: Tensor, ddf: Tensor, mode: str, padding: Padding = "zeros", slice_axis: int | None = None
) -> Tensor:
    """Warp one channel-first sample ``x`` ``(C, *spatial)`` by ``ddf`` ``(ndim, *spatial)``
    (voxels, pull-back; with ``slice_axis`` a slice-wise 3D field, warped slice by slice
    exactly in-plane) with a MONAI or drdm mode name.

    Image interpolations as :func:`check_mode` (``"bilinear"``/``"linear"``,
    ``"bicubic"``/``"cubic"``, ``"lanczos"``, ``"gaussian"``; ``"area"`` warns and warps
    linearly). ``padding``: ``"zeros"``, ``"border"`` or ``"reflection"``. ``"onehot"``:
    label warping of integral values (one-hot channels jointly, one class per voxel; values
    that are not integral, such as probabilities, are interpolated linearly instead).
    ``"nearest"``: the nearest voxel's value. Returns ``x``'s shape, dtype and device.
    """
    integral = not x.is_floating_point() or bool((x == x.round()).all())
    field = ddf.to(x.device)
    axis = check_slice_axis(field, slice_axis)
    if mode in LABEL_METHODS and integral:
        lab = _warp_label(x.to(torch.int64), field, _label_mode(mode, "input"), padding, axis)
        return lab.to(x.dtype)
    xf = x if x.is_floating_point() else x.float()
    if mode == "nearest":
        if axis is None:
            out = warp(xf[None], field[None].to(xf.dtype), "nearest", padding)[0]
        else:
            plane = field_to_slices(field, axis).to(xf.dtype)
            out = from_slices(warp(to_slices(xf, axis), plane, "nearest", padding), axis)
    else:
        interp = "linear" if mode == "onehot" else _image_mode(mode)
        out, _ = warp_tensors(xf, [], field.to(xf.dtype), "onehot", interp, padding, axis)
        assert out is not None
    return out if x.is_floating_point() else out.round().to(x.dtype)


def _image_mode(mode: str) -> ImageMode:
    check_choice("image interpolation", mode, tuple(sorted(_IMAGE_MODES)))
    if mode in _SUBSTITUTES:
        warnings.warn(_SUBSTITUTES[mode], UserWarning, stacklevel=3)
    return _IMAGE_MODES[mode]  # type: ignore[return-value]


def _label_mode(mode: str, name: Hashable) -> str:
    if mode not in _LABEL_MODES:
        why = ""
        if mode in _IMAGE_MODES:
            why = f" ({mode!r} is an image interpolation: it blends label values)"
        raise ValueError(
            f"label {name!r}: mode must be 'onehot' (or 'bilinear') or 'nearest', got {mode!r}{why}"
        )
    return _LABEL_MODES[mode]


def _stack_like(parts: Sequence[Array], original: Array) -> Array:
    if isinstance(original, Tensor):
        return torch.stack(list(parts))  # type: ignore[arg-type]
    return np.stack(list(parts))


# ---------------------------------------------------------------------------- BigAugIntensity
class BigAugIntensity(PerProcessGenerator):
    """BigAug's six intensity transforms (sharpness, blur, noise, brightness, contrast,
    intensity perturbation; each with probability 1/2, :mod:`drdm.baselines.bigaug`) as a
    transform of its own, to compose after :class:`DRDMDeform` (``drdm augment``'s default
    recipe is the two together).

    ``transform(image)`` (``(*spatial)``, ``(C, *spatial)`` or with ``layout="batch"``
    ``(B, C, *spatial)``, one draw per batch element) or ``transform(sample_dict)`` (the entries
    ``keys``; label maps are never touched). Intensity magnitudes are fractions of each image's
    intensity range. With ``slice_axis`` set, a 3D stack is changed as its slices (filters
    in-plane, one draw for the stack), as ``drdm augment`` does for slice-wise volumes.

    Args:
        keys: image entries of dict samples (absent ones are skipped).
        slice_axis: spatial axis of 3D stacks to treat as slices (``None``: filters act along
            every axis).
        layout: ``"auto"`` (``(*spatial)`` for 2 axes, ``(C, *spatial)`` for 3 or 4),
            ``"spatial"``, ``"channel_first"`` or ``"batch"``.
        seed: as :class:`DRDMDeform`.
        **options: fields of :class:`~drdm.baselines.BigAugConfig` (e.g. ``probability``).
    """

    def __init__(
        self,
        keys: Sequence[str] = ("image",),
        *,
        slice_axis: int | None = None,
        layout: Layout = "auto",
        seed: int | None = None,
        **options: Any,
    ) -> None:
        from ..baselines import BigAug

        if isinstance(keys, str):
            raise TypeError("keys must be a sequence of strings, not a string")
        check_choice("layout", layout, LAYOUTS)
        self.keys = tuple(keys)
        self.slice_axis = slice_axis
        self.layout = layout
        self.seed = seed
        self.transform = BigAug(2, **options).intensity_transform()

    def __repr__(self) -> str:
        return f"BigAugIntensity(keys={self.keys}, slice_axis={self.slice_axis}, seed={self.seed})"

    def apply(self, image: Array, generator: torch.Generator | None = None) -> Array:
        """One image (or a batch with ``layout="batch"``) -> the changed image, same layout,
        kind and floating dtype."""
        g = generator if generator is not None else self.generator()
        x = _plain(image)
        lay = self.layout
        if lay == "auto":
            lay = "spatial" if x.ndim == 2 else "channel_first"
        if lay == "batch":
            batch = torch.stack([image_tensor(b, True, None) for b in x])
        else:
            batch = image_tensor(x, lay == "channel_first", None)[None]
        axis = self.slice_axis
        if axis is not None and batch.dim() != 5:
            raise InputError(f"slice_axis needs a 3D volume, got shape {tuple(x.shape)}")
        outs = [apply_intensity(self.transform, b, g, axis) for b in batch]
        out = torch.stack(outs) if lay == "batch" else outs[0]
        return _restore_image(out, x, lay == "spatial")

    def __call__(
        self, data: Array | Mapping[str, Any], generator: torch.Generator | None = None
    ) -> Any:
        """An image -> the changed image; a dict -> a new dict with ``keys`` changed."""
        if not isinstance(data, Mapping):
            return self.apply(data, generator)
        g = generator if generator is not None else self.generator()
        result = dict(data)
        for k in self.keys:
            if k in data:
                result[k] = self.apply(data[k], g)
        return result
