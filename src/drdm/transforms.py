"""On-the-fly deformation for training pipelines (PyTorch ``Dataset`` / ``DataLoader``).

>>> deform = DRDMDeform(DRDM.from_pretrained("default"), seed=0)  # doctest: +SKIP
...     # the default recipe: DRDM at level 32 or 48, then BigAug (stack="bigaug")
>>> image, label = deform(image, label)            # (C, H, W) tensors   # doctest: +SKIP
>>> sample = deform({"image": image, "label": label})                   # doctest: +SKIP

One deformation is sampled per call and applied consistently to the image(s) and every label
map (see :func:`drdm.deform.deform_volume` for the geometry: one native-resolution warp, 2D
models slice by slice on 3D stacks). Any :class:`~drdm.deform.FieldSampler` can be used in
place of a DRDM model, and an optional :class:`~drdm.deform.IntensityTransform` is applied to
the deformed images.

Randomness: each process (the main process and every ``DataLoader`` worker) creates its own
``torch.Generator`` lazily on first use, seeded from ``seed`` and, inside a worker, from the
worker's seed (``torch.utils.data.get_worker_info().seed``, which PyTorch makes different
for every worker and every epoch). Workers therefore never repeat each other's deformations,
and a run is reproducible when ``seed`` is set and the ``DataLoader``'s own seed is (pass it
``generator=torch.Generator().manual_seed(...)``, or call ``torch.manual_seed``). With
``seed=None`` the main process seeds from OS entropy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .deform import (
    DRDMSampler,
    FieldSampler,
    ImageMode,
    IntensityTransform,
    LabelMethod,
    Padding,
    SliceAxis,
    _image_tensor,
    _intensity_t,
    _label_tensor,
    _restore_label,
    _sample_field_t,
    _stack_t,
    _warp_t,
)

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_LEVEL_FRACTIONS",
    "DEFAULT_STACK",
    "DRDMDeform",
    "default_levels",
    "resolve_stack",
    "worker_generator",
]

#: default augmentation levels T' as fractions of the model's T: 0.4 and 0.6, i.e. 32 and 48 of
#: T = 80, the best DRDM recipe of the few-shot segmentation search (docs/experiments.md)
DEFAULT_LEVEL_FRACTIONS = (0.4, 0.6)


def default_levels(num_steps: int) -> tuple[int, ...]:
    """The default augmentation levels for a model with ``num_steps`` (T) steps: the
    :data:`DEFAULT_LEVEL_FRACTIONS` of T rounded, at least 1, without repeats
    (``(32, 48)`` for T = 80)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    levels = (max(1, min(num_steps, round(f * num_steps))) for f in DEFAULT_LEVEL_FRACTIONS)
    return tuple(dict.fromkeys(levels))


#: the default levels of a model with T = 80 steps (all packaged models)
DEFAULT_LEVELS = default_levels(80)

#: what the default recipe stacks after a DRDM deformation: BigAug's nine transforms (its
#: rotation, scaling and elastic deformation composed into the same field, its intensity
#: transforms after the warp), the best DRDM recipe of the segmentation experiments at 32
#: copies (level with BigAug alone, not better; docs/experiments.md)
DEFAULT_STACK = "bigaug"


def resolve_stack(stack: str | None, drdm: bool) -> str | None:
    """``"auto"`` -> :data:`DEFAULT_STACK` for a DRDM model (``drdm=True``), ``None`` for any
    other sampler; other values are returned unchanged (checked by
    :func:`drdm.baselines.make_stack`)."""
    if stack == "auto":
        return DEFAULT_STACK if drdm else None
    return stack


Array = np.ndarray | Tensor


def worker_generator(seed: int | None) -> torch.Generator:
    """A ``torch.Generator`` for the current process, seeded from ``seed`` and (inside a
    ``DataLoader`` worker) the worker's seed; ``seed=None`` in the main process uses OS
    entropy."""
    info = torch.utils.data.get_worker_info()
    entropy = [] if seed is None else [int(seed) % 2**63]
    if info is not None:
        entropy += [int(info.seed) % 2**63, int(info.id)]
    sequence = np.random.SeedSequence(entropy if entropy else None)
    value = int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    return torch.Generator().manual_seed(value)


def _process_key() -> tuple[int, int | None, int | None]:
    info = torch.utils.data.get_worker_info()
    if info is None:
        return os.getpid(), None, None
    return os.getpid(), int(info.id), int(info.seed)


class DRDMDeform:
    """Random deformation of an image and its label maps, one deformation per call.

    Args:
        model_or_sampler: a :class:`~drdm.pipeline.DRDM` model, or any
            :class:`~drdm.deform.FieldSampler` (e.g. a baseline from ``drdm.baselines``).
        level: a fixed deformation level ``T'`` (DRDM models only).
        levels: levels to choose from uniformly at random per call (DRDM models only);
            default :func:`default_levels` of the model's T (``(32, 48)`` for T = 80) unless
            ``level`` is given.
        keys: image entries of a dict sample (the field is sampled from the first one and
            applied to all); they must be present.
        label_keys: label-map entries of a dict sample (skipped when absent).
        slice_axis, spacing: for a 2D model on 3D volumes (see
            :func:`drdm.deform.resolve_slice_axis`); ``spacing`` in mm per spatial axis.
        label_method: ``"onehot"`` or ``"nearest"`` label warping.
        interpolation: ``"linear"`` or ``"cubic"`` image warping; ``padding``: ``"zeros"`` or
            ``"border"``.
        stack: transforms stacked after the deformation (:func:`drdm.baselines.make_stack`):
            ``"bigaug"`` (BigAug's rotation, scaling and elastic deformation composed into the
            same field, its six intensity transforms after the warp), ``"affine"`` (BigAug's
            rotation and scaling) or ``None``. ``"auto"`` (default): :data:`DEFAULT_STACK`
            for DRDM models (the default recipe), ``None`` for a FieldSampler. The stacked
            transforms have the model's dimensionality: a 2D model on a 3D stack rotates and
            scales every slice alike.
        intensity: optional :class:`~drdm.deform.IntensityTransform` applied to the deformed
            images (after the warp); it replaces the intensity part of ``stack``.
        channel_first: layout of the inputs: ``True`` ``(C, *spatial)``, ``False``
            ``(*spatial)``, ``None`` (default) decides from the number of axes: ``ndim`` axes
            of the model -> no channel axis, ``ndim + 1`` -> channel first (so a bare 3D stack
            for a 2D model needs ``channel_first=False``), and ``(C, D, H, W)`` for a 2D model.
            Label maps follow the image: ``(*spatial)`` or ``(L, *spatial)``.
        seed: base seed of the per-process generators (module docstring); ``None``: entropy.
        ddf_key: if set, dict samples also get the field ``(ndim, *spatial)`` (voxels,
            pull-back) under this key.
        batch_size: slices per network call for DRDM models (``None``: all at once).

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
        stack: str | None = "auto",
        intensity: IntensityTransform | None = None,
        channel_first: bool | None = None,
        seed: int | None = None,
        ddf_key: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        from .baselines import make_stack
        from .pipeline import DRDM

        if level is not None and levels is not None:
            raise ValueError("give either level or levels, not both")
        if isinstance(model_or_sampler, DRDM):
            if level is not None:
                chosen = [level]
            elif levels is None:
                chosen = list(default_levels(model_or_sampler.num_steps))
            else:
                chosen = list(levels)
            if not chosen:
                raise ValueError("levels must not be empty")
            self.samplers: list[FieldSampler] = [
                DRDMSampler(model_or_sampler, lvl, batch_size=batch_size) for lvl in chosen
            ]
        else:
            ndim = getattr(model_or_sampler, "ndim", None)
            if not callable(getattr(model_or_sampler, "sample_ddf", None)) or ndim not in (2, 3):
                kind = type(model_or_sampler).__name__
                raise TypeError(f"expected a DRDM model or a FieldSampler, got {kind}")
            if level is not None or levels is not None:
                raise ValueError("level/levels apply to DRDM models only, not to a FieldSampler")
            self.samplers = [model_or_sampler]
        self.stack = resolve_stack(stack, isinstance(model_or_sampler, DRDM))
        self.then, stacked_intensity = make_stack(self.stack, self.samplers[0].ndim)
        if isinstance(keys, str) or isinstance(label_keys, str):
            raise TypeError("keys and label_keys must be sequences of strings, not a string")
        if not keys:
            raise ValueError("keys must name at least one image entry")
        self.keys = tuple(keys)
        self.label_keys = tuple(label_keys)
        self.slice_axis = slice_axis
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.label_method = label_method
        self.interpolation = interpolation
        self.padding = padding
        self.intensity = intensity if intensity is not None else stacked_intensity
        self.channel_first = channel_first
        self.seed = seed
        self.ddf_key = ddf_key
        self._generator: torch.Generator | None = None
        self._generator_key: tuple[int, int | None, int | None] | None = None

    @property
    def ndim(self) -> int:
        """Spatial dimensionality of the model/sampler (2 or 3)."""
        return int(self.samplers[0].ndim)

    def __repr__(self) -> str:
        return (
            f"DRDMDeform(samplers={self.samplers!r}, stack={self.stack!r}, keys={self.keys}, "
            f"label_keys={self.label_keys}, seed={self.seed})"
        )

    # pickling (spawned DataLoader workers): generators are per process, never shipped
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_generator"] = None
        state["_generator_key"] = None
        return state

    def generator(self) -> torch.Generator:
        """This process's generator (created lazily; see the module docstring)."""
        key = _process_key()
        if self._generator is None or self._generator_key != key:
            self._generator = worker_generator(self.seed)
            self._generator_key = key
        return self._generator

    # ------------------------------------------------------------------ core
    def _has_channel(self, image: Array) -> bool:
        if self.channel_first is not None:
            return bool(self.channel_first)
        dims = image.ndim
        if dims == self.ndim:
            return False
        if dims == self.ndim + 1 or (self.ndim == 2 and dims == 4):
            return True
        raise ValueError(
            f"cannot tell the layout of an input of shape {tuple(image.shape)} for a "
            f"{self.ndim}D model: expected (*spatial) or (C, *spatial); set channel_first"
        )

    def apply(
        self,
        arrays: Sequence[Array],
        is_label: Sequence[bool],
        generator: torch.Generator | None = None,
        spacing: Sequence[float] | None = None,
    ) -> tuple[list[Array], Tensor]:
        """Deform ``arrays`` with ONE sampled field; the first non-label array is the reference
        the field is sampled from. Returns the deformed arrays (same order, kinds and shapes)
        and the field ``(ndim, *spatial)`` (voxels, float32, on the reference's device)."""
        if len(arrays) != len(is_label):
            raise ValueError("arrays and is_label must have the same length")
        if all(is_label):
            raise ValueError("at least one image (not a label map) is needed")
        g = generator if generator is not None else self.generator()
        ref_index = list(is_label).index(False)
        reference = arrays[ref_index]
        channel = self._has_channel(reference)
        device = reference.device if isinstance(reference, Tensor) else None
        ref = _image_tensor(reference, channel, device)
        spatial = tuple(ref.shape[1:])
        sampler = self.samplers[0]
        if len(self.samplers) > 1:
            sampler = self.samplers[int(torch.randint(len(self.samplers), (1,), generator=g))]
        sp = spacing if spacing is not None else self.spacing
        ddf, axis = _sample_field_t(sampler, ref, g, self.slice_axis, sp)
        if self.then is not None:
            ddf = _stack_t(self.then, ref, ddf, axis, g)
        outputs: list[Array] = []
        for i, (array, label) in enumerate(zip(arrays, is_label, strict=True)):
            if label:
                lab = _label_tensor(array, spatial, i, ref.device)
                _, (warped,) = _warp_t(
                    None, [lab], ddf, self.label_method, self.interpolation, self.padding
                )
                outputs.append(_restore_label(warped, array))
                continue
            x = ref if i == ref_index else _image_tensor(array, channel, ref.device)
            if tuple(x.shape[1:]) != spatial:
                raise ValueError(
                    f"input {i} has spatial shape {tuple(x.shape[1:])}, the image {spatial}"
                )
            warped, _ = _warp_t(
                x, [], ddf.to(x.dtype), self.label_method, self.interpolation, self.padding
            )
            assert warped is not None
            warped = _intensity_t(self.intensity, warped, g, axis)
            outputs.append(_restore_image(warped, array, channel))
        return outputs, ddf.float()

    # ------------------------------------------------------------------ calls
    def __call__(
        self,
        data: Array | Mapping[str, Any],
        *labels: Array,
        generator: torch.Generator | None = None,
    ) -> Any:
        """``deform(image, *labels)`` -> the deformed image, or ``(image, *labels)`` when label
        maps are given; ``deform(sample_dict)`` -> a new dict (see :meth:`apply_dict`)."""
        if isinstance(data, Mapping):
            if labels:
                raise TypeError("a dict sample takes no further positional arguments")
            return self.apply_dict(data, generator=generator)
        outputs, _ = self.apply([data, *labels], [False] + [True] * len(labels), generator)
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
        outputs, ddf = self.apply([sample[k] for k in names], flags, generator, spacing)
        result = dict(sample)
        result.update(zip(names, outputs, strict=True))
        if self.ddf_key is not None:
            first = sample[keys[0]]
            result[self.ddf_key] = ddf if isinstance(first, Tensor) else ddf.cpu().numpy()
        return result


def _restore_image(out: Tensor, original: Array, channel: bool) -> Array:
    """``(C, *spatial)`` -> the original's layout and kind; floating dtypes are kept."""
    out = out if channel else out[0]
    if isinstance(original, Tensor):
        dtype = original.dtype if original.is_floating_point() else torch.float32
        return out.to(device=original.device, dtype=dtype)
    array = out.cpu().numpy()
    if np.issubdtype(original.dtype, np.floating):
        array = array.astype(original.dtype, copy=False)
    return array
