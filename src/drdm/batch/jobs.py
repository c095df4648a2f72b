"""Batch jobs of ``drdm augment`` and ``drdm synth``: the job list, seeds, shards and the loop
that runs them.

A job is one output sample: an input (:class:`~drdm.batch.inputs.InputItem`: an image and
optional label maps), a level (or a level pair) and a sample number.  The pieces here are
independent of what a job computes:

* **Seeds** (:func:`drdm.seeding.sample_seed`): every sample has its own 63-bit
  seed, the first 8 bytes of ``sha256("drdm/<command>/<seed>/<name>/<level>/<sample>")``.  A
  sample's output therefore depends only on the run's ``seed`` (any integer), the input's
  name, the level and the sample number: not on the shard that computes it, the other inputs
  or levels, or the samples already done.  ``generate``, ``diffuse`` and ``demo`` use the same
  scheme.
* **Shards** (:func:`resolve_shards`, :func:`shard_bounds`): the job list (inputs x levels x
  samples, in that order) is cut into ``K`` contiguous blocks whose sizes differ by at most one;
  block ``i`` is shard ``i``.  The blocks cover the list with no overlap and no gaps.
* **Running** (:func:`run_batch`): jobs grouped by input, the ones complete from an earlier run
  skipped (:class:`~drdm.batch.manifest.ManifestBook`).

Inputs: :mod:`drdm.batch.inputs`; manifests and resume: :mod:`drdm.batch.manifest`; one run
per folder: :mod:`drdm.batch.run_folder`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .inputs import InputItem
from .manifest import ManifestBook

__all__ = [
    "MAX_JOBS",
    "BatchReport",
    "Job",
    "check_job_count",
    "parse_int_list",
    "resolve_shards",
    "run_batch",
    "shard_bounds",
    "shard_jobs",
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


#: the most samples one run (all shards together) may list; a larger count is refused before
#: anything is read or written (the job list is built in memory: about 70 bytes per sample)
MAX_JOBS = 1_000_000


def check_job_count(count: int, option: str, value: int) -> None:
    """Refuse a run of more than :data:`MAX_JOBS` samples (one line naming ``option``)."""
    if count > MAX_JOBS:
        raise InputError(
            f"{option} {value}: {count:,} samples in all exceed the limit of {MAX_JOBS:,} per "
            "run; split the work into several runs (other levels or inputs)"
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
    """``(K, i)`` from ``shards`` and ``index``, defaulting to torchrun's ``WORLD_SIZE``
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
            raise InputError("shard_index needs shards")
        shards = 1 if shards is None else shards
        index = 0 if index is None else index
        source = "shards/shard_index"
    if shards < 1:
        raise InputError(f"{source}: the number of shards must be >= 1, got {shards}")
    if not 0 <= index < shards:
        raise InputError(f"{source}: shard index {index} must lie in 0..{shards - 1}")
    return shards, index


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
