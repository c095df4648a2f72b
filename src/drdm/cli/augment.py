"""``drdm augment``: deform users' images and label maps (paper Algorithm 3), in batches.

For every input, level ``T'`` and sample it writes, under ``OUT/<input name>/``::

    L055_s003_image<ext>    the deformed image (the input's format, grid and geometry)
    L055_s003_label<ext>    the deformed label map (``_label1``, ``_label2``, ... for several)
    L055_s003_ddf.nii.gz    the displacement field (``_ddf.npy`` with --ddf-format npy)

plus ``OUT/manifest.csv`` (one row per sample), ``OUT/run.json`` (the settings) and
``OUT/overview.png``.  The work is :func:`drdm.batch.augment_files`; this module parses the
options (the input and run options shared with ``drdm synth``) and prints the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..choices import BATCH_METHODS, ENGINES, STACKS
from ._options import add_device_argument, add_threads_argument, apply_threads

if TYPE_CHECKING:
    from ..batch.runner import BatchOptions, RunReport


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "augment",
        help="deform images and their label maps with DRDM or a baseline (Algorithm 3)",
        description="Deform every input image (and its label maps) at every level T' N times "
        "(paper Algorithm 3). Writes, under OUT/<input name>/, L<level>_s<sample>_image, "
        "_label and _ddf files in the input's format and grid, a manifest.csv with one row per "
        "sample (paths relative to OUT, seed, displacement and folding metrics), run.json and "
        "overview.png. Re-running with the same arguments skips the samples already complete. "
        "Images need at least max(8, the model's size multiple) voxels along every axis the "
        "method deforms (the in-plane axes for 2D deformations of 3D volumes).",
    )
    add_input_arguments(p)
    p.add_argument(
        "--levels",
        help="deformation levels T' in 1..T, comma-separated (e.g. 32,48). Default for "
        "--method drdm: 0.4 and 0.6 of the model's T (32,48 for T = 80), the best DRDM "
        "recipe of the segmentation experiments (docs/experiments.md). The baselines have "
        "no levels: for them the levels only name the outputs and enter the seeds (default 0)",
    )
    p.add_argument(
        "--per-level",
        type=int,
        default=16,
        metavar="N",
        help="samples per level (default 16: with the two default levels 32 copies per image, "
        "as in the paper; DRDM needs many: with 8-16 copies it was behind BigAug in the "
        "segmentation experiments, with 32 level)",
    )
    p.add_argument(
        "--stack",
        default="auto",
        choices=("auto", *STACKS),
        help="transforms stacked after the deformation, in the same field (one warp): "
        "bigaug = BigAug's rotation, scaling and elastic deformation, then its six intensity "
        "transforms; affine = its rotation and scaling only; none. Default auto: bigaug for "
        "--method drdm (the best DRDM recipe of the segmentation experiments, level with BigAug; "
        "docs/experiments.md), none for the baselines",
    )
    add_run_arguments(p)
    p.set_defaults(run=run)


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """``--image/--label/--input/--frame/--resample-label`` (shared with ``drdm synth``)."""
    g = p.add_argument_group("inputs")
    g.add_argument("--image", type=Path, help="one image (NIfTI, .mha/.mhd, .nrrd, DICOM folder)")
    g.add_argument(
        "--label",
        type=Path,
        action="append",
        default=[],
        help="a label map on the image's grid, deformed alike (repeatable)",
    )
    g.add_argument(
        "--input",
        type=Path,
        help="a folder of images with matching label maps (X.nii.gz with X_gt/_label/_seg/"
        "_mask.nii.gz, or images/ + labels/), or a .csv (columns image, label) or .json "
        "([{'image': ..., 'label': ...}, ...]) list of them",
    )
    g.add_argument("--frame", type=int, help="frame (0-based) of 4D time series inputs")
    g.add_argument(
        "--resample-label",
        action="store_true",
        help="resample label maps on another grid onto the image's (nearest neighbour) "
        "instead of stopping with an error",
    )


def add_sampler_arguments(g: argparse._ActionsContainer) -> None:
    """``--stride`` and ``--engine``: how DRDM's recovery loop runs (also ``drdm generate``)."""
    g.add_argument(
        "--stride",
        type=int,
        default=None,
        help="DRDM sampler: call the network every N-th timestep, each prediction standing "
        "for the N steps down to the next call (default: the model's, 4; 1 runs Algorithm 2 "
        "literally, about 4x slower; README, Speed)",
    )
    g.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="how the network runs: auto (default: ONNX Runtime on the CPU when installed, "
        "with pip install 'drdm[fast]'; else PyTorch), torch or onnxruntime; same results "
        "within float32 rounding",
    )


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Method, output, sharding and device options (shared with ``drdm synth``)."""
    p.add_argument("--seed", type=int, default=0, help="random seed of the run (default 0)")
    p.add_argument("--out", type=output_path, required=True, help="output folder")
    g = p.add_argument_group("method")
    g.add_argument(
        "--method",
        default="drdm",
        help=f"{', '.join(BATCH_METHODS)} (default drdm; the others are the paper's baselines)",
    )
    g.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of a baseline method (repeatable; VALUE as JSON, else a string), "
        "e.g. --method-option sigma=0.08 for elastic",
    )
    g.add_argument(
        "--model",
        default="default",
        help="for --method drdm: 'default', 'default-3d' or a checkpoint folder",
    )
    add_sampler_arguments(g)
    g.add_argument(
        "--ndim",
        type=int,
        choices=(2, 3),
        default=2,
        help="dimensionality of a baseline's deformations (default 2: 3D volumes slice by "
        "slice, as the default 2D model); --method drdm takes the model's",
    )
    g.add_argument(
        "--slice-axis",
        default="auto",
        help="for 2D deformations of 3D volumes: the axis to slice along, 0, 1, 2 or auto "
        "(default: the axis of clearly the largest spacing, else the one with fewest voxels)",
    )
    g.add_argument(
        "--label-interp",
        choices=("onehot", "nearest"),
        default="onehot",
        help="label warping: onehot (linear warp of each label's mask, arg-max; default) or "
        "nearest",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--ddf-format",
        choices=("nifti", "npy"),
        default="nifti",
        help="nifti (default): a NIfTI displacement field in mm that SimpleITK reads as a "
        "DisplacementFieldTransform; npy: a (ndim, *spatial) float32 array in voxels",
    )
    o.add_argument("--no-figure", action="store_true", help="do not draw overview.png")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
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
    add_device_arguments(r)


def output_path(text: str) -> Path:
    """``--out`` (argparse ``type``): a path; an empty one (an unset shell variable, which
    would mean the current folder) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r}: empty path (an unset shell variable?); give an output folder"
        )
    return Path(text)


def add_device_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--device`` and ``--threads``."""
    add_device_argument(p)
    add_threads_argument(p)


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


def run(args: argparse.Namespace) -> int:
    from ..batch import augment_files
    from ..batch.jobs import parse_int_list

    levels = None if args.levels is None else parse_int_list(args.levels, "--levels")
    report = augment_files(batch_options(args), levels, args.per_level, args.stack)
    return print_report(report)
