"""Training checkpoints: everything needed to continue a run bit for bit, without pickle.

A checkpoint is a folder ``OUT/checkpoints/step-NNNNNNNN/``::

    model.safetensors, config.json   the network, as drdm.checkpoint.save_pretrained writes it
                                     (so any checkpoint also loads as a pretrained model)
    optimizer.safetensors            every tensor of the optimiser state ("<param>.<name>")
    rng.safetensors                  generator states, "rank<r>.<name>" (uint8 tensors)
    state.json                       step, world size, optimiser param_groups and non-tensor
                                     state, the names of the RNG states; written last

The folder is assembled under a hidden temporary name and renamed into place, so a crash
never leaves a half-written ``step-*`` folder. Nothing is unpickled on loading: tensors are
read with ``safetensors``, the rest with ``json``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..checkpoint import load_pretrained, save_pretrained
from ..nn import RecursiveUNet

__all__ = [
    "TrainingCheckpoint",
    "list_checkpoints",
    "load_checkpoint",
    "optimizer_from_tensors",
    "optimizer_to_tensors",
    "prune_checkpoints",
    "save_checkpoint",
]

FORMAT = "drdm-training-checkpoint"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainingCheckpoint:
    """A loaded checkpoint.

    Attributes:
        path: the checkpoint folder.
        step: optimiser steps completed.
        world_size: processes of the run that wrote it.
        model_state: network weights (CPU tensors).
        optimizer_state: a ``torch.optim.Optimizer.state_dict()``-shaped dict.
        rng: generator states by name (``"rank0.data"``, ...), uint8 CPU tensors.
        meta: the rest of ``state.json``.
    """

    path: Path
    step: int
    world_size: int
    model_state: dict[str, Tensor]
    optimizer_state: dict[str, Any]
    rng: dict[str, Tensor]
    meta: dict[str, Any]


def optimizer_to_tensors(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimiser ``state_dict()`` into tensors (``"<param>.<name>"``) and a
    JSON-serialisable rest (``param_groups`` and any non-tensor per-parameter values)."""
    tensors: dict[str, Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                plain.setdefault(str(index), {})[name] = value
    groups = []
    for group in state["param_groups"]:
        groups.append({k: list(v) if isinstance(v, tuple) else v for k, v in group.items()})
    return tensors, {"param_groups": groups, "plain_state": plain, "tensor_keys": sorted(tensors)}


def optimizer_from_tensors(
    tensors: Mapping[str, Tensor], rest: Mapping[str, Any]
) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_tensors`: a dict for ``Optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in rest.get("plain_state", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in rest["param_groups"]:
        groups.append(
            {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        )
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / "state.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``root`` (``OUT/checkpoints``), oldest first."""
    return [path for _, path in _step_dirs(Path(root))]


def save_checkpoint(
    root: str | Path,
    step: int,
    model: RecursiveUNet,
    optimizer: torch.optim.Optimizer,
    rng: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    extra_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of ``step`` atomically under ``root``; returns its folder.

    ``rng`` maps names to generator states (uint8 tensors); ``meta`` (JSON-serialisable) is
    stored in ``state.json`` beside the step; ``extra_config`` goes to the model's
    ``config.json`` (see :func:`drdm.checkpoint.save_pretrained`).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".partial-step-{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    current = final  # the file being written, named in errors as it will be called
    try:
        current = final / "model.safetensors"
        save_pretrained(model, tmp, extra_config=extra_config)
        tensors, rest = optimizer_to_tensors(optimizer.state_dict())
        current = final / "optimizer.safetensors"
        save_file(tensors, str(tmp / current.name), metadata={"format": FORMAT})
        rng_tensors = {k: v.detach().to("cpu", torch.uint8).contiguous() for k, v in rng.items()}
        current = final / "rng.safetensors"
        save_file(rng_tensors, str(tmp / current.name), metadata={"format": FORMAT})
        state = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "optimizer": rest,
            "rng_keys": sorted(rng_tensors),
            **dict(meta),
        }
        text = json.dumps(state, indent=2) + "\n"
        current = final / "state.json"
        with open(tmp / current.name, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        current = final
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written checkpoint stays behind
        if isinstance(err, (OSError, SafetensorError)):
            raise _write_error(err, current, tmp, final) from None
        raise
    return final


def _write_error(err: OSError | SafetensorError, path: Path, tmp: Path, final: Path) -> OSError:
    """An :class:`OSError` naming the file that failed (``path``, or the file the error names,
    with the temporary folder ``tmp`` shown as ``final``): safetensors reports a full disk as
    ``SafetensorError: ... No space left on device`` without the file."""
    if isinstance(err, OSError):
        name = Path(os.fsdecode(err.filename)) if err.filename is not None else None
        if name is not None:
            path = final / name.relative_to(tmp) if name.is_relative_to(tmp) else name
        return type(err)(err.errno, err.strerror or str(err), str(path))
    text = str(err)
    code = errno.ENOSPC if "No space left" in text or "StorageFull" in text else errno.EIO
    reason = os.strerror(code) if code == errno.ENOSPC else text.splitlines()[0][:200]
    return OSError(code, reason, str(path))


def load_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint` (safetensors + JSON)."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path / 'state.json'}: not a {FORMAT} v{FORMAT_VERSION} checkpoint")
    model = load_pretrained(path)
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer_state = optimizer_from_tensors(
        load_file(str(path / "optimizer.safetensors")), state["optimizer"]
    )
    rng = load_file(str(path / "rng.safetensors"))
    meta = {k: v for k, v in state.items() if k not in ("optimizer",)}
    return TrainingCheckpoint(
        path=path,
        step=int(state["step"]),
        world_size=int(state.get("world_size", 1)),
        model_state=model_state,
        optimizer_state=optimizer_state,
        rng=rng,
        meta=meta,
    )


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints under ``root`` (and stale partial
    folders)."""
    root = Path(root)
    for _, path in _step_dirs(root)[:-keep] if keep > 0 else _step_dirs(root):
        shutil.rmtree(path, ignore_errors=True)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".partial-step-"):
                shutil.rmtree(child, ignore_errors=True)
