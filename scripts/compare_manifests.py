"""Compare the manifests of two ``scripts/output_digests.sh`` folders column by column.

    python scripts/compare_manifests.py /tmp/before /tmp/after

For every ``manifest*.csv`` under BEFORE, prints the columns AFTER adds or drops and whether
the rows agree on every shared column (with each folder's own path replaced), so a change that
only adds a column is told apart from one that changes values.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def rows(path: Path, root: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        table = [{k: v.replace(str(root), "OUT") for k, v in r.items()} for r in reader]
        return list(reader.fieldnames or []), table


def main() -> int:
    before, after = (Path(a).resolve() for a in sys.argv[1:3])
    differ = 0
    for old in sorted(before.rglob("manifest*.csv")):
        new = after / old.relative_to(before)
        cols_a, rows_a = rows(old, before)
        cols_b, rows_b = rows(new, after)
        shared = [c for c in cols_a if c in cols_b]
        same = [{c: r[c] for c in shared} for r in rows_a] == [
            {c: r[c] for c in shared} for r in rows_b
        ]
        differ += not same
        added = [c for c in cols_b if c not in cols_a]
        dropped = [c for c in cols_a if c not in cols_b]
        values = sorted({r[c] for r in rows_b for c in added})
        print(
            f"{old.relative_to(before)}: shared columns {'identical' if same else 'DIFFER'}; "
            f"added {added} (values {values}); dropped {dropped}"
        )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
