"""The ``drdm`` command line. Thin commands over the library; see ``drdm --help``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import InputError
from . import demo, diffuse, generate, import_official, train

COMMANDS = {
    "diffuse": diffuse,
    "demo": demo,
    "generate": generate,
    "import-official": import_official,
    "train": train,
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
    """Entry point of the ``drdm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except InputError as exc:
        print(f"drdm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"drdm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
