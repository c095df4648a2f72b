"""``drdm merge-manifests``: join the shard manifests of a sharded augment/synth run."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..errors import InputError
from ._options import output_name, output_path

_SHARD = re.compile(r"^manifest-shard(\d+)of(\d+)\.csv$")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge-manifests",
        help="merge the shard manifests of a sharded 'drdm augment' or 'drdm synth' run",
        description="Merge manifest CSVs into one. A folder argument stands for its "
        "manifest-shard{i}of{K}.csv files, which must be all K shards of one run. Rows are "
        "checked for duplicates (identical copies are kept once, differing copies are an "
        "error) and sorted as an unsharded run sorts them, so the result equals the manifest "
        "that run would have written.",
    )
    p.add_argument(
        "sources", type=Path, nargs="+", metavar="DIR_OR_FILE", help="run folder(s) or CSV files"
    )
    p.add_argument(
        "--out",
        type=output_path,
        default=None,
        help="merged manifest (default: manifest.csv in the single folder given)",
    )
    p.set_defaults(run=run)


def shard_files(folder: Path) -> list[Path]:
    """The ``manifest-shard{i}of{K}.csv`` files of ``folder``, checked to be shards
    ``0..K-1`` of one ``K``; raises :class:`~drdm.errors.InputError` otherwise."""
    found: dict[int, set[int]] = {}
    files: dict[tuple[int, int], Path] = {}
    for path in sorted(folder.iterdir()):
        match = _SHARD.match(path.name)
        if match:
            index, count = int(match[1]), int(match[2])
            found.setdefault(count, set()).add(index)
            files[(index, count)] = path
    if not found:
        raise InputError(f"{folder}: no manifest-shard*of*.csv files")
    if len(found) > 1:
        counts = ", ".join(str(k) for k in sorted(found))
        raise InputError(f"{folder}: shard manifests of different shard counts ({counts})")
    ((count, indices),) = found.items()
    missing = sorted(set(range(count)) - indices)
    if missing:
        raise InputError(
            f"{folder}: shard(s) {', '.join(map(str, missing))} of {count} have no manifest "
            "(run them first, or pass the CSV files to merge explicitly)"
        )
    return [files[(i, count)] for i in range(count)]


def run(args: argparse.Namespace) -> None:
    from ..batch.manifest import merge_manifests, write_manifest
    from ..io import check_output_file

    paths: list[Path] = []
    for source in args.sources:
        if source.is_dir():
            paths += shard_files(source)
        elif source.is_file():
            paths.append(source)
        else:
            raise InputError(f"{source}: no such file or folder")
    out = args.out
    if out is None:
        folders = [s for s in args.sources if s.is_dir()]
        if len(args.sources) != 1 or not folders:
            raise InputError("--out is needed unless a single run folder is given")
        out = folders[0] / "manifest.csv"
    name = output_name(args.out)
    check_output_file(out, name)
    if out.resolve() in {p.resolve() for p in paths}:
        raise InputError(f"{name} {out}: is one of the manifests to merge")
    columns, rows = merge_manifests(paths)
    write_manifest(out, columns, rows)
    print(f"{out}: {len(rows)} rows from {len(paths)} manifest(s)")
