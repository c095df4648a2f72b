"""``drdm import-official``: convert the DRDM authors' checkpoint into a drdm checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from . import _defaults as D
from ._options import output_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-official",
        help="convert the DRDM authors' published checkpoint (.pth) for 'drdm generate'",
        description="Convert the DRDM authors' published PyTorch checkpoint into a drdm "
        "checkpoint directory (model.safetensors + config.json) that runs the published model "
        "as the authors do: their forward-process preset, zero-padded composition and bicubic "
        "resampling. The weights are read, never shipped with drdm. Use the result with "
        "'drdm generate IMAGE --model OUT_DIR'.",
    )
    p.add_argument("pth", type=Path, help="the authors' .pth file (a plain state_dict)")
    p.add_argument("out_dir", type=output_path, help="output checkpoint directory (created)")
    p.add_argument(
        "--image-size",
        type=int,
        default=D.OFFICIAL_IMAGE_SIZE,
        help="image size per axis the network was trained at (default %(default)s, the authors')",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..card import ModelCard
    from ..official_weights import (
        convert_official_state_dict,
        import_official,
        load_official_state_dict,
    )

    pth: Path = args.pth
    if not pth.exists():
        raise InputError(f"{pth}: no such file")
    if not pth.is_file():
        raise InputError(f"{pth}: not a file (expected the authors' .pth checkpoint)")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise InputError(f"{args.out_dir}: exists and is not a directory")
    try:
        config, _ = convert_official_state_dict(load_official_state_dict(pth))
    except Exception as exc:  # torch.load and the converter raise many types for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{pth}: not a DRDM authors' checkpoint ({reason})") from None
    if args.image_size < config.size_multiple or args.image_size % config.size_multiple:
        raise InputError(
            f"--image-size {args.image_size}: must be a positive multiple of {config.size_multiple}"
        )
    card = ModelCard.official(config.ndim, config.num_steps, [args.image_size] * config.ndim)
    out = import_official(pth, args.out_dir, card=card)
    print(
        f"{out}: {config.ndim}D DRDM network, T = {config.num_steps}, image size "
        f"{args.image_size}, preset 'official' (the authors' forward process and sampler)"
    )
