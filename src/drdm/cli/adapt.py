"""``drdm adapt``: fine-tune a DRDM model on your own unlabelled scans (Algorithm 1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from . import _defaults as D
from ._options import (
    add_device_argument,
    add_quiet_argument,
    add_seed_argument,
    add_threads_argument,
    apply_threads,
    output_path,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="fine-tune a model on your own unlabelled scans",
        description="Fine-tune a DRDM model on unlabelled images of a new anatomy or modality "
        "(paper Algorithm 1 needs no labels). Holds out part of the files, prints how much of "
        "the forward steps the network recovers on them (U per band of timesteps, 1 = "
        "nothing) before and after, and writes OUT/model (usable with --model in every "
        "command), OUT/adapt.json, OUT/adapt_u.png and the training run in OUT/run.",
    )
    p.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="NIfTI files, folders (searched recursively) or a .csv/.json list with an 'image' "
        "column or key",
    )
    p.add_argument("--out", type=output_path, required=True, help="output folder")
    p.add_argument(
        "--init",
        default=D.MODEL,
        help="base model: default, default-3d or a model folder (default %(default)r)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=D.ADAPT_TIME_LIMIT,
        metavar="SECONDS",
        help="seconds of fine-tuning (default %(default)g)",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=D.ADAPT_HOLDOUT,
        help="fraction of files held out (default %(default)g)",
    )
    p.add_argument(
        "--lr", type=float, default=D.ADAPT_LR, help="Adam learning rate (default %(default)g)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=D.ADAPT_BATCH_SIZE,
        help="images per step (default %(default)s)",
    )
    add_seed_argument(p, "seeds the split, the training and the U draws")
    p.add_argument(
        "--eval-draws",
        type=int,
        default=D.ADAPT_EVAL_DRAWS,
        help="forward draws per held-out image and band for the U table (default %(default)s)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in OUT/run from its checkpoint"
    )
    add_device_argument(p)
    add_threads_argument(p)
    add_quiet_argument(p, "no progress bar or messages")
    p.set_defaults(run=run)


def _inputs(entries: list[str]) -> list[str]:
    """Expand ``.csv``/``.json`` lists to their images
    (:func:`drdm.batch.inputs.find_pairs`; labels are not needed and ignored); files and
    folders pass through."""
    from ..batch.inputs import find_pairs

    out: list[str] = []
    for entry in entries:
        if Path(entry).suffix.lower() in (".csv", ".json"):
            out.extend(str(image) for image, _ in find_pairs(entry))
        else:
            out.append(entry)
    return out


def run(args: argparse.Namespace) -> None:
    from ..io import check_output_folder
    from ..training.adapt import AdaptConfig, adapt

    apply_threads(args.threads)
    check_output_folder(args.out, "--out")
    try:
        config = AdaptConfig(
            init=args.init,
            time_limit=args.time_limit,
            holdout=args.holdout,
            seed=args.seed,
            lr=args.lr,
            batch_size=args.batch_size,
            eval_draws=args.eval_draws,
        )
    except ValueError as err:
        raise InputError(f"adapt: {err}") from None
    report = adapt(
        _inputs(args.input),
        args.out,
        config,
        device=args.device,
        quiet=args.quiet,
        resume=args.resume,
    )
    if not args.quiet:
        print(
            f"drdm adapt: {len(report.train_files)} training file(s), "
            f"{len(report.holdout_files)} held out; {report.steps} steps in "
            f"{report.seconds:.0f} s"
        )
        for note in report.notes:
            print(f"drdm adapt: note: {note}")
        print(report.table())
        print(f"drdm adapt: model written to {report.model_dir}")
