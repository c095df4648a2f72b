"""The manifests of ``drdm augment`` and ``drdm synth``: columns, writing, merging, resume.

* **Columns** (:data:`AUGMENT_COLUMNS`, :data:`SYNTH_COLUMNS`, :data:`MANIFEST_SCHEMAS`): one
  CSV row per sample, rows sorted by their first column (the sample's main output path, which
  is zero-padded, so the order is input name, level, sample).
* **Writing and merging** (:func:`write_manifest`, :func:`merge_manifests`; reading:
  :func:`drdm.io.manifest.read_manifest`): a sharded run writes
  ``manifest-shard{i}of{K}.csv`` (:func:`manifest_name`); merging the shards' manifests gives
  exactly the manifest of the unsharded run.  Rows of earlier runs into the folder (e.g. other
  levels) are kept while their files exist.
* **Resume** (:class:`ManifestBook`): outputs are renamed into place only when fully written
  (:func:`drdm.io.atomic_path`), so a sample whose files all exist and whose row is in the
  manifest (or the journal, :func:`journal_path`) left by an earlier run is complete and
  skipped.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import atomic_path
from ..io.manifest import read_manifest

__all__ = [
    "AUGMENT_COLUMNS",
    "MANIFEST_SCHEMAS",
    "SYNTH_COLUMNS",
    "ManifestBook",
    "journal_path",
    "manifest_name",
    "merge_manifests",
    "write_manifest",
]

#: columns of the ``drdm augment`` manifest, in order
AUGMENT_COLUMNS = (
    "image",
    "label",
    "ddf",
    "source_image",
    "source_label",
    "level",
    "sample",
    "seed",
    "max_disp_pct",
    "mean_disp_pct",
    "fold_pct",
    "slice_axis",
)
#: columns of the ``drdm synth`` manifest, in order
SYNTH_COLUMNS = (
    "moving",
    "fixed",
    "ddf",
    "moving_label",
    "fixed_label",
    "source_image",
    "source_label",
    "level_aug",
    "level_syn",
    "sample",
    "seed",
    "max_disp_pct",
    "mean_disp_pct",
    "fold_pct",
    "slice_axis",
)
#: the manifests the package writes: command -> (columns, the columns naming output files)
MANIFEST_SCHEMAS = {
    "augment": (AUGMENT_COLUMNS, ("image", "label", "ddf")),
    "synth": (SYNTH_COLUMNS, ("moving", "fixed", "ddf", "moving_label", "fixed_label")),
}


def manifest_name(shards: int, index: int, stem: str = "manifest") -> str:
    """``manifest.csv`` for an unsharded run, else ``manifest-shard{i}of{K}.csv``."""
    return f"{stem}.csv" if shards == 1 else f"{stem}-shard{index}of{shards}.csv"


def _sorted_rows(rows: Iterable[Mapping[str, str]], key_column: str) -> list[dict[str, str]]:
    return sorted((dict(r) for r in rows), key=lambda r: r[key_column])


def write_manifest(
    path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> None:
    """Write the manifest atomically, rows sorted by the first column."""
    rows = [{c: _cell(r[c]) for c in columns} for r in rows]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(_sorted_rows(rows, columns[0]))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def merge_manifests(paths: Sequence[str | Path]) -> tuple[list[str], list[dict[str, str]]]:
    """Merge manifest CSVs (e.g. the shards of a run) into one ``(columns, rows)``.

    Every file must be a manifest of ``drdm augment`` or ``drdm synth``
    (:data:`MANIFEST_SCHEMAS`), all of the same kind.  A row appearing in several files (same
    first column) is kept once when identical and is an :class:`~drdm.errors.InputError` when
    the copies differ (a conflict).  Rows are sorted by the first column, as :func:`write_manifest`
    writes them, so merging a sharded run's manifests reproduces the unsharded manifest.
    """
    if not paths:
        raise InputError("no manifest to merge")
    columns: list[str] | None = None
    merged: dict[str, dict[str, str]] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        path = Path(path)
        cols, rows = read_manifest(path)
        if not any(cols == list(schema) for schema, _ in MANIFEST_SCHEMAS.values()):
            raise InputError(
                f"{path}: not a drdm augment or synth manifest (columns {', '.join(cols)[:120]})"
            )
        if columns is None:
            columns = cols
        elif cols != columns:
            raise InputError(
                f"{path}: columns {cols} differ from those of {Path(paths[0])} ({columns})"
            )
        key = columns[0]
        for row in rows:
            previous = merged.get(row[key])
            if previous is None:
                merged[row[key]] = row
                origin[row[key]] = path
            elif previous != row:
                raise InputError(
                    f"{path}: conflicting rows for {key} {row[key]!r} (also in {origin[row[key]]})"
                )
    assert columns is not None
    return columns, _sorted_rows(merged.values(), columns[0])


class ManifestBook:
    """The rows of one run (or shard) manifest, kept on disk as the run goes.

    Rows found in the manifest file (or in ``other_sources``, e.g. the manifests of the same
    folder run with other shards) are reused for jobs whose seed matches and whose files all
    exist (:meth:`done`); :meth:`add` records a new row.  :meth:`flush` rewrites the file
    atomically with the rows confirmed so far, the earlier rows of ``pending`` jobs not reached
    yet (so an interruption loses nothing; ``final=True`` leaves these out), and the manifest
    file's own rows of samples outside this run (e.g. other levels of an earlier run into the
    same folder) whose files all still exist.

    Between flushes every new row is also appended to a journal beside the manifest
    (``.<manifest name>.rows.jsonl``, one JSON object per line), so that a run killed
    without clean-up (SIGKILL, power loss of the process) loses no finished sample: the next
    run reads the journal's rows as it reads the manifest's.  A flush writes the rows into the
    manifest and removes the journal.
    """

    def __init__(
        self,
        path: str | Path,
        columns: Sequence[str],
        root: str | Path,
        file_columns: Sequence[str],
        pending: Iterable[str] = (),
        other_sources: Iterable[str | Path] = (),
    ) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.root = Path(root)
        self.file_columns = list(file_columns)
        self.rows: dict[str, dict[str, Any]] = {}
        self.journal = journal_path(self.path)
        self._journal: Any = None
        self._previous: dict[str, dict[str, str]] = {}
        own: dict[str, dict[str, str]] = {}
        for source in [*other_sources, self.path]:  # this manifest's own rows win
            if Path(source).is_file():
                try:
                    cols, rows = read_manifest(source)
                except InputError:
                    continue
                if cols == self.columns:
                    self._previous.update((r[self.columns[0]], r) for r in rows)
                    if Path(source) == self.path:
                        own = {r[self.columns[0]]: r for r in rows}
        # rows of a killed run that never reached the manifest (newer than its rows)
        journal_rows = _read_journal(self.journal, self.columns)
        self._previous.update(journal_rows)
        own.update(journal_rows)
        pending = list(pending)
        self._pending = [k for k in pending if k in self._previous]
        jobs = set(pending)
        self._kept = {
            key: row
            for key, row in own.items()
            if key not in jobs and all(p.is_file() for p in self.files(row))
        }

    def files(self, row: Mapping[str, Any]) -> list[Path]:
        """The output files of ``row`` (``;``-separated cells of the file columns)."""
        names = []
        for column in self.file_columns:
            names += [v for v in str(row[column]).split(";") if v]
        return [self.root / n for n in names]

    def done(self, key: str, seed: int) -> bool:
        """Whether an earlier run completed the sample whose first-column value is ``key``
        with this ``seed`` (its row is in the old manifest and all its files exist); if so the
        row is confirmed for this run's manifest."""
        row = self._previous.get(key)
        if row is None or row.get("seed") != str(seed):
            return False
        if not all(p.is_file() for p in self.files(row)):
            return False
        self.rows[key] = row
        return True

    def add(self, row: Mapping[str, Any]) -> None:
        """Record the row of a newly computed sample (and append it to the journal)."""
        self.rows[str(row[self.columns[0]])] = dict(row)
        if self._journal is None:
            self._journal = open(self.journal, "a", encoding="utf-8")  # noqa: SIM115
        cells = {c: _cell(row[c]) for c in self.columns}
        self._journal.write(json.dumps(cells, ensure_ascii=False) + "\n")
        self._journal.flush()  # in the operating system's hands: survives a killed process

    def flush(self, final: bool = False) -> None:
        """Rewrite the manifest file atomically (see the class docstring) and drop the
        journal, whose rows it now holds."""
        rows = {**self._kept, **self.rows}
        if not final:
            for key in self._pending:
                rows.setdefault(key, self._previous[key])
        write_manifest(self.path, self.columns, rows.values())
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        with contextlib.suppress(FileNotFoundError):
            self.journal.unlink()


def journal_path(manifest: str | Path) -> Path:
    """The journal of new rows beside ``manifest`` (:class:`ManifestBook`)."""
    manifest = Path(manifest)
    return manifest.with_name(f".{manifest.name}.rows.jsonl")


def _read_journal(path: Path, columns: Sequence[str]) -> dict[str, dict[str, str]]:
    """The complete rows of a journal (a line cut short by a kill is ignored)."""
    rows: dict[str, dict[str, str]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and all(isinstance(row.get(c), str) for c in columns):
            rows[row[columns[0]]] = {c: row[c] for c in columns}
    return rows
