"""Saving and loading DRDM networks as ``model.safetensors`` + ``config.json`` directories.

Nothing is ever unpickled: weights are read with ``safetensors`` and the configuration with
``json``. Every file is written atomically (:func:`drdm.io.files.atomic_write`: a temporary
file in the same directory, then a rename), weights first and ``config.json`` last, so an
interrupted save never leaves a directory that loads with mismatched files. ``config.json``
records the SHA-256 of the weights file, which is checked on loading.

Layout of ``config.json``::

    {"format": "drdm-checkpoint", "format_version": 1, "drdm_version": "...",
     "model_class": "RecursiveUNet", "network": {NetworkConfig fields},
     "weights_file": "model.safetensors", "weights_sha256": "...",
     "extra": {anything JSON-serialisable: forward-process config, training data, source}}

``weights_sha256`` is the SHA-256 of the weights FILE's bytes (checked on loading); the
trainer's :func:`drdm.training.tensors_sha256` is a different digest, over the state-dict
tensors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from ._version import __version__
from .io.files import atomic_write
from .nn import NetworkConfig, RecursiveUNet

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "CheckpointInfo",
    "load_pretrained",
    "read_checkpoint_config",
    "save_pretrained",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "drdm-checkpoint"
FORMAT_VERSION = 1

_MODEL_CLASSES: dict[str, type[RecursiveUNet]] = {"RecursiveUNet": RecursiveUNet}


class CheckpointError(ValueError):
    """A checkpoint file exists but is unreadable, corrupt or inconsistent."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Parsed ``config.json``: the network config, the model class name and the extra dict."""

    network: NetworkConfig
    model_class: str = "RecursiveUNet"
    extra: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None
    drdm_version: str | None = None


def save_pretrained(
    model: RecursiveUNet, directory: str | Path, extra_config: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``directory`` as ``model.safetensors`` + ``config.json``.

    Args:
        model: a :class:`~drdm.nn.RecursiveUNet` (any device/dtype; weights are stored as they
            are, moved to the CPU).
        directory: created if needed; existing checkpoint files are replaced atomically.
        extra_config: JSON-serialisable metadata stored under ``"extra"`` (e.g. the forward
            process config, a description of the training data, the checkpoint's origin).

    Returns:
        ``directory`` as a ``Path``.
    """
    name = type(model).__name__
    if _MODEL_CLASSES.get(name) is not type(model) or not isinstance(
        getattr(model, "config", None), NetworkConfig
    ):
        raise TypeError(f"save_pretrained supports {sorted(_MODEL_CLASSES)}, got {name}")
    extra = dict(extra_config or {})
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"extra_config must be JSON-serialisable: {err}") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # one metadata entry: safetensors writes a metadata map in no fixed order, so two entries
    # would give the same weights different bytes (and a different weights_sha256) run to run;
    # the model class is recorded in config.json
    weights = save_safetensors_bytes(tensors, metadata={"format": "pt"})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "drdm_version": __version__,
        "model_class": name,
        "network": model.config.to_dict(),
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "extra": extra,
    }
    atomic_write(directory / WEIGHTS_NAME, weights, fsync=True)
    atomic_write(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n", fsync=True)
    return directory


def read_checkpoint_config(directory: str | Path) -> CheckpointInfo:
    """Parse and validate ``directory/config.json`` (no weights are read).

    Raises ``FileNotFoundError`` if the file is missing and :class:`CheckpointError` (naming
    the file) if it is not a valid DRDM checkpoint config.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint config not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a DRDM checkpoint config (no format {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported format_version {data.get('format_version')!r} "
            f"(this drdm reads {FORMAT_VERSION})"
        )
    model_class = data.get("model_class")
    if model_class not in _MODEL_CLASSES:
        raise CheckpointError(f"{path}: unknown model_class {model_class!r}")
    try:
        network = NetworkConfig.from_dict(data["network"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid 'network' config: {err}") from None
    extra = data.get("extra", {})
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: 'extra' must be a JSON object")
    return CheckpointInfo(
        network=network,
        model_class=model_class,
        extra=extra,
        weights_sha256=data.get("weights_sha256"),
        drdm_version=data.get("drdm_version"),
    )


def _state_mismatch(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> str | None:
    """One line on how the weights ``found`` differ from the network's ``expected`` state
    (missing and unexpected tensors, shape mismatches, an example of each), else ``None``."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    parts = []
    for count, what, example in (
        (len(missing), "missing", missing[:1]),
        (len(unexpected), "unexpected", unexpected[:1]),
        (len(shapes), "of another shape (weights vs config)", shapes[:1]),
    ):
        if count:
            parts.append(f"{count} tensor(s) {what}, e.g. {example[0]}")
    if not parts:
        return None
    return "; ".join(parts) + " (config.json and model.safetensors come from different models?)"


def load_pretrained(
    directory: str | Path, device: torch.device | str | None = None
) -> RecursiveUNet:
    """Load a network saved by :func:`save_pretrained` (safetensors + JSON only, no pickle).

    The model is returned in eval mode on ``device`` (CPU when ``None``). Its
    ``checkpoint_info`` attribute holds the parsed :class:`CheckpointInfo` (incl. ``extra``).
    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` naming the
    file for a corrupt, truncated or mismatching one.
    """
    directory = Path(directory)
    info = read_checkpoint_config(directory)
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weights not found: {path}")
    data = path.read_bytes()
    if info.weights_sha256 is not None and hashlib.sha256(data).hexdigest() != info.weights_sha256:
        raise CheckpointError(
            f"{path} does not match the SHA-256 recorded in {directory / CONFIG_NAME} "
            "(corrupt or replaced weights file)"
        )
    try:
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None
    model = _MODEL_CLASSES[info.model_class](info.network)
    problem = _state_mismatch(model.state_dict(), tensors)
    if problem is not None:
        raise CheckpointError(f"{path} does not fit the network in {CONFIG_NAME}: {problem}")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:200]
        message = f"{path} does not fit the network in {CONFIG_NAME}: {first}"
        raise CheckpointError(message) from None
    model.checkpoint_info = info
    return model.to(device if device is not None else "cpu").eval()
