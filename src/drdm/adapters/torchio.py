"""TorchIO transform: one DRDM (or any sampler's) deformation per ``tio.Subject``.

>>> from drdm.adapters.torchio import RandomDRDMDeformation         # doctest: +SKIP
>>> transform = RandomDRDMDeformation(model, seed=0)  # doctest: +SKIP
>>> deformed = transform(subject)                                   # doctest: +SKIP

All images of the subject (they must share one grid) are deformed by the same field, sampled
from the first ``ScalarImage``: ``ScalarImage``s are warped linearly (or cubically), every
``LabelMap`` with the label method (label values and dtype kept). TorchIO stores images as
``(C, W, H, D)`` in nibabel's array order; a 2D image is ``(C, W, H, 1)``. A 2D model
therefore works slice by slice, along the one-voxel axis for 2D images and along the axis
chosen from the reference image's spacing for 3D stacks (see
:func:`drdm.deform.resolve_slice_axis`). Affines are unchanged.

Randomness as in :class:`drdm.transforms.DRDMDeform`: a per-process generator from ``seed``
and, in ``DataLoader`` workers, the worker's seed (not TorchIO's global-RNG convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

try:
    import torchio as tio
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "drdm.adapters.torchio needs TorchIO; install it with: pip install drdm[torchio]"
    ) from err

from ..deform import IntensityTransform
from ..transforms import DRDMDeform

__all__ = ["RandomDRDMDeformation"]


class RandomDRDMDeformation(tio.transforms.augmentation.RandomTransform):
    """Deform every image of a ``tio.Subject`` with one sampled field.

    Args:
        model_or_sampler: a :class:`~drdm.pipeline.DRDM` model or a
            :class:`~drdm.deform.FieldSampler`.
        level, levels: a fixed level or levels to choose from per call (DRDM models only;
            default ``(32, 48)`` for T = 80).
        slice_axis: ``"auto"`` (from the reference image's spacing) or an axis of ``(W, H, D)``.
        label_method, interpolation, padding, stack, intensity, seed, batch_size: as in
            :class:`~drdm.transforms.DRDMDeform`.
        **kwargs: TorchIO's ``Transform`` options (``p``, ``include``, ``exclude``, ...).
    """

    def __init__(
        self,
        model_or_sampler: Any,
        level: int | None = None,
        levels: Sequence[int] | None = None,
        slice_axis: str | int | None = "auto",
        label_method: str = "onehot",
        interpolation: str = "linear",
        padding: str = "zeros",
        stack: str | None = "auto",
        intensity: IntensityTransform | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deformer = DRDMDeform(
            model_or_sampler,
            level=level,
            levels=levels,
            slice_axis=slice_axis,  # type: ignore[arg-type]
            label_method=label_method,  # type: ignore[arg-type]
            interpolation=interpolation,  # type: ignore[arg-type]
            padding=padding,  # type: ignore[arg-type]
            stack=stack,
            intensity=intensity,
            channel_first=True,
            seed=seed,
            batch_size=batch_size,
        )

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        """Deform the subject's images in place (TorchIO copies the subject first)."""
        subject.check_consistent_spatial_shape()
        images = subject.get_images_dict(
            intensity_only=False, include=self.include, exclude=self.exclude
        )
        if not images:
            return subject
        names = list(images)
        flags = [images[n].type == tio.LABEL for n in names]
        if all(flags):
            raise ValueError("RandomDRDMDeformation needs a ScalarImage in the subject")
        reference = images[names[flags.index(False)]]
        arrays = [images[n].data for n in names]
        outputs, _ = self.deformer.apply(
            arrays, flags, spacing=tuple(float(s) for s in reference.spacing)
        )
        for name, out in zip(names, outputs, strict=True):
            assert isinstance(out, torch.Tensor)
            images[name].set_data(out)
        return subject
