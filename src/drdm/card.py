"""The model card: what a checkpoint says about its model beyond the network weights.

``config.json`` of a checkpoint (:mod:`drdm.checkpoint`) stores it under ``"extra"``::

    {"preset": "drdm" | "official",          # which forward process the network was trained with
     "forward": {...},                        # that process's config
     "image_size": [H, W(, D)],               # the grid the network works on
     "sampler": {...},                        # optional: the recovery loop's settings
     "training": {...},                       # free-form description: data, steps, ...
     "source": {...}}                         # optional: provenance of imported weights

:class:`ModelCard` is the one typed form of it, written by :meth:`drdm.DRDM.save_pretrained`,
the trainer and ``drdm import-official``, and read by :meth:`drdm.DRDM.from_pretrained`.
Checkpoints written before the card existed load unchanged (the same keys).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import from_dict, to_dict
from .diffusion import ForwardDiffusion, ForwardDiffusionConfig
from .diffusion.official_process import OfficialForwardProcess, OfficialProcessConfig
from .sampling import SamplerConfig, official_sampler_config

__all__ = ["OFFICIAL_IMAGE_SIZE", "PRESETS", "ModelCard", "Preset"]

Preset = Literal["drdm", "official"]
#: the one map of forward-process presets (the package's process and the authors' one) to
#: their process class and its config class; each process class names its own ``preset``
_PRESET_CLASSES: dict[str, tuple[type, type]] = {
    ForwardDiffusion.preset: (ForwardDiffusion, ForwardDiffusionConfig),
    OfficialForwardProcess.preset: (OfficialForwardProcess, OfficialProcessConfig),
}
#: forward-process presets
PRESETS: tuple[Preset, ...] = tuple(_PRESET_CLASSES)  # type: ignore[assignment]
#: image size of the authors' published 2D checkpoint
OFFICIAL_IMAGE_SIZE = 256


@dataclass(frozen=True)
class ModelCard:
    """A model's card: forward-process preset and config, image size, sampler settings,
    training description and provenance (see the module docstring for the JSON form).

    Args:
        preset: ``"drdm"`` (:class:`~drdm.diffusion.ForwardDiffusion`) or ``"official"``
            (the authors' :class:`~drdm.diffusion.official_process.OfficialForwardProcess`).
        forward: the process config, of the preset's type.
        image_size: the grid the network works on (``ndim`` ints).
        sampler: the recovery loop's settings; ``None``: the preset's default.
        training: JSON-serialisable description of how the network was trained.
        source: JSON-serialisable provenance of imported weights (``None``: trained here).
    """

    preset: Preset
    forward: ForwardDiffusionConfig | OfficialProcessConfig
    image_size: tuple[int, ...]
    sampler: SamplerConfig | None = None
    training: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(
                f"unknown forward-process preset {self.preset!r} (expected 'drdm' or 'official')"
            )
        config_class = _PRESET_CLASSES[self.preset][1]
        if not isinstance(self.forward, config_class):
            raise TypeError(
                f"preset {self.preset!r} needs a {config_class.__name__}, got "
                f"{type(self.forward).__name__}"
            )
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        object.__setattr__(self, "training", dict(self.training))
        if self.source is not None:
            object.__setattr__(self, "source", dict(self.source))

    # ------------------------------------------------------------------ building
    @classmethod
    def official(
        cls, ndim: int = 2, num_steps: int = 80, image_size: Sequence[int] | None = None
    ) -> ModelCard:
        """The card that runs imported authors' weights as the authors do: their
        forward-process preset, their recovery-loop numerics
        (:func:`~drdm.sampling.official_sampler_config`) and the image size their network was
        trained at (256 per axis unless given)."""
        size = [OFFICIAL_IMAGE_SIZE] * ndim if image_size is None else list(image_size)
        return cls(
            preset="official",
            forward=OfficialProcessConfig(ndim=ndim, num_steps=num_steps),
            image_size=tuple(size),
            sampler=official_sampler_config(),
            training={
                "description": "the DRDM authors' published checkpoint, trained with their "
                "code and their forward process (preset 'official')",
                "data": "2D cardiac MRI (SCD, LASC, M&Ms, M&Ms-2; paper 3.1.1), 256 x 256, "
                "intensities normalised to [0, 1]",
                "num_steps": num_steps,
            },
        )

    def process(self) -> ForwardDiffusion | OfficialForwardProcess:
        """The forward process the card describes."""
        return _PRESET_CLASSES[self.preset][0](self.forward)

    # ------------------------------------------------------------------ JSON form
    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable ``"extra"`` dict of ``config.json`` (``sampler`` and
        ``source`` only when set)."""
        data: dict[str, Any] = {
            "preset": self.preset,
            "forward": to_dict(self.forward),
            "image_size": list(self.image_size),
        }
        if self.sampler is not None:
            data["sampler"] = self.sampler.to_dict()
        data["training"] = dict(self.training)
        if self.source is not None:
            data["source"] = dict(self.source)
        return data

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], ndim: int | None = None, num_steps: int | None = None
    ) -> ModelCard:
        """Parse the ``"extra"`` dict of ``config.json``.

        A checkpoint imported with :func:`drdm.official_weights.import_official` alone (``source``
        says ``imported_from: official`` but no preset) gets the authors' process and image
        size for the network's ``ndim`` and ``num_steps``. Missing or invalid fields raise
        ``ValueError`` (``TypeError`` for values of the wrong type)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"the model card must be a JSON object, got {type(data).__name__}")
        preset = data.get("preset")
        forward = data.get("forward")
        image_size = data.get("image_size")
        source = data.get("source")
        imported = isinstance(source, Mapping) and source.get("imported_from") == "official"
        if preset is None and imported and ndim is not None and num_steps is not None:
            preset = "official"
            forward = forward or OfficialProcessConfig(ndim=ndim, num_steps=num_steps).to_dict()
            image_size = image_size or [OFFICIAL_IMAGE_SIZE] * ndim
        if preset is None or forward is None or image_size is None:
            raise ValueError(
                "no forward-process config ('extra' needs 'preset', 'forward' and 'image_size')"
            )
        if preset not in _PRESET_CLASSES:
            raise ValueError(
                f"unknown forward-process preset {preset!r} (expected 'drdm' or 'official')"
            )
        sampler = data.get("sampler")
        return cls(
            preset=preset,
            forward=from_dict(_PRESET_CLASSES[preset][1], dict(forward)),
            image_size=tuple(image_size),
            sampler=SamplerConfig.from_dict(sampler) if sampler is not None else None,
            training=dict(data.get("training") or {}),
            source=dict(source) if source is not None else None,
        )

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
