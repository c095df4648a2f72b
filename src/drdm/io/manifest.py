"""Reading the manifest CSV files that ``drdm augment`` / ``drdm synth`` write (their schemas
and writer live in :mod:`drdm.batch.manifest`)."""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import InputError

__all__ = ["read_manifest"]


def read_manifest(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """``(columns, rows)`` of a manifest CSV (values as strings)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc})") from None
    if not columns:
        raise InputError(f"{path}: empty manifest (no header)")
    if any(None in row or None in row.values() for row in rows):
        raise InputError(f"{path}: malformed manifest (rows and header differ in length)")
    return columns, rows
