"""Batch jobs of ``drdm augment`` and ``drdm synth``: inputs, seeds, shards, manifests, resume,
run folders.

A job is one output sample: an input (image + optional label maps), a level (or a level pair)
and a sample number.  The pieces here are independent of what a job computes:

* **Inputs** (:func:`list_inputs`): one ``--image`` with its ``--label`` maps, or a folder of
  images with matching labels or a CSV/JSON list of pairs (:func:`drdm.io.image.find_pairs`).
  Every input gets a unique ``name`` (its file stem; repeated stems get ``-2``, ``-3``, ... in
  list order) that names its output folder and enters its seeds.
* **Seeds** (:func:`drdm.seeding.sample_seed`): every sample has its own 63-bit
  seed, the first 8 bytes of ``sha256("drdm/<command>/<seed>/<name>/<level>/<sample>")``.  A
  sample's output therefore depends only on the run's ``--seed`` (any integer), the input's
  name, the level and the sample number: not on the shard that computes it, the other inputs
  or levels, or the samples already done.  ``generate``, ``diffuse`` and ``demo`` use the same
  scheme.
* **Shards** (:func:`resolve_shards`, :func:`shard_bounds`): the job list (inputs x levels x
  samples, in that order) is cut into ``K`` contiguous blocks whose sizes differ by at most one;
  block ``i`` is shard ``i``.  The blocks cover the list with no overlap and no gaps.
* **Manifests** (:func:`read_manifest`, :func:`write_manifest`, :func:`merge_manifests`): CSV
  with the columns :data:`AUGMENT_COLUMNS` or :data:`SYNTH_COLUMNS`, one row per sample, rows
  sorted by their first column (the sample's main output path, which is
  zero-padded, so the order is input name, level, sample).  A sharded run writes
  ``manifest-shard{i}of{K}.csv``; merging the shards' manifests gives exactly the manifest of
  the unsharded run.  Rows of earlier runs into the folder (e.g. other levels) are kept while
  their files exist.
* **Resume**: outputs are renamed into place only when fully written
  (:func:`drdm.io.atomic_path`), so a sample whose files all exist and whose row is in the
  manifest left by an earlier run is complete and skipped (:class:`ManifestBook`).
* **One run per folder**: a run folder records the settings that change outputs in
  ``run.json``, claimed atomically by the first run (:func:`claim_run_settings`); a run with
  other settings is refused, even when both start at once.  While a run (or one shard of it)
  works it holds a lock (:class:`RunLock`, released when the process ends, however it ends),
  so the same run started twice at once is refused too.  Temporaries of killed runs are
  removed when the next run starts (:func:`drdm.io.remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import atomic_path, file_stem
from ..io.files import default_file_mode, scratch_path
from ..io.manifest import read_manifest

__all__ = [
    "AUGMENT_COLUMNS",
    "MAX_JOBS",
    "MANIFEST_SCHEMAS",
    "RUN_SETTINGS_NAME",
    "SYNTH_COLUMNS",
    "BatchReport",
    "InputItem",
    "Job",
    "ManifestBook",
    "RunLock",
    "check_job_count",
    "check_run_settings",
    "claim_run_settings",
    "input_name",
    "list_inputs",
    "manifest_name",
    "merge_manifests",
    "parse_int_list",
    "read_manifest",
    "resolve_shards",
    "run_batch",
    "shard_bounds",
    "shard_jobs",
    "write_manifest",
    "write_run_settings",
]

RUN_SETTINGS_NAME = "run.json"

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
)
#: the manifests the package writes: command -> (columns, the columns naming output files)
MANIFEST_SCHEMAS = {
    "augment": (AUGMENT_COLUMNS, ("image", "label", "ddf")),
    "synth": (SYNTH_COLUMNS, ("moving", "fixed", "ddf", "moving_label", "fixed_label")),
}


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputItem:
    """One input of a batch: an image and the label maps on its grid.

    Attributes:
        index: position in the input list (0-based).
        name: unique name: the output subfolder and part of every sample's seed.
        image: the image file (or DICOM series folder).
        labels: label-map files deformed alike, possibly none.
    """

    index: int
    name: str
    image: Path
    labels: tuple[Path, ...] = ()


def input_name(path: str | Path) -> str:
    """The name an image contributes to output paths: :func:`drdm.io.file_stem`."""
    return file_stem(path)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """File stems, the repeated ones made unique with ``-2``, ``-3``, ... in list order."""
    used: set[str] = set()
    names = []
    for path in paths:
        base = input_name(path) or "image"
        name, count = base, 1
        while name in used:
            count += 1
            name = f"{base}-{count}"
        used.add(name)
        names.append(name)
    return names


def list_inputs(
    image: str | Path | None = None,
    labels: Sequence[str | Path] = (),
    input: str | Path | None = None,
    require_files: bool = True,
) -> list[InputItem]:
    """The inputs of a run: ``image`` (a file or a DICOM series folder) with its ``labels``, or
    ``input``: a folder of images with matching labels, or a ``.csv`` / ``.json`` list, paired
    by :func:`drdm.io.image.find_pairs` (one label map per image).

    Raises :class:`~drdm.errors.InputError` when both or neither of ``image`` and ``input`` are
    given, ``labels`` come with ``input``, a folder holds no image, or a list is malformed or
    (with ``require_files``) names a missing file. Images are not opened here (unreadable or
    missing ones are reported when an input is read: one failed input of ``--keep-going``).
    """
    if (image is None) == (input is None):
        raise InputError("give exactly one of --image and --input")
    pairs: list[tuple[Path, tuple[Path, ...]]]
    if image is not None:
        pairs = [(Path(image), tuple(Path(p) for p in labels))]
    else:
        if labels:
            raise InputError("--label goes with --image; with --input, pair the labels there")
        from ..io.image import find_pairs

        found = find_pairs(Path(input), require_files=require_files)  # type: ignore[arg-type]
        pairs = [(Path(img), () if lab is None else (Path(lab),)) for img, lab in found]
    names = _unique_names([p[0] for p in pairs])
    return [
        InputItem(index=k, name=name, image=img, labels=labs)
        for k, (name, (img, labs)) in enumerate(zip(names, pairs, strict=True))
    ]


def parse_int_list(text: str, option: str) -> list[int]:
    """``"30,45,55"`` -> ``[30, 45, 55]``; empty items (``"4,,5"``), duplicates and
    non-integers are an :class:`~drdm.errors.InputError` naming ``option``."""
    items = [v.strip() for v in str(text).split(",")]
    if len(items) > 1 and not all(items):
        raise InputError(f"{option} {text!r}: empty item; expected comma-separated integers")
    try:
        values = [int(v) for v in items if v]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated integers") from None
    if not values:
        raise InputError(f"{option} {text!r}: expected at least one value")
    if len(set(values)) != len(values):
        raise InputError(f"{option} {text!r}: repeated value")
    return values


# ----------------------------------------------------------------------------------------------
# Jobs, seeds, shards
# ----------------------------------------------------------------------------------------------


#: the most samples one run (all shards together) may list; a larger count is refused before
#: anything is read or written (the job list is built in memory: about 70 bytes per sample)
MAX_JOBS = 1_000_000


def check_job_count(count: int, option: str, value: int) -> None:
    """Refuse a run of more than :data:`MAX_JOBS` samples (one line naming ``option``)."""
    if count > MAX_JOBS:
        raise InputError(
            f"{option} {value}: {count:,} samples in all exceed the limit of {MAX_JOBS:,} per "
            "run; split the work into several runs (other --levels or inputs)"
        )


@dataclass(frozen=True)
class Job:
    """One output sample.

    Attributes:
        item: the input.
        level: the level (``augment``) or ``(T'_aug, T'_syn)`` (``synth``).
        sample: the sample number at this level, ``0..N-1``.
        seed: the sample's own seed (:func:`drdm.seeding.sample_seed`).
        prefix: output path prefix relative to the run folder, e.g. ``"img/L055_s003"``.
        key: the sample's main output path relative to the run folder (its manifest row's
            first column), e.g. ``"img/L055_s003_image.nii.gz"``.
    """

    item: InputItem
    level: Any
    sample: int
    seed: int
    prefix: str
    key: str = ""


def shard_bounds(count: int, shards: int, index: int) -> tuple[int, int]:
    """``[start, stop)`` of shard ``index`` of ``shards`` over ``count`` jobs: contiguous blocks
    whose sizes differ by at most one, covering ``0..count`` with no overlap and no gaps."""
    if shards < 1 or not 0 <= index < shards:
        raise ValueError(f"shard {index} of {shards}: need 0 <= index < shards")
    return (index * count) // shards, ((index + 1) * count) // shards


def shard_jobs(jobs: Sequence[Job], shards: int, index: int) -> list[Job]:
    """The jobs of shard ``index`` of ``shards`` (:func:`shard_bounds`)."""
    start, stop = shard_bounds(len(jobs), shards, index)
    return list(jobs[start:stop])


def resolve_shards(
    shards: int | None, index: int | None, env: Mapping[str, str] | None = None
) -> tuple[int, int]:
    """``(K, i)`` from ``--shards K --shard-index i``, defaulting to torchrun's ``WORLD_SIZE``
    and ``RANK`` environment variables, else ``(1, 0)``."""
    env = os.environ if env is None else env
    if shards is None and index is None and "WORLD_SIZE" in env and "RANK" in env:
        try:
            shards, index = int(env["WORLD_SIZE"]), int(env["RANK"])
        except ValueError:
            raise InputError(
                f"WORLD_SIZE={env['WORLD_SIZE']!r} / RANK={env['RANK']!r}: expected integers"
            ) from None
        source = "WORLD_SIZE/RANK"
    else:
        if shards is None and index is not None:
            raise InputError("--shard-index needs --shards")
        shards = 1 if shards is None else shards
        index = 0 if index is None else index
        source = "--shards/--shard-index"
    if shards < 1:
        raise InputError(f"{source}: the number of shards must be >= 1, got {shards}")
    if not 0 <= index < shards:
        raise InputError(f"{source}: shard index {index} must lie in 0..{shards - 1}")
    return shards, index


def manifest_name(shards: int, index: int, stem: str = "manifest") -> str:
    """``manifest.csv`` for an unsharded run, else ``manifest-shard{i}of{K}.csv``."""
    return f"{stem}.csv" if shards == 1 else f"{stem}-shard{index}of{shards}.csv"


# ----------------------------------------------------------------------------------------------
# Manifests
# ----------------------------------------------------------------------------------------------


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


@dataclass
class BatchReport:
    """What :func:`run_batch` did: samples ``computed`` and ``skipped`` (complete from an
    earlier run), and ``failures`` (``"FILE: problem"`` per failed input)."""

    computed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    failed_inputs: list[InputItem] = field(default_factory=list)


def run_batch(
    jobs: Sequence[Job],
    book: ManifestBook,
    load: Callable[[InputItem], Any],
    compute: Callable[[Job, Any], Mapping[str, Any]],
    keep_going: bool = False,
    progress: bool = True,
    before_first_write: Callable[[], None] | None = None,
    flush_every: float = 10.0,
) -> BatchReport:
    """Run ``jobs`` (grouped by input, in order) and keep ``book`` on disk.

    1. Every input is ``load``-ed once up front: an :class:`~drdm.errors.InputError` stops the
       run before anything is written, or, with ``keep_going``, the input is listed in
       ``failures`` and its jobs are left out.
    2. ``before_first_write()`` is called (e.g. to create the folder and record the settings).
    3. Per input: jobs complete from an earlier run are skipped; the input is loaded again and
       ``compute(job, loaded)`` writes the sample's files and returns its manifest row.  With
       ``keep_going`` an error of an input (``InputError``, ``ValueError``, ``RuntimeError``,
       ``OSError``) is listed and the next input goes on.

    The manifest is rewritten at most every ``flush_every`` seconds and at the end; after an
    error or interruption it keeps the earlier run's rows of the jobs not reached.  A tqdm bar
    counts samples.
    """
    report = BatchReport()
    groups: dict[int, list[Job]] = {}
    items: dict[int, InputItem] = {}
    for job in jobs:
        groups.setdefault(job.item.index, []).append(job)
        items[job.item.index] = job.item

    def fail(item: InputItem, exc: BaseException) -> None:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if str(item.image) not in message:
            message = f"{item.image}: {message}"
        report.failures.append(message)
        report.failed_inputs.append(item)

    cache: dict[int, Any] = {}
    for index, item in items.items():
        try:
            loaded = load(item)
        except InputError as exc:
            if not keep_going:
                raise
            fail(item, exc)
            continue
        if len(items) == 1:
            cache[index] = loaded
        del loaded
    failed = {item.index for item in report.failed_inputs}
    if before_first_write is not None:
        before_first_write()

    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), unit="sample", disable=not progress, dynamic_ncols=True)
    last_flush = time.monotonic()
    finished = False
    try:
        for index, group in groups.items():
            item = items[index]
            if index in failed:
                bar.update(len(group))
                continue
            todo = []
            for job in group:
                if book.done(job.key, job.seed):
                    report.skipped += 1
                    bar.update(1)
                else:
                    todo.append(job)
            if not todo:
                continue
            finished_here = 0
            try:
                loaded = cache.pop(index) if index in cache else load(item)
                for job in todo:
                    book.add(compute(job, loaded))
                    report.computed += 1
                    finished_here += 1
                    bar.update(1)
                    if time.monotonic() - last_flush >= flush_every:
                        book.flush()
                        last_flush = time.monotonic()
            except (InputError, ValueError, RuntimeError, OSError) as exc:
                if not keep_going:
                    raise
                fail(item, exc)
                bar.update(len(todo) - finished_here)
            finally:
                loaded = None
        finished = True
    finally:
        bar.close()
        book.flush(final=finished)
    return report


# ----------------------------------------------------------------------------------------------
# Run settings
# ----------------------------------------------------------------------------------------------


def _run_record(command: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    # normalise tuples etc. as JSON stores them
    return json.loads(json.dumps({"command": command, "settings": dict(settings)}))


def check_run_settings(out: str | Path, command: str, settings: Mapping[str, Any]) -> None:
    """Check that ``out`` holds no run of another command or with other ``settings`` (the
    options that change a sample's output), as recorded in ``out/run.json``.

    Raises :class:`~drdm.errors.InputError` naming the differing settings; writes nothing.
    """
    path = Path(out) / RUN_SETTINGS_NAME
    if not path.exists():
        return
    record = _run_record(command, settings)
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
        raise InputError(f"{path}: unreadable run settings; use another --out folder")
    if old.get("command") != command:
        raise InputError(
            f"{out}: holds the outputs of 'drdm {old.get('command')}', not of "
            f"'drdm {command}'; use another --out folder"
        )
    differ = sorted(
        k
        for k in set(old["settings"]) | set(record["settings"])
        if old["settings"].get(k) != record["settings"].get(k)
    )
    if differ:
        what = ", ".join(
            f"{k}: {old['settings'].get(k)!r} there, {record['settings'].get(k)!r} now"
            for k in differ
        )
        raise InputError(
            f"{out}: holds a run with other settings ({what}); use another --out folder"
        )


def write_run_settings(out: str | Path, command: str, settings: Mapping[str, Any]) -> None:
    """Write ``out/run.json`` unless it exists (:func:`claim_run_settings` without the
    comparison)."""
    path = Path(out) / RUN_SETTINGS_NAME
    if not path.exists():
        claim_run_settings(out, command, settings)


def claim_run_settings(out: str | Path, command: str, settings: Mapping[str, Any]) -> bool:
    """Record ``settings`` in ``out/run.json`` unless a run did already, atomically: of several
    runs starting at once exactly one writes the file (a complete temporary is hard-linked to
    the name, which fails when the name exists), and every other one compares its settings
    with the file (:func:`check_run_settings`).

    Returns ``True`` when this call wrote the file. Raises :class:`~drdm.errors.InputError`
    when the folder holds a run of another command or with other settings.
    """
    path = Path(out) / RUN_SETTINGS_NAME
    record = _run_record(command, settings)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    with scratch_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, default_file_mode())
        try:
            os.link(tmp, path)
        except FileExistsError:
            check_run_settings(out, command, settings)
            return False
        except OSError:  # a file system without hard links: exclusive create instead
            try:
                with open(path, "x", encoding="utf-8") as handle:
                    handle.write(text)
            except FileExistsError:
                check_run_settings(out, command, settings)
                return False
    return True


# ----------------------------------------------------------------------------------------------
# One run at a time
# ----------------------------------------------------------------------------------------------


class RunLock:
    """An exclusive lock on a run folder (or on one shard of it) while a run works in it.

    ``with RunLock(out, "manifest"):`` holds ``out/.drdm-manifest.lock`` (an ``flock``, which
    the operating system releases when the process ends, even by SIGKILL); a second process
    asking for the same lock gets an :class:`~drdm.errors.InputError` naming the holder. The
    file records the holder (host and process id) and is removed on release.
    """

    def __init__(self, folder: str | Path, name: str = "manifest") -> None:
        self.path = Path(folder) / f".drdm-{name}.lock"
        self._handle: Any = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`~drdm.errors.InputError`."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise InputError(
                    f"{self.path.parent}: another drdm run works in this folder ({holder}); "
                    "wait for it to finish or use another --out folder"
                ) from None
            try:  # the file may have been removed by its previous holder after we opened it
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Remove the lock file and release the lock."""
        if self._handle is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._handle.close()
        self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
