"""Offline augmentation for the segmentation experiment (paper Algorithm 3).

A method is written as a short spec string::

    base[@L1/L2/...][+flip][+intensity][+affine][+bigaug]

* ``base``: ``none``, ``elastic``, ``bigaug``, ``mrbs`` or ``drdm`` (the samplers of
  :func:`drdm.pipelines.make_method`);
* ``@L1/L2``: DRDM deformation levels ``T'``; copy ``k`` of an image uses level
  ``L[k mod n]`` (Algorithm 3 loops over a set of levels);
* ``+flip``: a random flip along every in-plane axis (probability 1/2 each) of image and labels;
* ``+intensity``: the intensity part of BigAug (sharpness, blur, noise, brightness, contrast,
  intensity perturbation) applied after the deformation;
* ``+affine``: BigAug's rotation and scaling (probability 1/2 each) composed after the base
  deformation (one field, one warp);
* ``+bigaug``: all nine BigAug transforms after the base deformation: its spatial field
  (rotation, scaling, elastic deformation) composed after the base field, its intensity part
  after the warp. ``drdm+bigaug`` is BigAug with a DRDM deformation stacked in front of it.

Randomness: the field of copy ``k`` of image ``i`` is drawn from a generator seeded by
``(seed, i, k, base, level)`` only, so the same copy gets the same deformation in every method
that shares its base and level (``drdm`` and ``drdm+flip`` differ by the flips alone), and
fields can be cached across methods of one run. Flips and intensity draw from another generator
seeded by ``(seed, i, k)`` and the parsed spec (``drdm+intensity`` with the default levels
32/48 is the same method as ``drdm@32/48+intensity``); the ``+affine``/``+bigaug`` fields are
drawn from that generator first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InputError
from ..pipelines.registry import METHODS
from ..seeding import key_generator

__all__ = ["AugmentationSpec", "Augmenter", "parse_method"]

BASES = METHODS  # the registry's method names
MODIFIERS = ("flip", "intensity", "affine", "bigaug")


@dataclass(frozen=True)
class AugmentationSpec:
    """A parsed method spec (see the module docstring)."""

    text: str
    base: str
    levels: tuple[int, ...] = ()
    flip: bool = False
    intensity: bool = False
    affine: bool = False
    bigaug: bool = False

    @property
    def augments(self) -> bool:
        """Whether this method makes augmented copies at all (``none`` alone does not)."""
        return self.base != "none" or self.flip or self.intensity or self.affine or self.bigaug


def parse_method(text: str, default_levels: tuple[int, ...] = ()) -> AugmentationSpec:
    """Parse ``base[@L1/L2][+flip][+intensity][+affine][+bigaug]``; ``drdm`` without ``@`` uses
    ``default_levels``. Raises :class:`InputError` for an unknown part."""
    parts = text.strip().split("+")
    head, mods = parts[0], parts[1:]
    base, _, level_text = head.partition("@")
    if base not in BASES:
        raise InputError(f"method {text!r}: unknown base {base!r} (expected {', '.join(BASES)})")
    unknown = [m for m in mods if m not in MODIFIERS]
    if unknown:
        raise InputError(
            f"method {text!r}: unknown modifier(s) {', '.join(unknown)} "
            f"(expected {', '.join(MODIFIERS)})"
        )
    levels: tuple[int, ...] = ()
    if level_text:
        if base != "drdm":
            raise InputError(f"method {text!r}: levels (@...) apply to drdm only")
        try:
            levels = tuple(int(v) for v in level_text.split("/"))
        except ValueError:
            raise InputError(f"method {text!r}: levels must be integers like @20/40") from None
    elif base == "drdm":
        levels = tuple(default_levels)
    if base == "drdm" and not levels:
        raise InputError(f"method {text!r}: no DRDM levels given")
    if min(levels, default=1) < 1:
        raise InputError(f"method {text!r}: levels must be >= 1")
    if len(set(mods)) != len(mods):
        raise InputError(f"method {text!r}: a modifier is repeated")
    if "affine" in mods and "bigaug" in mods:
        raise InputError(f"method {text!r}: +bigaug already contains +affine")
    flags = {m: m in mods for m in MODIFIERS}
    return AugmentationSpec(text.strip(), base, levels, **flags)


def _random_flip(image: Tensor, label: Tensor, ndim: int, generator: torch.Generator) -> tuple:
    axes = [-ndim + a for a in range(ndim) if float(torch.rand((), generator=generator)) < 0.5]
    if axes:
        image, label = image.flip(axes), label.flip(axes)
    return image, label


class Augmenter:
    """Makes augmented copies of labelled images for one method spec.

    Args:
        spec: the parsed method.
        ndim: 2 or 3.
        model: the DRDM model (needed by ``drdm`` specs).
        field_cache: optional dict shared between augmenters of one run; fields are stored
            under ``(seed, image index, copy, base, level)``.
        options: extra keyword options for :func:`drdm.pipelines.make_method`.
    """

    def __init__(
        self,
        spec: AugmentationSpec,
        ndim: int,
        model: object | None = None,
        field_cache: dict | None = None,
        options: dict | None = None,
    ) -> None:
        from ..pipelines.registry import make_method, make_stack

        self.spec = spec
        self.ndim = ndim
        self.cache = field_cache if field_cache is not None else {}
        options = dict(options or {})
        self._samplers: dict[int | None, object] = {}
        self._intensity: Callable | None = None
        if spec.base == "drdm":
            if model is None:
                raise InputError(f"method {spec.text!r} needs a DRDM model")
            for level in spec.levels:
                sampler, _ = make_method("drdm", ndim, model=model, level=level, **options)
                self._samplers[level] = sampler
        elif spec.base != "none":
            sampler, intensity = make_method(spec.base, ndim, **options)
            self._samplers[None] = sampler
            self._intensity = intensity
        stack = "bigaug" if spec.bigaug else "affine" if spec.affine else None
        self._post = make_stack(stack, ndim)[0]  # BigAug's spatial part, after the base field
        if (spec.intensity or spec.bigaug) and self._intensity is None:
            self._intensity = make_stack("bigaug", ndim)[1]

    def level_of(self, copy: int) -> int | None:
        """The DRDM level of copy ``copy`` (``None`` for other bases)."""
        return self.spec.levels[copy % len(self.spec.levels)] if self.spec.levels else None

    def field(self, image: Tensor, seed: int, index: int, copy: int) -> Tensor | None:
        """The displacement ``(ndim, *spatial)`` (voxels) of copy ``copy`` of image ``index``."""
        if self.spec.base == "none":
            return None
        from ..pipelines.core import sample_field

        level = self.level_of(copy)
        key = (seed, index, copy, self.spec.base, level)
        if key not in self.cache:
            sampler = self._samplers[level]
            g = key_generator("field", *key)
            self.cache[key] = sample_field(sampler, image, g, slice_axis=None).float()  # type: ignore[arg-type]
        return self.cache[key]

    def copy(
        self, image: Tensor, label: Tensor, seed: int, index: int, copy: int
    ) -> tuple[Tensor, Tensor]:
        """Augmented copy ``copy`` of ``(image (*spatial) float, label (*spatial) int64)``."""
        from ..pipelines.core import stack_field, warp_volume

        spec = self.spec
        key: tuple = ("extra", seed, index, copy, spec.base, spec.levels, spec.flip, spec.intensity)
        if spec.affine or spec.bigaug:  # (keeps the keys, hence the draws, of older specs)
            key += (("affine", spec.affine), ("bigaug", spec.bigaug))
        g = key_generator(*key)
        ddf = self.field(image, seed, index, copy)
        if self._post is not None:  # BigAug's spatial part acts after the base field
            base = ddf if ddf is not None else image.new_zeros((self.ndim, *image.shape)).float()
            ddf = stack_field(self._post, image[None].float(), base, None, g)
        if ddf is not None:
            warped, (warped_label,) = warp_volume(image, ddf, [label])
            assert warped is not None
            image = torch.from_numpy(warped)
            label = torch.from_numpy(warped_label)
        if self.spec.flip:
            image, label = _random_flip(image, label, self.ndim, g)
        if self._intensity is not None:
            image = self._intensity(image[None, None], g)[0, 0]
        return image.contiguous(), label.contiguous()
