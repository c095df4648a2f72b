"""The options and helpers that ``drdm augment`` and ``drdm synth`` share: the inputs, the
method, the output and the batch (sharding, device) options, their
:class:`~drdm.batch.BatchOptions`, and the printed report.

Nothing here imports torch at module level (``drdm --help`` stays fast).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..choices import BATCH_METHODS, LABEL_METHODS
from . import _defaults as D
from ._options import (
    add_ddf_format_argument,
    add_device_argument,
    add_frame_argument,
    add_label_argument,
    add_model_argument,
    add_quiet_argument,
    add_sampler_arguments,
    add_seed_argument,
    add_slice_axis_argument,
    add_threads_argument,
    apply_threads,
    output_path,
)

if TYPE_CHECKING:
    from ..batch.runner import BatchOptions, RunReport

__all__ = ["add_input_arguments", "add_run_arguments", "batch_options", "print_report"]


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """The ``inputs`` group: ``--image/--label/--input/--frame/--resample-label``."""
    g = p.add_argument_group("inputs")
    g.add_argument("--image", type=Path, help="one image (NIfTI, .mha/.mhd, .nrrd, DICOM folder)")
    add_label_argument(g, repeatable=True)
    g.add_argument(
        "--input",
        type=Path,
        help="a folder of images with matching label maps (X.nii.gz with X_gt/_label/_seg/"
        "_mask.nii.gz, or images/ + labels/), or a .csv (columns image, label) or .json "
        "([{'image': ..., 'label': ...}, ...]) list of them",
    )
    add_frame_argument(g)
    g.add_argument(
        "--resample-label",
        action="store_true",
        help="resample label maps on another grid onto the image's (nearest neighbour) "
        "instead of stopping with an error",
    )


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """``--seed``, ``--out`` and the ``method``, ``output`` and ``batch`` groups."""
    add_seed_argument(p)
    p.add_argument("--out", type=output_path, required=True, help="output folder")
    g = p.add_argument_group("method")
    g.add_argument(
        "--method",
        default=D.METHOD,
        help=f"{', '.join(BATCH_METHODS)} (default %(default)s; the others are the paper's "
        "baselines)",
    )
    g.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of a baseline method (repeatable; VALUE as JSON, else a string), "
        "e.g. --method-option sigma=0.08 for elastic",
    )
    add_model_argument(g, when="for --method drdm: ")
    add_sampler_arguments(g)
    g.add_argument(
        "--ndim",
        type=int,
        choices=(2, 3),
        default=D.BATCH_NDIM,
        help="dimensionality of a baseline's deformations (default %(default)s: 3D volumes "
        "slice by slice, as the default 2D model); --method drdm takes the model's",
    )
    add_slice_axis_argument(g, "for 2D deformations of 3D volumes")
    g.add_argument(
        "--label-interp",
        choices=LABEL_METHODS,
        default=D.LABEL_INTERP,
        help="label warping: onehot (linear warp of each label's mask, arg-max; default) or "
        "nearest",
    )
    o = p.add_argument_group("output")
    add_ddf_format_argument(o)
    o.add_argument("--no-figure", action="store_true", help="do not draw overview.png")
    add_quiet_argument(o)
    r = p.add_argument_group("batch")
    r.add_argument(
        "--keep-going",
        action="store_true",
        help="process the other inputs when one fails, list failures at the end (exit 1)",
    )
    r.add_argument(
        "--shards",
        type=int,
        metavar="K",
        help="split the job list in K shards (default: torchrun's WORLD_SIZE, else 1)",
    )
    r.add_argument(
        "--shard-index",
        type=int,
        metavar="I",
        help="the shard to run, 0..K-1 (default: RANK, else 0)",
    )
    add_device_argument(r)
    add_threads_argument(r)


def batch_options(args: argparse.Namespace) -> BatchOptions:
    """The :class:`~drdm.batch.BatchOptions` of parsed ``augment``/``synth`` arguments."""
    from ..batch.method import parse_method_options
    from ..batch.runner import BatchOptions

    apply_threads(args.threads)
    return BatchOptions(
        out=args.out,
        image=args.image,
        labels=tuple(args.label),
        input=args.input,
        frame=args.frame,
        resample_label=args.resample_label,
        seed=args.seed,
        method=args.method,
        method_options=parse_method_options(args.method_option),
        model=args.model,
        ndim=args.ndim,
        slice_axis=args.slice_axis,
        label_interp=args.label_interp,
        ddf_format=args.ddf_format,
        figure=not args.no_figure,
        progress=not args.quiet,
        keep_going=args.keep_going,
        shards=args.shards,
        shard_index=args.shard_index,
        device=args.device,
        stride=args.stride,
        engine=args.engine,
    )


def print_report(report: RunReport) -> int:
    """Print the summary (stdout) and the failed inputs (stderr); return the exit status."""
    print(report.summary())
    failures = report.batch.failures
    if failures:
        print(f"drdm {report.command}: {len(failures)} input(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    return report.status
