"""MONAI dictionary transform: one DRDM (or any sampler's) deformation per sample.

>>> from drdm.adapters.monai import DRDMDeformd                     # doctest: +SKIP
>>> transform = DRDMDeformd(["image", "label"], model, label_keys=["label"], levels=(32, 48))
...                                                                  # doctest: +SKIP

Inputs are MONAI's channel-first ``(C, *spatial)`` arrays or ``MetaTensor``s; the voxel
spacing for the slice axis of a 2D model on 3D stacks comes from each ``MetaTensor``'s affine
(``pixdim``). Outputs keep the inputs' type, and ``MetaTensor`` outputs keep the input's
affine and metadata (the grid does not change). The transform is not invertible.

Randomness follows MONAI: every call draws a seed from the transform's ``self.R``
(``set_random_state``, ``monai.utils.set_determinism``, MONAI's ``DataLoader`` seeding its
workers); inside a ``DataLoader`` worker the worker's seed is mixed in as well, so workers of a
plain PyTorch ``DataLoader`` do not repeat each other's deformations.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

try:
    from monai.config import KeysCollection
    from monai.data import MetaTensor
    from monai.transforms import MapTransform, RandomizableTransform
    from monai.utils import ensure_tuple
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "drdm.adapters.monai needs MONAI; install it with: pip install drdm[monai]"
    ) from err

from ..deform import IntensityTransform
from ..transforms import DRDMDeform

__all__ = ["DRDMDeformd"]


def _spacing_of(value: Any) -> tuple[float, ...] | None:
    if isinstance(value, MetaTensor):  # channel-first: ndim - 1 spatial axes
        return tuple(float(s) for s in value.pixdim[: value.ndim - 1])
    return None


class DRDMDeformd(RandomizableTransform, MapTransform):
    """Deform ``keys`` (images) and ``label_keys`` (label maps) of a dict sample consistently.

    Args:
        keys: entries to deform; the field is sampled from the first one that is not a label.
        model_or_sampler: a :class:`~drdm.pipeline.DRDM` model or a
            :class:`~drdm.deform.FieldSampler`.
        label_keys: entries warped as label maps (added to ``keys`` if missing there).
        level, levels: a fixed level or levels to choose from per call (DRDM models only;
            default ``(32, 48)`` for T = 80).
        prob: probability of deforming a sample (MONAI's ``RandomizableTransform``).
        slice_axis, spacing: slice axis of a 2D model on 3D stacks (``spacing`` overrides the
            ``MetaTensor``'s).
        label_method, interpolation, padding, stack, intensity, batch_size: as in
            :class:`~drdm.transforms.DRDMDeform`.
        ddf_key: if set, the field ``(ndim, *spatial)`` in voxels (pull-back) is stored there
            (a zero field when the sample is not deformed).
        seed: seeds ``self.R`` (as ``set_random_state(seed)``).
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
        slice_axis: str | int | None = "auto",
        spacing: Sequence[float] | None = None,
        label_method: str = "onehot",
        interpolation: str = "linear",
        padding: str = "zeros",
        stack: str | None = "auto",
        intensity: IntensityTransform | None = None,
        ddf_key: str | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
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
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.ddf_key = ddf_key
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
            batch_size=batch_size,
        )
        self._seed = 0
        if seed is not None:
            self.set_random_state(seed=seed)

    def randomize(self, data: Any = None) -> None:
        """Decide whether to deform and draw this call's seed from ``self.R``."""
        super().randomize(None)
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def _generator(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        entropy = [self._seed] + ([int(info.seed) % 2**63, int(info.id)] if info else [])
        value = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(value >> np.uint64(1)))

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
        reference = d[names[flags.index(False)]]
        if not self._do_transform:
            if self.ddf_key is not None:  # channel-first inputs: the field has ndim - 1 axes
                d[self.ddf_key] = torch.zeros(reference.ndim - 1, *reference.shape[1:])
            return d
        spacing = self.spacing or _spacing_of(reference)
        outputs, ddf = self.deformer.apply(
            [d[k] for k in names], flags, generator=self._generator(), spacing=spacing
        )
        for key, out in zip(names, outputs, strict=True):
            original = d[key]
            if isinstance(original, MetaTensor):
                meta = dict(original.meta)
                meta["affine"] = original.affine.clone()
                out = MetaTensor(out, meta=meta)
            d[key] = out
        if self.ddf_key is not None:
            d[self.ddf_key] = ddf
        return d
