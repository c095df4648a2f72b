"""The ``drdm`` command line. Thin commands over the library; see ``drdm --help``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from . import (
    adapt,
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
    "adapt": adapt,
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
    input or options (one-line message on stderr); 130: interrupted by Ctrl-C (SIGINT) or
    SIGTERM, which are handled alike: the work stops with a one-line message, finished
    outputs and the manifest are kept, the folder's lock is released.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning(args.command)
    previous_term = _handle_sigterm()
    try:
        status = args.run(args)
    except InputError as exc:
        print(f"drdm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk or a folder made read-only during the run
        from ..io.files import describe_os_error

        print(f"drdm {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = " (SIGTERM)" if isinstance(exc, Terminated) else ""
        print(f"drdm {args.command}: interrupted{how}", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    return int(status or 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command runs so that it ends as a Ctrl-C does (clean-up in
    ``finally`` blocks: lock released, manifest written, temporaries removed)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _handle_sigterm() -> Any:
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only);
    returns the previous handler, or ``None`` when it could not be installed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated) or signal.SIG_DFL
    except (ValueError, OSError):  # pragma: no cover - not installable here
        return None


def _one_line_warning(command: str):  # noqa: ANN202 - a warnings.showwarning replacement
    """Warnings as ``drdm COMMAND: warning: MESSAGE`` on one line (no Python source line)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        text = str(message).splitlines()[0] if str(message) else category.__name__
        print(f"drdm {command}: warning: {text}", file=file or sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
