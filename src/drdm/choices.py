"""Vocabularies of choices that the library checks and the command line offers, importable
without torch (``drdm --help`` builds its option lists from them without loading torch).

Each vocabulary is defined here once, as a ``Literal`` type alias that the library's type
hints use; the tuple of its values is derived from the alias (``typing.get_args``), and
:func:`check_choice` checks a value against it. The modules that act on a choice import it
from here: :mod:`drdm.spatial` (interpolation modes, paddings, label warpings),
:mod:`drdm.pipelines` (image modes, methods, stacks), :mod:`drdm.nn.engine` (engines),
:mod:`drdm.io` (DDF formats) and :mod:`drdm.batch.method` (the methods of the batch commands).
"""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

from .errors import InputError

__all__ = [
    "BATCH_METHODS",
    "COMPOSE_PADDINGS",
    "DDF_FORMATS",
    "ENGINES",
    "FIELD_IMAGE_MODES",
    "IMAGE_MODES",
    "INTERP_MODES",
    "LABEL_METHODS",
    "LR_SCHEDULES",
    "METHODS",
    "PADDINGS",
    "STACKS",
    "ComposePadding",
    "DdfFormat",
    "Engine",
    "FieldImageMode",
    "ImageMode",
    "InterpMode",
    "LabelMethod",
    "LrSchedule",
    "Method",
    "Padding",
    "Stack",
    "check_choice",
]

S = TypeVar("S", bound=str)

#: how the network runs (:func:`drdm.nn.engine.resolve_engine`)
Engine = Literal["auto", "torch", "onnxruntime"]
ENGINES: tuple[str, ...] = get_args(Engine)

#: method names accepted by :func:`drdm.pipelines.registry.make_method`
Method = Literal["none", "elastic", "mrbs", "bigaug", "drdm"]
METHODS: tuple[str, ...] = get_args(Method)
#: names accepted by :func:`drdm.pipelines.registry.make_stack`
Stack = Literal["none", "bigaug", "affine"]
STACKS: tuple[str, ...] = get_args(Stack)
#: the methods a batch command runs (the registry's names without ``"none"``)
BATCH_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "none")

#: interpolation modes of :func:`drdm.spatial.sample` / :func:`drdm.spatial.warp`
InterpMode = Literal["linear", "cubic", "lanczos", "gaussian", "nearest"]
INTERP_MODES: tuple[str, ...] = get_args(InterpMode)
#: image interpolations of the pipelines and transforms (the kernels of ``InterpMode`` that
#: blend values)
ImageMode = Literal["linear", "cubic", "lanczos", "gaussian"]
IMAGE_MODES: tuple[str, ...] = get_args(ImageMode)
#: image interpolations of the forward processes and the sampler
FieldImageMode = Literal["linear", "cubic"]
FIELD_IMAGE_MODES: tuple[str, ...] = get_args(FieldImageMode)

#: values outside the image when sampling (:func:`drdm.spatial.sample`, the pipelines)
Padding = Literal["zeros", "border", "reflection"]
PADDINGS: tuple[str, ...] = get_args(Padding)
#: the paddings of field composition and of the network's and sampler's warps
ComposePadding = Literal["zeros", "border"]
COMPOSE_PADDINGS: tuple[str, ...] = get_args(ComposePadding)

#: label-map warping: ``"onehot"`` (each label's indicator linearly, arg-max) or ``"nearest"``
LabelMethod = Literal["onehot", "nearest"]
LABEL_METHODS: tuple[str, ...] = get_args(LabelMethod)

#: displacement-field files: ``"nifti"`` (millimetres) or ``"npy"`` (voxels)
DdfFormat = Literal["nifti", "npy"]
DDF_FORMATS: tuple[str, ...] = get_args(DdfFormat)

#: learning rate over a training run (:func:`drdm.training.config.learning_rate`):
#: ``"constant"`` or ``"cosine"`` (half a cosine from ``lr`` down to ``lr_min``)
LrSchedule = Literal["constant", "cosine"]
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)


def check_choice(name: str, value: S, choices: tuple[str, ...]) -> S:
    """``value`` if it is one of ``choices``, else an :class:`~drdm.errors.InputError` (a
    ``ValueError``) naming the parameter ``name`` and the choices on one line."""
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value
