"""The one registry of deformation methods, stacks and default levels: the names the command
line, the batch runner, the transforms and the experiments accept, and how each is built."""

from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Any

from ..baselines.bigaug import BigAug, BigAugConfig
from ..baselines.elastic import ElasticSampler
from ..baselines.mrbs import MRBSSampler
from ..choices import METHODS, STACKS
from ..errors import InputError
from .core import DRDMSampler

if TYPE_CHECKING:
    from ..model import DRDM
    from .core import FieldSampler, IntensityTransform

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_LEVEL_FRACTIONS",
    "DEFAULT_STACK",
    "METHODS",
    "STACKS",
    "default_levels",
    "make_method",
    "make_stack",
    "resolve_stack",
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

#: what ``drdm augment``'s default recipe stacks after a DRDM deformation: BigAug's nine
#: transforms (its rotation, scaling and elastic deformation composed into the same field, its
#: intensity transforms after the warp), the best DRDM recipe of the segmentation experiments
#: at 32 copies (level with BigAug alone, not better; docs/experiments.md). :class:`DRDMDeform`
#: stacks only the geometric part by default; :class:`BigAugIntensity` is the rest.
DEFAULT_STACK = "bigaug"


def resolve_stack(stack: str | None, drdm: bool) -> str | None:
    """``"auto"`` -> :data:`DEFAULT_STACK` for a DRDM model (``drdm=True``), ``None`` for any
    other sampler; other values are returned unchanged (checked by
    :func:`drdm.pipelines.make_stack`)."""
    if stack == "auto":
        return DEFAULT_STACK if drdm else None
    return stack


def _check_options(name: str, target: Any, options: dict[str, Any], skip: int) -> None:
    """Unknown keyword options are a user error (one line naming the method)."""
    params = list(inspect.signature(target).parameters.values())[skip:]
    allowed = {p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD}
    if target is BigAug:
        allowed |= {f.name for f in dataclasses.fields(BigAugConfig)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"method {name!r}: unknown option(s) {unknown}; known: {sorted(allowed)}")


def make_method(
    name: str,
    ndim: int,
    model: DRDM | None = None,
    level: int | None = None,
    **options: Any,
) -> tuple[FieldSampler | None, IntensityTransform | None]:
    """A deformation method by name: ``(field sampler or None, intensity transform or None)``.

    * ``"none"``: ``(None, None)``;
    * ``"elastic"``: ``ElasticSampler(ndim, **options)``;
    * ``"mrbs"``: ``MRBSSampler(ndim, **options)``;
    * ``"bigaug"``: ``BigAug(ndim, **options)`` as ``(field_sampler(), intensity_transform())``;
    * ``"drdm"``: ``DRDMSampler(model, level, **options)`` (needs ``model`` and ``level``; the
      sampler's ``ndim`` is the model's, and a 2D model deforms 3D volumes slice by slice in
      :func:`drdm.pipelines.deform_volume`).

    Names are case-insensitive. Unknown names or options, or ``"drdm"`` without a model or
    level, raise :class:`~drdm.errors.InputError`.
    """
    key = str(name).lower()
    if key not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    if key != "drdm" and ndim not in (2, 3):
        raise InputError(f"method {key!r}: ndim must be 2 or 3, got {ndim}")
    if key == "none":
        if options:
            raise InputError(f"method 'none' takes no options, got {sorted(options)}")
        return None, None
    if key == "elastic":
        _check_options(key, ElasticSampler, options, skip=1)
        return ElasticSampler(ndim, **options), None
    if key == "mrbs":
        _check_options(key, MRBSSampler, options, skip=1)
        return MRBSSampler(ndim, **options), None
    if key == "bigaug":
        _check_options(key, BigAug, options, skip=1)
        aug = BigAug(ndim, **options)
        return aug.field_sampler(), aug.intensity_transform()
    if model is None or level is None:
        missing = " and ".join(n for n, v in (("a model", model), ("a level", level)) if v is None)
        raise InputError(f"method 'drdm' needs {missing} (e.g. model='default', level=45)")
    _check_options(key, DRDMSampler, options, skip=2)
    return DRDMSampler(model, level, **options), None


def make_stack(
    name: str | None, ndim: int
) -> tuple[FieldSampler | None, IntensityTransform | None]:
    """Transforms stacked AFTER a deformation, as ``(field sampler, intensity transform)``:

    * ``"bigaug"``: all nine BigAug transforms: its rotation, scaling and elastic deformation
      as a sampler whose field is composed after the first deformation (see ``then`` of
      :func:`drdm.pipelines.deform_volume`), its six intensity transforms after the warp;
    * ``"affine"``: BigAug's rotation and scaling only (probability 1/2 each), no intensity;
    * ``"none"`` or ``None``: ``(None, None)``.

    ``ndim`` is the dimensionality of the stacked transforms (2: in-plane).
    """
    key = "none" if name is None else str(name).lower()
    if key not in STACKS:
        raise InputError(f"unknown stack {name!r}; choose one of {', '.join(STACKS)}")
    if ndim not in (2, 3):
        raise InputError(f"stack {key!r}: ndim must be 2 or 3, got {ndim}")
    if key == "none":
        return None, None
    if key == "affine":
        return BigAug(ndim, probabilities={"deformation": 0.0}).field_sampler(), None
    aug = BigAug(ndim)
    return aug.field_sampler(), aug.intensity_transform()
