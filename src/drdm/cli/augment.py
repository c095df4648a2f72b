"""``drdm augment``: deform users' images and label maps (paper Algorithm 3), in batches.

For every input, level ``T'`` and sample it writes, under ``OUT/<input name>/``::

    L055_s003_image<ext>    the deformed image (the input's format, grid and geometry)
    L055_s003_label<ext>    the deformed label map (``_label1``, ``_label2``, ... for several)
    L055_s003_ddf.nii.gz    the displacement field (``_ddf.npy`` with --ddf-format npy)

plus ``OUT/manifest.csv`` (one row per sample), ``OUT/run.json`` (the settings) and
``OUT/overview.png``.  The work is :func:`drdm.batch.augment_files`; this module parses the
options (the input and run options shared with ``drdm synth``, :mod:`drdm.cli._batch`) and
prints the report.
"""

from __future__ import annotations

import argparse

from ..choices import STACKS
from . import _defaults as D
from ._batch import add_input_arguments, add_run_arguments, batch_options, print_report


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
    fractions = " and ".join(f"{f:g}" for f in D.LEVEL_FRACTIONS)
    levels = ",".join(map(str, D.LEVELS))
    p.add_argument(
        "--levels",
        help="deformation levels T' in 1..T, comma-separated (e.g. 32,48). Default for "
        f"--method drdm: {fractions} of the model's T ({levels} for T = {D.NUM_STEPS}), the "
        "best DRDM recipe of the segmentation experiments (docs/experiments.md). The baselines "
        "have no levels: for them the levels only name the outputs and enter the seeds "
        "(default 0)",
    )
    p.add_argument(
        "--per-level",
        type=int,
        default=D.PER_LEVEL,
        metavar="N",
        help="samples per level (default %(default)s: with the two default levels "
        f"{D.PER_LEVEL * len(D.LEVELS)} copies per image, as in the paper; DRDM needs many: "
        "with 8-16 copies it was behind BigAug in the segmentation experiments, with 32 level)",
    )
    p.add_argument(
        "--stack",
        default=D.STACK,
        choices=("auto", *STACKS),
        help="transforms stacked after the deformation, in the same field (one warp): "
        "bigaug = BigAug's rotation, scaling and elastic deformation, then its six intensity "
        "transforms; affine = its rotation and scaling only; none. Default auto: bigaug for "
        "--method drdm (the best DRDM recipe of the segmentation experiments, level with BigAug; "
        "docs/experiments.md), none for the baselines",
    )
    add_run_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..batch import augment_files
    from ..batch.jobs import parse_int_list

    levels = None if args.levels is None else parse_int_list(args.levels, "--levels")
    report = augment_files(batch_options(args), levels, args.per_level, args.stack)
    return print_report(report)
