"""Batch jobs of ``drdm augment`` and ``drdm synth``: inputs, seeds, shards, manifests, resume.

A job is one output sample: an input (image + optional label maps), a level (or a level pair)
and a sample number.  The pieces here are independent of what a job computes:

* **Inputs** (:func:`list_inputs`): one ``--image`` with its ``--label`` maps, or a folder of
  images with matching labels or a CSV/JSON list of pairs (:func:`drdm.io.image.find_pairs`).
  Every input gets a unique ``name`` (its file stem; repeated stems get ``-2``, ``-3``, ... in
  list order) that names its output folder and enters its seeds.
* **Seeds** (:func:`derive_seed`): every sample has its own 63-bit seed, the first 8 bytes of
  ``sha256("drdm/<command>/<seed>/<name>/<level>/<sample>")``.  A sample's output therefore
  depends only on the run's ``--seed``, the input's name, the level and the sample number: not on
  the shard that computes it, the other inputs or levels, or the samples already done.
* **Shards** (:func:`resolve_shards`, :func:`shard_bounds`): the job list (inputs x levels x
  samples, in that order) is cut into ``K`` contiguous blocks whose sizes differ by at most one;
  block ``i`` is shard ``i``.  The blocks cover the list with no overlap and no gaps.
* **Manifests** (:func:`read_manifest`, :func:`write_manifest`, :func:`merge_manifests`): CSV,
  one row per sample, rows sorted by their first column (the sample's main output path, which is
  zero-padded, so the order is input name, level, sample).  A sharded run writes
  ``manifest-shard{i}of{K}.csv``; merging the shards' manifests gives exactly the manifest of
  the unsharded run.
* **Resume**: outputs are renamed into place only when fully written
  (:func:`drdm.io.atomic_path`), so a sample whose files all exist and whose row is in the
  manifest left by an earlier run is complete and skipped (:class:`ManifestBook`).  A run
  folder records the settings that change outputs in ``run.json``
  (:func:`check_run_settings`, :func:`write_run_settings`); re-running into it with different
  settings is an error instead of a silent mix.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .io import atomic_path

__all__ = [
    "RUN_SETTINGS_NAME",
    "BatchReport",
    "InputItem",
    "Job",
    "ManifestBook",
    "check_run_settings",
    "derive_seed",
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
    """The name an image contributes to output paths: its file name without the image suffix
    (``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``), or a folder's name."""
    from .io.image import image_suffix

    path = Path(path)
    suffix = image_suffix(path)
    if suffix and len(path.name) > len(suffix):
        return path.name[: -len(suffix)]
    return path.name


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
) -> list[InputItem]:
    """The inputs of a run: ``image`` (a file or a DICOM series folder) with its ``labels``, or
    ``input``: a folder of images with matching labels, or a ``.csv`` / ``.json`` list, paired
    by :func:`drdm.io.image.find_pairs` (one label map per image).

    Raises :class:`~drdm.errors.InputError` when both or neither of ``image`` and ``input`` are
    given, ``labels`` come with ``input``, a folder holds no image, or a list is malformed.
    Images are not opened here (unreadable ones are reported when an input is read).
    """
    if (image is None) == (input is None):
        raise InputError("give exactly one of --image and --input")
    pairs: list[tuple[Path, tuple[Path, ...]]]
    if image is not None:
        pairs = [(Path(image), tuple(Path(p) for p in labels))]
    else:
        if labels:
            raise InputError("--label goes with --image; with --input, pair the labels there")
        from .io.image import find_pairs

        found = find_pairs(Path(input))  # type: ignore[arg-type]
        pairs = [(Path(img), () if lab is None else (Path(lab),)) for img, lab in found]
    names = _unique_names([p[0] for p in pairs])
    return [
        InputItem(index=k, name=name, image=img, labels=labs)
        for k, (name, (img, labs)) in enumerate(zip(names, pairs, strict=True))
    ]


def parse_int_list(text: str, option: str) -> list[int]:
    """``"30,45,55"`` -> ``[30, 45, 55]``; duplicates and non-integers are an
    :class:`~drdm.errors.InputError` naming ``option``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
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


def derive_seed(command: str, seed: int, name: str, level: str | int, sample: int) -> int:
    """The seed of one sample: the first 8 bytes of
    ``sha256("drdm/<command>/<seed>/<name>/<level>/<sample>")`` as a big-endian integer, masked
    to 63 bits (valid for :meth:`torch.Generator.manual_seed`).

    ``level`` is the level (``55``) for ``augment`` and ``"30:20"`` for ``synth``.
    """
    text = f"drdm/{command}/{int(seed)}/{name}/{level}/{int(sample)}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass(frozen=True)
class Job:
    """One output sample.

    Attributes:
        item: the input.
        level: the level (``augment``) or ``(T'_aug, T'_syn)`` (``synth``).
        sample: the sample number at this level, ``0..N-1``.
        seed: the sample's own seed (:func:`derive_seed`).
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

    Every file must have the same columns.  A row appearing in several files (same first
    column) is kept once when identical and is an :class:`~drdm.errors.InputError` when the
    copies differ (a conflict).  Rows are sorted by the first column, as :func:`write_manifest`
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

    Rows of an earlier run found in the manifest file (or in ``other_sources``, e.g. the
    manifests of the same folder run with other shards) are reused for jobs whose seed matches
    and whose files all exist (:meth:`done`); :meth:`add` records a new row.  :meth:`flush`
    rewrites the file atomically with the rows confirmed so far plus the earlier run's rows of
    ``pending`` jobs not reached yet (so an interruption loses nothing); ``final=True`` writes
    the confirmed rows only.
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
        self._previous: dict[str, dict[str, str]] = {}
        for source in [*other_sources, self.path]:  # this manifest's own rows win
            if Path(source).is_file():
                try:
                    cols, rows = read_manifest(source)
                except InputError:
                    continue
                if cols == self.columns:
                    self._previous.update((r[self.columns[0]], r) for r in rows)
        self._pending = [k for k in pending if k in self._previous]

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
        """Record the row of a newly computed sample."""
        self.rows[str(row[self.columns[0]])] = dict(row)

    def flush(self, final: bool = False) -> None:
        """Rewrite the manifest file atomically (see the class docstring)."""
        rows = dict(self.rows)
        if not final:
            for key in self._pending:
                rows.setdefault(key, self._previous[key])
        write_manifest(self.path, self.columns, rows.values())


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
    """Write ``out/run.json`` (atomically) unless it exists; see :func:`check_run_settings`."""
    path = Path(out) / RUN_SETTINGS_NAME
    if path.exists():
        return
    record = _run_record(command, settings)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
