"""``drdm synth``: registration training triples (moving, fixed, true field) from images
(paper Algorithm 4), in batches.

For every input, level pair ``T'_aug:T'_syn`` and sample it writes, under
``OUT/<input name>/``::

    A030_S020_s003_moving<ext>        I_mv = phi_aug(I0)          (+ _moving_label<ext>)
    A030_S020_s003_fixed<ext>         I_fx = (phi_syn o phi_aug)(I0), one warp of I0
                                                                  (+ _fixed_label<ext>)
    A030_S020_s003_ddf.nii.gz         phi_syn, with fixed(x) ~ moving(x + phi_syn(x))

``phi_syn`` is defined on the fixed image's grid (which is the input's grid) and tells where
each fixed voxel lies in the moving image: the displacement a registration network predicts
for the pair (moving, fixed) when it warps the moving image onto the fixed one
(:class:`drdm.pipelines.SynthesisResult`).  ``T'_aug = 0`` means no augmentation (``I_mv = I0``).
Batches, seeds, shards, resuming and the input options are those of ``drdm augment``; the
work is :func:`drdm.batch.synthesize_files`.
"""

from __future__ import annotations

import argparse

from . import _defaults as D
from ._batch import add_input_arguments, add_run_arguments, batch_options, print_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="synthesise registration pairs (moving, fixed, true field) from images (Algorithm 4)",
        description="For every input image and level pair T'_aug:T'_syn, N times: the moving "
        "image I_mv = phi_aug(I0), the fixed image I_fx = (phi_syn o phi_aug)(I0) (one warp of "
        "I0) and the true field phi_syn with I_fx(x) ~ I_mv(x + phi_syn(x)) (voxels of the "
        "fixed grid, pull-back: the field a registration network predicts to warp the moving "
        "image onto the fixed one), with label maps carried along. Writes them under "
        "OUT/<input name>/ in the input's format and grid, a manifest.csv, run.json and "
        "overview.png. T'_aug = 0: no augmentation (I_mv = I0).",
    )
    add_input_arguments(p)
    p.add_argument(
        "--level-pairs",
        required=True,
        help="T'_aug:T'_syn pairs, comma-separated (e.g. 30:20,45:30); T'_aug may be 0",
    )
    p.add_argument(
        "--per-pair",
        type=int,
        default=D.PER_PAIR,
        metavar="N",
        help="triples per level pair (default %(default)s)",
    )
    add_run_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..batch import synthesize_files
    from ..batch.runner import parse_level_pairs

    pairs = parse_level_pairs(args.level_pairs)
    report = synthesize_files(batch_options(args), pairs, args.per_pair)
    return print_report(report)
