"""The deformation method of a batch command: :class:`Method` / :func:`load_method`, by name,
through the one registry :func:`drdm.pipelines.make_method` (names:
:data:`drdm.pipelines.METHODS`; the batch commands take :data:`BATCH_METHODS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..choices import BATCH_METHODS
from ..errors import InputError

__all__ = [
    "BATCH_METHODS",
    "MIN_VOXELS",
    "Method",
    "load_method",
    "parse_method_options",
]


#: smallest number of voxels along every axis a method deforms (2D: the in-plane axes)
MIN_VOXELS = 8


@dataclass
class Method:
    """A deformation method ready to sample: :meth:`make` ``(level) -> (FieldSampler,
    intensity transform or None)``, built by :func:`drdm.pipelines.make_method`.

    Attributes:
        name: a name of :data:`BATCH_METHODS`.
        ndim: the dimensionality of its deformations (a 2D method works slice by slice on 3D).
        min_voxels: voxels needed along every deformed axis.
        settings: what identifies the method in ``run.json``.
        model: the :class:`drdm.DRDM` model of ``"drdm"``.
        options: keyword options of the method (``make_method``'s ``**options``).
    """

    name: str
    ndim: int
    min_voxels: int
    settings: dict[str, Any]
    model: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    _cache: dict[int, tuple[Any, Any]] = field(default_factory=dict)

    def make(self, level: int) -> tuple[Any, Any]:
        """The field sampler and intensity transform (or ``None``) of ``level`` (the level
        plays no part in a baseline)."""
        from ..pipelines.registry import make_method

        key = level if self.name == "drdm" else 0
        if key not in self._cache:
            try:
                self._cache[key] = make_method(
                    self.name,
                    self.ndim,
                    model=self.model,
                    level=level if self.name == "drdm" else None,
                    **self.options,
                )
            except InputError:
                raise
            except (TypeError, ValueError) as exc:
                raise InputError(f"method {self.name}: {exc}") from None
        return self._cache[key]


def parse_method_options(items: Sequence[str]) -> dict[str, Any]:
    """``["sigma=0.08", "units=mm"]`` -> ``{"sigma": 0.08, "units": "mm"}`` (JSON values)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"method_options {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def load_method(
    name: str,
    levels: Sequence[int] = (),
    *,
    model: str = "default",
    ndim: int = 2,
    options: Mapping[str, Any] | None = None,
    device: Any = None,
    level_option: str = "levels",
    engine: str = "auto",
) -> Method:
    """Check a method, its options and ``levels`` and load the model; one-line errors.

    ``engine``: how a DRDM model's network runs (:mod:`drdm.nn.engine`; outputs agree within
    float32 rounding, so it is not part of the run's settings).

    ``level_option`` names the parameter the levels came from in messages (``level_pairs`` for
    :func:`~drdm.batch.synthesize_files`, ``level`` for :func:`~drdm.batch.generate_file`).
    For ``"drdm"`` the options go to :class:`drdm.pipelines.DRDMSampler` (e.g. ``normalize``).
    """
    key = str(name).lower()
    if key not in BATCH_METHODS:
        raise InputError(f"method {name}: unknown method; expected {', '.join(BATCH_METHODS)}")
    options = dict(options or {})
    if key != "drdm":
        settings = {"method": key, "ndim": ndim, "options": options}
        method = Method(key, ndim, MIN_VOXELS, settings, options=options)
        method.make(0)  # options are checked here, before anything is written
        return method
    from ..model import DRDM

    loaded = DRDM.from_pretrained(model, device=device)
    from ..nn.engine import resolve_engine

    try:
        resolve_engine(engine, loaded.device, loaded.dtype)
    except ValueError as err:
        raise InputError(f"engine {engine}: {err}") from None
    loaded.engine = engine  # type: ignore[assignment]
    bad = [lv for lv in levels if not 1 <= lv <= loaded.num_steps]
    if bad:
        raise InputError(
            f"{level_option} {', '.join(map(str, bad))}: must lie in 1..{loaded.num_steps} "
            f"(the T of model {model!r})"
        )
    if loaded.in_channels != 1:
        raise InputError(
            f"model {model}: the network takes {loaded.in_channels} channels, an image gives 1"
        )
    info = getattr(loaded.network, "checkpoint_info", None)
    # the weights identify the model (a path or name could point to other weights later)
    settings = {"method": "drdm", "model_weights_sha256": getattr(info, "weights_sha256", None)}
    if options:
        settings["options"] = options
    minimum = max(MIN_VOXELS, loaded.network.config.size_multiple)
    method = Method("drdm", loaded.ndim, minimum, settings, model=loaded, options=options)
    if loaded.num_steps >= 1:
        method.make(1)  # options are checked here
        method._cache.clear()
    return method
