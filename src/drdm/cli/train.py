"""``drdm train``: train a DRDM network from a YAML/JSON config (paper Algorithm 1).

Data-parallel on several processes with ``torchrun``, e.g.::

    torchrun --standalone --nproc_per_node=2 -m drdm.cli.main train --config cfg.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ._options import (
    add_device_argument,
    add_quiet_argument,
    add_threads_argument,
    apply_threads,
    output_path,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a DRDM network from a config file",
        description="Train a DRDM network (paper Algorithm 1) as described by a YAML or JSON "
        "config (see configs/ and drdm.training.config). Writes checkpoints, loss.csv and, at "
        "the end, the model (model/), loss.png and summary.json into the output folder. Under "
        "torchrun every process trains on its share of the batch (data-parallel).",
    )
    p.add_argument("--config", type=Path, required=True, help="training config (.yaml or .json)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in the output folder (starts afresh if none)",
    )
    add_device_argument(p)
    p.add_argument(
        "--out",
        type=output_path,
        default=None,
        help="output folder (default: output.dir of the config, relative to the config file)",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop after N steps of this invocation, with a checkpoint (continue with --resume)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="end the run after this many seconds of training and export the model of the "
        "step reached (its card records the steps done)",
    )
    add_threads_argument(p, help="CPU threads per process (default: torch's choice)")
    add_quiet_argument(p, "no progress bar or messages")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    # imported here so that `drdm --help` does not load torch (tests/cli/test_help_imports.py)
    from ..training import TrainingDivergedError, load_train_config, train

    apply_threads(args.threads)
    from ..io import check_output_folder

    if args.out is not None:  # before reading the data sources
        check_output_folder(args.out, "--out")
    config = load_train_config(args.config)
    base_dir = args.config.resolve().parent
    if args.out is None:
        check_output_folder(base_dir / config.output.dir, "output.dir")
    try:
        train(
            config,
            base_dir=base_dir,
            out_dir=args.out,
            resume=args.resume,
            device=args.device,
            quiet=args.quiet,
            stop_after=args.stop_after,
            time_limit=args.time_limit,
        )
    except TrainingDivergedError as err:
        raise InputError(str(err)) from None
