"""The ``drdm`` command line. Thin commands over the library; see ``drdm --help``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import InputError
from . import (
    augment,
    demo,
    diffuse,
    experiment,
    generate,
    import_official,
    merge_manifests,
    show,
    synth,
    train,
)

COMMANDS = {
    "diffuse": diffuse,
    "demo": demo,
    "generate": generate,
    "augment": augment,
    "synth": synth,
    "merge-manifests": merge_manifests,
    "show": show,
    "import-official": import_official,
    "train": train,
    "experiment": experiment,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drdm",
        description="Deformation-Recovery Diffusion Model: random and learned deformations "
        "of medical images.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"drdm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``drdm`` console script; returns the exit status.

    0: success; 1: a batch command finished with failed inputs (``--keep-going``); 2: bad
    input or options (one-line message on stderr); 130: interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.run(args)
    except InputError as exc:
        print(f"drdm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"drdm {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
