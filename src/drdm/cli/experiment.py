"""``drdm experiment segment|register``: the downstream experiments of paper Sections 4 and 5."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..errors import InputError
from ._options import add_device_argument, add_quiet_argument, add_threads_argument, output_path


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("/", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2, got {text!r}") from None


def _words(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="a YAML/JSON config (options below override it)")
    p.add_argument("--out", type=output_path, required=True, help="result folder")
    p.add_argument("--model", help="DRDM model: 'default' or a checkpoint folder")
    p.add_argument("--seeds", type=_ints, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--size", dest="image_size", type=int, help="image size in voxels per axis")
    p.add_argument("--copies", type=int, help="augmented copies / synthetic triples per image")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--widths", type=_ints, help="U-Net widths, e.g. 16,32,64")
    p.add_argument("--data-seed", type=int, help="seed of the test set (and of the split)")
    add_device_argument(p, default=None)
    add_threads_argument(p)
    add_quiet_argument(p, "no progress messages")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="downstream experiments: few-shot segmentation, registration pre-training",
        description="Reproduce the downstream experiments of the paper on the built-in "
        "phantoms or on a dataset folder: 'segment' (Section 4, Table 2) and 'register' "
        "(Section 5, Table 3). Each writes config.yaml, results.csv, table.md and box plots.",
    )
    kinds = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")

    s = kinds.add_parser(
        "segment",
        help="few-shot U-Net segmentation with augmentation (paper Section 4)",
        description="Train the 2D U-Net of paper 4.1 (BCE of Eq. 17) on a few labelled "
        "subjects with offline-augmented copies per method and evaluate DSC, sensitivity, "
        "precision, ASD and HD95 on held-out images. Methods: none, elastic, bigaug, mrbs, "
        "drdm, optionally with DRDM levels and modifiers (flip, intensity, affine, bigaug): "
        "'drdm@16/32+flip+intensity', 'drdm+bigaug' (the shipped recipe: DRDM, then BigAug).",
    )
    _common(s)
    s.add_argument("--data", help="'phantoms' or an ACDC-style folder (patientXXX/..._gt)")
    s.add_argument("--test-data", help="ACDC-style folder of test subjects (default: split)")
    s.add_argument("--methods", type=_words, help="comma-separated method specs")
    s.add_argument("--levels", dest="drdm_levels", type=_ints, help="DRDM levels, e.g. 16,32")
    s.add_argument("--train-subjects", type=int, help="labelled training subjects per seed")
    s.add_argument("--train-fraction", type=float, help="fraction of the training subjects")
    s.add_argument("--test-subjects", type=int, help="test images (phantoms) / held-out subjects")
    s.add_argument("--steps", type=int, help="training steps")
    s.add_argument(
        "--mix",
        type=_words,
        help="add these modifiers (flip, intensity, affine, bigaug) to every drdm method, "
        "e.g. flip",
    )
    s.set_defaults(run=run_segment)

    r = kinds.add_parser(
        "register",
        help="registration pre-training on synthetic pairs (paper Section 5)",
        description="Pre-train a VoxelMorph-style U-Net on synthetic triples from DRDM or "
        "MRBS (Algorithm 4, loss of Eq. 20), optionally fine-tune it without supervision on "
        "real pairs, and evaluate warped labels (DSC, ASD, HD95) and fold ratios on held-out "
        "inter-subject pairs.",
    )
    _common(r)
    r.add_argument(
        "--data", help="'phantoms' (2D cardiac), 'thorax' (3D phantoms) or a lung CT folder"
    )
    r.add_argument("--methods", type=_words, help="synthetic methods, e.g. drdm,mrbs")
    r.add_argument("--levels-aug", dest="drdm_levels_aug", type=_ints, help="DRDM T'_aug list")
    r.add_argument("--levels-syn", dest="drdm_levels_syn", type=_ints, help="DRDM T'_syn list")
    r.add_argument("--train-subjects", type=int, help="training images per seed")
    r.add_argument("--test-subjects", type=int, help="held-out subjects (= test pairs)")
    r.add_argument("--pretrain-steps", type=int)
    r.add_argument("--finetune-steps", type=int)
    r.add_argument("--no-finetune", dest="finetune", action="store_false", default=None)
    r.add_argument("--similarity", choices=("ncc", "mse"))
    r.add_argument("--units", dest="distance_units", choices=("voxel", "mm"))
    r.set_defaults(run=run_register)


def _build(cls: type, args: argparse.Namespace, skip: tuple[str, ...] = ()) -> Any:
    from ..config import load_config

    # load_config's InputError names the file (and the dotted key) itself
    cfg = load_config(cls, args.config) if args.config is not None else cls()
    names = {f.name for f in dataclasses.fields(cls)}
    changes = {
        k: v for k, v in vars(args).items() if k in names and k not in skip and v is not None
    }
    return dataclasses.replace(cfg, **changes)


def run_segment(args: argparse.Namespace) -> None:
    from ..experiments.config import SegmentationConfig
    from ..experiments.segment import run_segmentation

    cfg = _build(SegmentationConfig, args)
    if args.train_fraction is not None and args.train_subjects is not None:
        raise InputError("give --train-subjects or --train-fraction, not both")
    if args.mix:
        from ..experiments.augment import MODIFIERS

        bad = [m for m in args.mix if m not in MODIFIERS]
        if bad:
            raise InputError(
                f"--mix: unknown modifier(s) {', '.join(bad)} ({', '.join(MODIFIERS)})"
            )
        suffix = "".join(f"+{m}" for m in args.mix)
        methods = tuple(
            m + suffix if m.split("+")[0].split("@")[0] == "drdm" else m for m in cfg.methods
        )
        cfg = dataclasses.replace(cfg, methods=methods)
    result = run_segmentation(cfg, args.out, log=None if args.quiet else print)
    if not args.quiet:
        print(result.table)
        print(f"results in {result.out_dir}")


def run_register(args: argparse.Namespace) -> None:
    from ..experiments.config import RegistrationConfig
    from ..experiments.register import run_registration

    cfg = _build(RegistrationConfig, args)
    result = run_registration(cfg, args.out, log=None if args.quiet else print)
    if not args.quiet:
        print(result.table)
        print(f"results in {result.out_dir}")
