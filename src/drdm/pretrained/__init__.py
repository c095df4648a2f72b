"""Names of the models shipped with the package, and where their files live.

``"default"`` (2D) and ``"default-3d"`` (3D) are directories beside this file
(``drdm/pretrained/default/``, ``drdm/pretrained/default-3d/``) holding a
:mod:`drdm.checkpoint` checkpoint (``config.json`` + ``model.safetensors``). They are produced
by ``drdm train`` with ``configs/default-2d.yaml`` / ``configs/default-3d.yaml``. For a name
whose weights are missing (a stripped install) :func:`resolve_model` raises a clear
:class:`~drdm.errors.InputError`. Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME
from ..errors import InputError

__all__ = ["PRETRAINED_NAMES", "is_available", "pretrained_dir", "resolve_model"]

#: Packaged model names -> a short description.
PRETRAINED_NAMES: dict[str, str] = {
    "default": "2D model (cardiac MRI and phantoms, 64 x 64 grid, any input size)",
    "default-3d": "3D model (thorax CT phantoms, 32^3 grid, any input size)",
}

_ROOT = Path(__file__).resolve().parent


def pretrained_dir(name: str) -> Path:
    """The directory of the packaged model ``name`` (which may not hold weights yet)."""
    if name not in PRETRAINED_NAMES:
        raise InputError(
            f"unknown packaged model {name!r}; known: {', '.join(sorted(PRETRAINED_NAMES))}"
        )
    return _ROOT / name


def is_available(name: str) -> bool:
    """Whether the packaged model ``name`` has its ``config.json`` and weights installed."""
    directory = pretrained_dir(name)
    return (directory / CONFIG_NAME).is_file() and (directory / WEIGHTS_NAME).is_file()


def resolve_model(name_or_dir: str | Path) -> Path:
    """The checkpoint directory for a packaged name (``"default"``, ``"default-3d"``) or a path.

    Raises :class:`~drdm.errors.InputError` (one line) when a packaged model's weights are not
    installed yet, or when a path is not a checkpoint directory.
    """
    text = str(name_or_dir)
    if isinstance(name_or_dir, str) and text in PRETRAINED_NAMES:
        directory = pretrained_dir(text)
        if not is_available(text):
            raise InputError(
                f"model {text!r}: the packaged {PRETRAINED_NAMES[text]} is not available yet "
                f"(no {CONFIG_NAME} + {WEIGHTS_NAME} in {directory}); its weights are still to "
                "be trained and added to drdm. Pass a checkpoint directory instead, e.g. one "
                "written by 'drdm import-official PTH DIR'"
            )
        return directory
    directory = Path(name_or_dir)
    if not directory.exists():
        raise InputError(
            f"model {text!r}: no such checkpoint directory (packaged names: "
            f"{', '.join(sorted(PRETRAINED_NAMES))})"
        )
    if not directory.is_dir():
        raise InputError(f"model {text!r}: not a directory (expected a checkpoint directory)")
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (directory / n).is_file()]
    if missing:
        raise InputError(
            f"model {text!r}: not a DRDM checkpoint directory (missing {', '.join(missing)})"
        )
    return directory
