"""``drdm show``: a PNG montage of the samples of an ``augment`` or ``synth`` run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from . import _defaults as D
from ._options import output_name, output_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="draw a PNG montage of the samples listed in a drdm augment/synth manifest",
        description="Draw originals with label contours, deformed images with the deformed "
        "label contours, deformation-grid overlays and Jacobian-determinant maps (folds in "
        "black) for up to --max-rows samples of a manifest written by 'drdm augment' or "
        "'drdm synth' (for synth: moving, fixed and phi_syn). 3D volumes show their central "
        "slice along the slice axis.",
    )
    p.add_argument(
        "manifest",
        type=Path,
        metavar="MANIFEST_OR_DIR",
        help="manifest.csv, or the run folder holding it (or its shard manifests)",
    )
    p.add_argument(
        "--out",
        type=output_path,
        default=None,
        help="PNG to write (default: overview.png beside the manifest)",
    )
    p.add_argument(
        "--max-rows",
        type=int,
        default=D.MAX_ROWS,
        help="samples to draw, evenly spread over the manifest (default %(default)s)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..viz import find_manifests, overview_figure, rows_from_manifest

    if args.max_rows < 1:
        raise InputError(f"--max-rows {args.max_rows}: must be >= 1")
    manifests = find_manifests(args.manifest)
    out = args.out if args.out is not None else manifests[0].parent / "overview.png"
    name = output_name(args.out)
    if out.suffix.lower() != ".png":
        raise InputError(f"{name} {out}: the figure is written as PNG (use a .png name)")
    from ..io import check_output_file

    check_output_file(out, name)
    rows = rows_from_manifest(args.manifest, max_rows=args.max_rows)
    overview_figure(rows, out, max_rows=args.max_rows)
    print(f"drdm show: {len(rows)} sample(s) -> {out}")
    return 0
