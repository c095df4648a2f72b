"""Options several commands share, each defined once, with the library's defaults
(:mod:`drdm.cli._defaults`).

Nothing here imports torch at module level (``drdm --help`` stays fast,
tests/cli/test_help_imports.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import DDF_FORMATS, ENGINES
from ..errors import InputError
from . import _defaults as D

__all__ = [
    "add_ddf_format_argument",
    "add_device_argument",
    "add_frame_argument",
    "add_label_argument",
    "add_model_argument",
    "add_quiet_argument",
    "add_sampler_arguments",
    "add_seed_argument",
    "add_slice_axis_argument",
    "add_threads_argument",
    "apply_threads",
    "output_path",
]

Container = argparse._ActionsContainer


def output_path(text: str) -> Path:
    """``--out`` (argparse ``type``): a path; an empty one (an unset shell variable, which
    would mean the current folder) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r}: empty path (an unset shell variable?); give an output folder"
        )
    return Path(text)


def output_name(given: Path | None) -> str:
    """How errors name an output path: ``"--out"`` when the user gave it, else
    ``"the default output"`` (a path the command derived)."""
    return "--out" if given is not None else "the default output"


def add_threads_argument(
    p: Container,
    help: str = "CPU threads (default: torch's choice)",  # noqa: A002 (argparse's name)
) -> None:
    """``--threads N`` (default ``None``: torch's choice); apply it with :func:`apply_threads`."""
    p.add_argument("--threads", type=int, default=None, help=help)


def apply_threads(threads: int | None) -> None:
    """``--threads``: the number of CPU threads of this process (``None``: leave torch's);
    a number below 1 is refused with a one-line :class:`~drdm.errors.InputError`."""
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads {threads}: must be >= 1")
    import torch

    torch.set_num_threads(threads)


def add_device_argument(p: Container, default: str | None = D.DEVICE) -> None:
    """``--device auto|cpu|cuda`` (``cuda:N`` too); ``default=None`` leaves the choice to the
    command's config."""
    shown = " (default %(default)s)" if default is not None else " (default: the config's)"
    p.add_argument("--device", default=default, help="auto, cpu or cuda" + shown)


def add_seed_argument(
    p: Container,
    what: str = "random seed, any integer",
) -> None:
    """``--seed`` (default the library's, 0); ``what`` says what it seeds."""
    p.add_argument("--seed", type=int, default=D.SEED, help=what + " (default %(default)s)")


def add_model_argument(p: Container, when: str = "") -> None:
    """``--model``: a packaged model name or a checkpoint folder; ``when`` prefixes the help
    (e.g. ``"for --method drdm: "``)."""
    p.add_argument(
        "--model",
        default=D.MODEL,
        help=when + "'default', 'default-3d' or a checkpoint folder (default %(default)r)",
    )


def add_sampler_arguments(p: Container) -> None:
    """``--stride`` and ``--engine``: how DRDM's recovery loop runs."""
    p.add_argument(
        "--stride",
        type=int,
        default=None,
        help="DRDM sampler: call the network every N-th timestep, each prediction standing "
        f"for the N steps down to the next call (default: the model's, {D.STRIDE}; 1 runs "
        f"Algorithm 2 literally, about {D.STRIDE}x slower; README, Speed)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=D.ENGINE,
        help="how the network runs: auto (default: ONNX Runtime on the CPU when installed, "
        "with pip install 'drdm[fast]'; else PyTorch), torch or onnxruntime; same results "
        "within float32 rounding",
    )


def add_slice_axis_argument(p: Container, when: str) -> None:
    """``--slice-axis 0|1|2|auto``; ``when`` says when it applies (e.g. ``"for 2D
    deformations of 3D volumes"``)."""
    p.add_argument(
        "--slice-axis",
        default=D.SLICE_AXIS,
        help=f"{when}: the axis to slice along, 0, 1, 2 or auto (default: the axis of clearly "
        "the largest spacing, else the one with fewest voxels)",
    )


def add_ddf_format_argument(p: Container) -> None:
    """``--ddf-format nifti|npy``."""
    p.add_argument(
        "--ddf-format",
        choices=DDF_FORMATS,
        default=D.DDF_FORMAT,
        help="nifti (default): a NIfTI displacement field in mm that SimpleITK reads as a "
        "DisplacementFieldTransform; npy: a (ndim, *spatial) float32 array in voxels",
    )


def add_frame_argument(p: Container) -> None:
    """``--frame N``: the time point of 4D inputs."""
    p.add_argument("--frame", type=int, help="frame (0-based) of 4D time series inputs")


def add_label_argument(p: Container, repeatable: bool = False) -> None:
    """``--label PATH``: a label map deformed with the image (a list when ``repeatable``)."""
    many = {"action": "append", "default": []} if repeatable else {}
    p.add_argument(
        "--label",
        type=Path,
        help="a label map on the image's grid, deformed alike" + (" (repeatable)" * repeatable),
        **many,
    )


def add_quiet_argument(p: Container, help: str = "no progress bar") -> None:  # noqa: A002
    """``--quiet``: ``help`` says what it silences."""
    p.add_argument("--quiet", action="store_true", help=help)
