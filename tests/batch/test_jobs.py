"""Tests of drdm.batch.jobs and drdm.batch.manifest: seeds, shards, manifests, run_batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from drdm.batch.inputs import InputItem
from drdm.batch.jobs import (
    Job,
    parse_int_list,
    resolve_shards,
    run_batch,
    shard_bounds,
    shard_jobs,
)
from drdm.batch.manifest import (
    AUGMENT_COLUMNS,
    ManifestBook,
    manifest_name,
    merge_manifests,
    write_manifest,
)
from drdm.errors import InputError
from drdm.io.manifest import read_manifest
from drdm.seeding import sample_seed


@pytest.mark.parametrize("count", [0, 1, 5, 7, 24, 100])
@pytest.mark.parametrize("shards", [1, 2, 3, 8, 13])
def test_shards_cover_jobs_without_overlap_or_gaps(count, shards):
    covered = []
    sizes = []
    for i in range(shards):
        start, stop = shard_bounds(count, shards, i)
        covered += range(start, stop)
        sizes.append(stop - start)
    assert covered == list(range(count))  # in order: no overlap, no gap
    assert max(sizes) - min(sizes) <= 1


def test_shard_jobs_union_is_the_job_list():
    item = InputItem(0, "a", None)  # type: ignore[arg-type]
    jobs = [Job(item, level, s, sample_seed("augment", 0, "a", level, s), "") for level in (1, 2)
            for s in range(5)]  # fmt: skip
    parts = [shard_jobs(jobs, 4, i) for i in range(4)]
    assert [j for part in parts for j in part] == jobs
    with pytest.raises(ValueError):
        shard_bounds(3, 2, 2)


def test_resolve_shards_options_and_torchrun_env():
    assert resolve_shards(None, None, env={}) == (1, 0)
    assert resolve_shards(4, 2, env={}) == (4, 2)
    assert resolve_shards(None, None, env={"WORLD_SIZE": "3", "RANK": "1"}) == (3, 1)
    # explicit options win over the environment
    assert resolve_shards(2, 0, env={"WORLD_SIZE": "3", "RANK": "1"}) == (2, 0)
    for shards, index, message in [
        (2, 2, "0..1"),
        (0, 0, ">= 1"),
        (None, 1, "shard_index needs shards"),
    ]:
        with pytest.raises(InputError, match=message):
            resolve_shards(shards, index, env={})
    with pytest.raises(InputError, match="WORLD_SIZE"):
        resolve_shards(None, None, env={"WORLD_SIZE": "x", "RANK": "0"})
    assert manifest_name(1, 0) == "manifest.csv"
    assert manifest_name(4, 3) == "manifest-shard3of4.csv"


def test_seeds_are_stable_and_distinct():
    a = sample_seed("augment", 0, "img", 55, 3)
    assert a == sample_seed("augment", 0, "img", 55, 3)
    assert 0 <= a < 2**63
    others = {
        sample_seed("augment", 1, "img", 55, 3),
        sample_seed("augment", 0, "img2", 55, 3),
        sample_seed("augment", 0, "img", 45, 3),
        sample_seed("augment", 0, "img", 55, 4),
        sample_seed("synth", 0, "img", 55, 3),
    }
    assert a not in others and len(others) == 5


def test_seed_formula_is_sha256():
    import hashlib

    digest = hashlib.sha256(b"drdm/augment/7/heart/30/2").digest()
    assert sample_seed("augment", 7, "heart", 30, 2) == int.from_bytes(digest[:8], "big") & (
        2**63 - 1
    )


def test_parse_int_list():
    assert parse_int_list("30,45, 55", "--levels") == [30, 45, 55]


@pytest.mark.parametrize("text", ["30,x", "", "3,3", "4,,5", ",4", "4,"])
def test_parse_int_list_refuses(text):
    with pytest.raises(InputError, match="--levels"):
        parse_int_list(text, "--levels")


COLUMNS = list(AUGMENT_COLUMNS)


def _row(name, level, sample, seed=1):
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        image=f"{name}/L{level:03d}_s{sample:03d}_image.nii.gz",
        ddf=f"{name}/L{level:03d}_s{sample:03d}_ddf.nii.gz",
        level=level,
        sample=sample,
        seed=seed,
    )
    return row


def test_manifest_write_sorted_and_merge(tmp_path):
    rows = [_row("b", 5, 0), _row("a", 30, 1), _row("a", 5, 1), _row("a", 5, 0)]
    write_manifest(tmp_path / "all.csv", COLUMNS, rows)
    columns, back = read_manifest(tmp_path / "all.csv")
    assert columns == COLUMNS
    assert [r["image"][:8] for r in back] == ["a/L005_s", "a/L005_s", "a/L030_s", "b/L005_s"]
    write_manifest(tmp_path / "s0.csv", COLUMNS, rows[:2])
    write_manifest(tmp_path / "s1.csv", COLUMNS, rows[1:])  # row 1 in both: identical, kept once
    merged = merge_manifests([tmp_path / "s1.csv", tmp_path / "s0.csv"])
    assert merged == (columns, back)
    assert not list(tmp_path.glob("*.part"))


def test_merge_conflicts_and_column_mismatch(tmp_path):
    write_manifest(tmp_path / "s0.csv", COLUMNS, [_row("a", 5, 0, seed=1)])
    write_manifest(tmp_path / "s1.csv", COLUMNS, [_row("a", 5, 0, seed=2)])
    with pytest.raises(InputError, match="conflicting rows"):
        merge_manifests([tmp_path / "s0.csv", tmp_path / "s1.csv"])
    write_manifest(tmp_path / "other.csv", COLUMNS[:-1], [_row("a", 5, 1)])
    with pytest.raises(InputError, match="columns"):
        merge_manifests([tmp_path / "s0.csv", tmp_path / "other.csv"])
    (tmp_path / "bad.csv").write_text(",".join(COLUMNS) + "\na,b,c\n")
    with pytest.raises(InputError, match="malformed"):
        merge_manifests([tmp_path / "bad.csv"])
    with pytest.raises(InputError, match="no manifest"):
        merge_manifests([])


def test_manifest_book_reuses_complete_rows(tmp_path):
    old = [_row("a", 5, 0, seed=11), _row("a", 5, 1, seed=12), _row("a", 5, 2, seed=13)]
    for r in old[:2]:
        for column in ("image", "ddf"):
            (tmp_path / r[column]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / r[column]).write_bytes(b"x")
    write_manifest(tmp_path / "manifest.csv", COLUMNS, old)
    keys = [r["image"] for r in old]
    book = ManifestBook(tmp_path / "manifest.csv", COLUMNS, tmp_path, ["image", "ddf"], keys)
    assert book.done(old[0]["image"], 11)
    assert not book.done(old[1]["image"], 99)  # another seed: recompute
    assert not book.done(old[2]["image"], 13)  # files missing: recompute
    book.flush()  # intermediate: the old rows of jobs not reached yet are kept
    _, rows = read_manifest(tmp_path / "manifest.csv")
    assert [r["seed"] for r in rows] == ["11", "12", "13"]
    book.add(_row("a", 5, 2, seed=13))
    book.flush(final=True)
    _, rows = read_manifest(tmp_path / "manifest.csv")
    assert [r["seed"] for r in rows] == ["11", "13"]


def _jobs(names, levels=(5,), samples=2):
    jobs = []
    for k, name in enumerate(names):
        item = InputItem(k, name, Path(f"{name}.nii.gz"))
        for level in levels:
            for s in range(samples):
                prefix = f"{name}/L{level:03d}_s{s:03d}"
                seed = sample_seed("augment", 0, name, level, s)
                jobs.append(Job(item, level, s, seed, prefix, f"{prefix}_image.nii.gz"))
    return jobs


def _compute(root):
    def compute(job, loaded):
        for column in ("image", "ddf"):
            path = root / f"{job.prefix}_{column}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{loaded}:{job.seed}")
        row = _row(job.item.name, job.level, job.sample, job.seed)
        return row

    return compute


def test_run_batch_resume_and_keep_going(tmp_path):
    jobs = _jobs(["a", "bad", "c"])
    loads = []

    def load(item):
        loads.append(item.name)
        if item.name == "bad":
            raise InputError(f"{item.image}: broken")
        return item.name

    started = []
    book = ManifestBook(
        tmp_path / "m.csv", COLUMNS, tmp_path, ["image", "ddf"], [j.key for j in jobs]
    )
    with pytest.raises(InputError, match="broken"):  # without keep_going: nothing written
        run_batch(jobs, book, load, _compute(tmp_path), progress=False,
                  before_first_write=lambda: started.append(1))  # fmt: skip
    assert not started and list(tmp_path.iterdir()) == []

    report = run_batch(jobs, book, load, _compute(tmp_path), keep_going=True, progress=False)
    assert (report.computed, report.skipped) == (4, 0)
    assert report.failures == ["bad.nii.gz: broken"]
    _, rows = read_manifest(tmp_path / "m.csv")
    assert [r["image"] for r in rows] == [j.key for j in jobs if j.item.name != "bad"]

    # resume: complete samples are skipped; a deleted file is recomputed
    (tmp_path / "c/L005_s001_ddf.nii.gz").unlink()
    book = ManifestBook(
        tmp_path / "m.csv", COLUMNS, tmp_path, ["image", "ddf"], [j.key for j in jobs]
    )
    loads.clear()
    report = run_batch(jobs, book, load, _compute(tmp_path), keep_going=True, progress=False)
    assert (report.computed, report.skipped, len(report.failures)) == (1, 3, 1)
    assert loads == ["a", "bad", "c", "c"]  # checked up front, then read again for its work
    assert (tmp_path / "c/L005_s001_ddf.nii.gz").is_file()


def test_run_batch_interruption_keeps_rows(tmp_path):
    jobs = _jobs(["a", "b"])
    keys = [j.key for j in jobs]
    book = ManifestBook(tmp_path / "m.csv", COLUMNS, tmp_path, ["image", "ddf"], keys)
    run_batch(jobs, book, lambda item: 0, _compute(tmp_path), progress=False)
    calls = []

    def interrupted(job, loaded):
        calls.append(job.key)
        raise KeyboardInterrupt

    (tmp_path / "a/L005_s000_image.nii.gz").unlink()
    book = ManifestBook(tmp_path / "m.csv", COLUMNS, tmp_path, ["image", "ddf"], keys)
    with pytest.raises(KeyboardInterrupt):
        run_batch(jobs, book, lambda item: 0, interrupted, progress=False)
    assert calls == [keys[0]]
    _, rows = read_manifest(tmp_path / "m.csv")
    assert [r["image"] for r in rows] == keys  # rows of jobs not reached are kept
