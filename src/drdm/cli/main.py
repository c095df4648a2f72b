"""The ``drdm`` command line. Thin commands over the library; see ``drdm --help``."""

from __future__ import annotations

import argparse
import sys
import warnings
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
    from .._version import __version__

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
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning(args.command)
    try:
        status = args.run(args)
    except InputError as exc:
        print(f"drdm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk or a folder made read-only during the run
        from ..io.files import describe_os_error

        print(f"drdm {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"drdm {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
    return int(status or 0)


def _one_line_warning(command: str):  # noqa: ANN202 - a warnings.showwarning replacement
    """Warnings as ``drdm COMMAND: warning: MESSAGE`` on one line (no Python source line)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        text = str(message).splitlines()[0] if str(message) else category.__name__
        print(f"drdm {command}: warning: {text}", file=file or sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
