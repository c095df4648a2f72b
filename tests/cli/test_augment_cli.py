"""Tests of ``drdm augment``, ``drdm synth`` and ``drdm merge-manifests`` (through main)."""

from __future__ import annotations

import csv
import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from drdm.cli.main import main
from drdm.data.phantoms import cardiac_phantom_2d
from drdm.io.image import read_displacement, read_image
from drdm.spatial import fold_ratio, magnitude_stats, warp, warp_labels

AFFINE = np.array(
    [[0.0, -1.5, 0.0, 20.0], [1.5, 0.0, 0.0, -10.0], [0.0, 0.0, 8.0, 5.0], [0, 0, 0, 1.0]]
)
AUGMENT_COLUMNS = (
    "image,label,ddf,source_image,source_label,level,sample,seed,max_disp_pct,mean_disp_pct,"
    "fold_pct,slice_axis"
).split(",")
SYNTH_COLUMNS = (
    "moving,fixed,ddf,moving_label,fixed_label,source_image,source_label,level_aug,level_syn,"
    "sample,seed,max_disp_pct,mean_disp_pct,fold_pct,slice_axis"
).split(",")


def save(path, array, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 32 x 32 phantom with labels, a 32 x 32 x 3 stack, and a second 2D phantom."""
    root = tmp_path_factory.mktemp("data")
    a = cardiac_phantom_2d(32, generator=1)
    save(root / "heart.nii.gz", a.image.numpy())
    save(root / "heart_seg.nii.gz", a.label.numpy().astype(np.uint8))
    b = cardiac_phantom_2d(32, generator=2)
    save(root / "other.nii.gz", b.image.numpy())
    save(root / "other_seg.nii.gz", b.label.numpy().astype(np.uint8))
    stack = [cardiac_phantom_2d(32, generator=k) for k in range(3)]
    save(root / "stack.nii", np.stack([p.image.numpy() for p in stack], -1))
    save(root / "stack_seg.nii", np.stack([p.label.numpy() for p in stack], -1).astype(np.int16))
    return root


def augment(model_dir, out, *extra, levels="3,7", per_level="2", figure=False):
    argv = ["augment", "--per-level", per_level, "--model", str(model_dir)]
    argv += [] if levels is None else ["--levels", levels]  # None: the default levels
    argv += [] if figure else ["--no-figure"]
    return main([*argv, "--out", str(out), "--quiet", *map(str, extra)])


def manifest(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def tree(root):
    """Relative path -> bytes of every file under root."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------------------------------ augment


def test_augment_writes_images_labels_fields_and_manifest(tmp_path, model_dir, data):
    out = tmp_path / "out"
    image, label = data / "heart.nii.gz", data / "heart_seg.nii.gz"
    # --stack affine: BigAug's rotation and scaling composed into the same field (the image
    # is still ONE warp of the original by the written field; no intensity change)
    args = ["--image", image, "--label", label, "--stack", "affine"]
    assert augment(model_dir, out, *args, figure=True) == 0
    columns, rows = manifest(out / "manifest.csv")
    assert columns == AUGMENT_COLUMNS
    assert [(r["image"], r["level"], r["sample"]) for r in rows] == [
        ("heart/L003_s000_image.nii.gz", "3", "0"),
        ("heart/L003_s001_image.nii.gz", "3", "1"),
        ("heart/L007_s000_image.nii.gz", "7", "0"),
        ("heart/L007_s001_image.nii.gz", "7", "1"),
    ]
    assert len({r["seed"] for r in rows}) == 4
    source = read_image(image)
    source_label = read_image(label, kind="label")
    for row in rows:
        assert row["label"] == row["image"].replace("_image", "_label")
        assert row["ddf"] == row["image"].replace("_image", "_ddf")
        assert (row["source_image"], row["source_label"]) == (str(image), str(label))
        deformed = nib.load(out / row["image"])
        np.testing.assert_allclose(deformed.affine, AFFINE, atol=1e-6)
        assert deformed.get_data_dtype() == np.float32
        lab = nib.load(out / row["label"])
        assert lab.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2, 3}
        # the DDF (mm on disk) read back in voxels: the image is ONE warp of the original by it
        ddf = torch.as_tensor(read_displacement(out / row["ddf"], like=source))[None]
        expected = warp(torch.as_tensor(source.array)[None, None], ddf)[0, 0].numpy()
        np.testing.assert_allclose(np.asarray(deformed.dataobj), expected, atol=2e-4)
        expected_label = warp_labels(torch.as_tensor(source_label.array)[None, None], ddf)
        agree = np.mean(np.asarray(lab.dataobj) == expected_label[0, 0].numpy())
        assert agree > 0.995
        stats = magnitude_stats(ddf)
        assert float(row["max_disp_pct"]) == pytest.approx(float(stats.max_percent[0]), abs=1e-3)
        assert float(row["mean_disp_pct"]) == pytest.approx(float(stats.mean_percent[0]), abs=1e-3)
        assert float(row["fold_pct"]) == pytest.approx(float(fold_ratio(ddf)[0]) * 100, abs=1e-3)
        assert float(row["mean_disp_pct"]) > 0
    assert not list(out.rglob("*.part"))
    assert sorted(p.name for p in out.iterdir()) == [
        "heart",
        "manifest.csv",
        "overview.png",
        "run.json",
    ]


def test_augment_default_recipe_stacks_bigaug(tmp_path, model_dir, data):
    """The default recipe: DRDM, then BigAug (spatial part in the written field, intensity
    part on the image only); --stack none is the plain DRDM deformation."""
    import json

    image, label = data / "heart.nii.gz", data / "heart_seg.nii.gz"
    source = read_image(image)
    source_label = read_image(label, kind="label")
    runs = {}
    for stack in ("auto", "none"):
        out = tmp_path / stack
        args = ["--image", image, "--label", label, "--stack", stack]
        assert augment(model_dir, out, *args, levels="5", per_level="6") == 0
        run = json.loads((out / "run.json").read_text())
        assert run["settings"]["stack"] == {"auto": "bigaug", "none": "none"}[stack]
        runs[stack] = manifest(out / "manifest.csv")[1]
    intensity_changed = moved_more = 0
    for stacked, plain in zip(runs["auto"], runs["none"], strict=True):
        ddf = torch.as_tensor(read_displacement(tmp_path / "auto" / stacked["ddf"], like=source))
        plain_ddf = read_displacement(tmp_path / "none" / plain["ddf"], like=source)
        moved_more += float((ddf - torch.as_tensor(plain_ddf)).abs().max()) > 1.0
        lab = np.asarray(nib.load(tmp_path / "auto" / stacked["label"]).dataobj)
        warped_label = warp_labels(torch.as_tensor(source_label.array)[None, None], ddf[None])
        assert np.mean(lab == warped_label[0, 0].numpy()) > 0.995  # labels follow the field
        img = np.asarray(nib.load(tmp_path / "auto" / stacked["image"]).dataobj)
        warped = warp(torch.as_tensor(source.array)[None, None], ddf[None])[0, 0].numpy()
        intensity_changed += np.abs(img - warped).max() > 1e-3
    assert moved_more >= 2 and intensity_changed >= 2  # each BigAug part has p = 1/2
    with pytest.raises(SystemExit):
        augment(model_dir, tmp_path / "bad", "--image", image, "--stack", "mirror")


def test_augment_npy_fields_and_stack_slice_by_slice(tmp_path, model_dir, data):
    out = tmp_path / "out"
    args = ["--image", data / "stack.nii", "--label", data / "stack_seg.nii"]
    assert augment(model_dir, out, *args, "--ddf-format", "npy", levels="5", per_level="1") == 0
    _, rows = manifest(out / "manifest.csv")
    (row,) = rows
    assert row["image"] == "stack/L005_s000_image.nii" and row["ddf"].endswith("_ddf.npy")
    ddf = np.load(out / row["ddf"])
    assert ddf.shape == (3, 32, 32, 3) and ddf.dtype == np.float32
    assert not ddf[2].any()  # 2D model on a stack: slice by slice, no through-plane motion
    assert ddf[:2].any(axis=(1, 2, 3)).all()
    assert not np.allclose(ddf[..., 0], ddf[..., 1])  # every slice its own deformation
    assert nib.load(out / row["label"]).get_data_dtype() == np.int16
    assert row["slice_axis"] == "2"  # recorded, so a bank of these fields need not guess it


def test_field_bank_takes_the_slice_axis_the_manifest_records(tmp_path, model_dir, data):
    """``FieldBank.from_manifest`` keeps the axis of a 2D model's fields of a stack from the
    manifest's ``slice_axis`` column; 2D images leave the column empty."""
    from drdm.pipelines import FieldBank

    out = tmp_path / "out"
    args = ["--input", data, "--stack", "none", "--ddf-format", "npy"]
    assert augment(model_dir, out, *args, levels="5", per_level="1") == 0
    _, rows = manifest(out / "manifest.csv")
    axes = {row["image"].split("/")[0]: row["slice_axis"] for row in rows}
    assert axes["stack"] == "2" and axes["heart"] == ""
    bank = FieldBank.from_manifest(out)
    stack_key = next(k for k in bank.keys() if "stack" in str(k))
    assert bank.slice_axis(stack_key) == 2


def test_default_levels_are_fractions_of_the_models_t(tmp_path, model_dir, data):
    from drdm import DRDM
    from drdm.pipelines.registry import default_levels

    out = tmp_path / "out"
    assert augment(model_dir, out, "--image", data / "heart.nii.gz", levels=None) == 0
    _, rows = manifest(out / "manifest.csv")
    expected = default_levels(DRDM.from_pretrained(model_dir).num_steps)
    assert len(expected) == 2 and [int(r["level"]) for r in rows[::2]] == list(expected)
    assert len(rows) == 2 * len(expected)


@pytest.mark.slow  # four augment runs (about 7 s)
def test_same_seed_same_bytes_and_shards_equal_the_whole(tmp_path, model_dir, data):
    whole = tmp_path / "whole"
    assert augment(model_dir, whole, "--input", data, "--seed", "5") == 0
    _, rows = manifest(whole / "manifest.csv")
    assert len(rows) == 3 * 2 * 2  # heart, other, stack (with labels) x 2 levels x 2 samples
    sharded = tmp_path / "sharded"
    for i in range(3):
        args = ["--input", data, "--seed", "5", "--shards", "3", "--shard-index", str(i)]
        assert augment(model_dir, sharded, *args) == 0
    shard_rows = [manifest(sharded / f"manifest-shard{i}of3.csv")[1] for i in range(3)]
    assert [len(r) for r in shard_rows] == [4, 4, 4]
    assert main(["merge-manifests", str(sharded)]) == 0
    a, b = tree(whole), tree(sharded)
    for name in [n for n in b if n.startswith("manifest-shard")]:
        del b[name]
    assert a == b  # every file bit for bit, and the merged manifest is the unsharded one
    # torchrun's variables pick the shard when no option is given
    env = tmp_path / "env"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORLD_SIZE", "3")
        mp.setenv("RANK", "1")
        assert augment(model_dir, env, "--input", data, "--seed", "5") == 0
    assert manifest(env / "manifest-shard1of3.csv")[1] == shard_rows[1]


def test_resume_skips_complete_samples(tmp_path, model_dir, data, capsys):
    out = tmp_path / "out"
    args = ["--image", data / "heart.nii.gz", "--label", data / "heart_seg.nii.gz"]
    assert augment(model_dir, out, *args) == 0
    before = tree(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*_image.nii.gz")}
    capsys.readouterr()
    assert augment(model_dir, out, *args) == 0
    assert "0 sample(s) written, 4 already complete" in capsys.readouterr().out
    (out / "heart/L007_s001_label.nii.gz").unlink()  # as if interrupted before this file
    assert augment(model_dir, out, *args) == 0
    assert "1 sample(s) written, 3 already complete" in capsys.readouterr().out
    assert tree(out) == before  # recomputed bit for bit
    changed = [p for p, t in mtimes.items() if p.stat().st_mtime_ns != t]
    assert [p.name for p in changed] == ["L007_s001_image.nii.gz"]
    # more samples per level: only the new ones are computed
    assert augment(model_dir, out, *args, per_level="3") == 0
    assert "2 sample(s) written, 4 already complete" in capsys.readouterr().out
    # the same folder run in shards reuses the samples of the unsharded run
    assert augment(model_dir, out, *args, "--shards", "2", "--shard-index", "1") == 0
    assert "0 sample(s) written, 2 already complete" in capsys.readouterr().out
    # other settings into the same folder: refused, nothing changes
    assert augment(model_dir, out, *args, "--seed", "1") == 2
    err = capsys.readouterr().err
    assert "seed: 0 there, 1 now" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ synth


def test_synth_triples(tmp_path, model_dir, data):
    out = tmp_path / "out"
    argv = [
        "synth",
        "--image",
        str(data / "heart.nii.gz"),
        "--label",
        str(data / "heart_seg.nii.gz"),
    ]
    argv += ["--level-pairs", "0:4,6:4", "--per-pair", "1", "--model", str(model_dir)]
    assert main([*argv, "--out", str(out), "--quiet", "--no-figure"]) == 0
    columns, rows = manifest(out / "manifest.csv")
    assert columns == SYNTH_COLUMNS
    assert [(r["moving"], r["level_aug"], r["level_syn"]) for r in rows] == [
        ("heart/A000_S004_s000_moving.nii.gz", "0", "4"),
        ("heart/A006_S004_s000_moving.nii.gz", "6", "4"),
    ]
    source = read_image(data / "heart.nii.gz")
    for row in rows:
        moving = read_image(out / row["moving"]).array
        fixed = read_image(out / row["fixed"]).array
        ddf = read_displacement(out / row["ddf"], like=source)
        assert read_image(out / row["moving_label"], kind="label").array.dtype == np.uint8
        assert read_image(out / row["fixed_label"], kind="label").array.shape == (32, 32)
        if row["level_aug"] == "0":
            np.testing.assert_array_equal(moving, source.array)
        # the convention: fixed(x) ~ moving(x + phi_syn(x)) (exact away from the border)
        resampled = warp(torch.as_tensor(moving)[None, None], torch.as_tensor(ddf)[None])[0, 0]
        inner = (slice(6, -6), slice(6, -6))
        error = np.abs(resampled.numpy() - fixed)[inner]
        assert np.median(error) < 0.02 * np.ptp(source.array)
        assert not np.allclose(moving, fixed)


# ------------------------------------------------------------------------------ bad input


def _bad_cases(tmp, data):
    heart, seg = data / "heart.nii.gz", data / "heart_seg.nii.gz"
    shifted = AFFINE.copy()
    shifted[:3, 3] += 3.0
    labels = nib.load(seg).get_fdata()
    fractional = labels.copy()
    fractional[3, 3] = 0.5
    negative = labels.copy()
    negative[3, 3] = -1
    nan = nib.load(heart).get_fdata()
    nan[4, 4] = np.nan
    corrupt = tmp / "corrupt.nii.gz"
    corrupt.write_bytes(gzip.compress(b"not an image" * 40))
    truncated = tmp / "truncated.nii.gz"
    truncated.write_bytes(heart.read_bytes()[:300])
    (tmp / "empty").mkdir()
    four_d = save(tmp / "cine.nii.gz", np.random.default_rng(0).random((32, 32, 2, 4)))
    return [
        # (argv, text in the message, the file the message names)
        (["--image", heart, "--label", save(tmp / "moved.nii.gz", labels, shifted)], "grid", None),
        (["--image", heart, "--label", save(tmp / "half.nii.gz", fractional)], "non-integer", None),
        (["--image", heart, "--label", save(tmp / "neg.nii.gz", negative)], "negative", None),
        (["--input", tmp / "empty"], "no images found", tmp / "empty"),
        (["--image", corrupt], "cannot read", corrupt),
        (["--image", truncated], "cannot read", truncated),
        (["--image", save(tmp / "nan.nii.gz", nan)], "NaN", tmp / "nan.nii.gz"),
        (["--image", four_d], "with frame (0..3)", four_d),
        (["--image", four_d, "--frame", "4"], "out of range", four_d),
        (["--image", save(tmp / "small.nii.gz", np.ones((6, 40)))], "too small", None),
        (["--image", heart, "--levels", "3,11"], "must lie in 1..10", "levels 11"),
        (["--image", heart, "--levels", "0"], ">= 1", "levels 0"),
        (["--image", heart, "--method", "warpy"], "unknown method", "method warpy"),
        (["--image", heart, "--per-level", "0"], "must be >= 1", "per_level 0"),
        (["--image", heart, "--slice-axis", "3"], "auto, 0, 1 or 2", "slice_axis 3"),
        (["--image", heart, "--shards", "2", "--shard-index", "2"], "0..1", None),
    ]


BAD_CASES = ["other-grid", "fractional", "negative", "empty-folder", "corrupt", "truncated", "nan",
             "4d", "frame-range", "small", "level-high", "level-0", "method", "per-level",
             "slice-axis", "shard"]  # fmt: skip


@pytest.fixture(scope="module")
def bad_cases(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("bad")
    return tmp, dict(zip(BAD_CASES, _bad_cases(tmp, data), strict=True))


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_one_line_error_exit_2_nothing_written(
    tmp_path, model_dir, bad_cases, capsys, case
):
    argv, message, named = bad_cases[1][case]
    out = tmp_path / "out"
    base = ["augment", "--levels", "3", "--model", str(model_dir), "--out", str(out)]
    if "--levels" in argv:
        base = base[:1] + base[3:]
    status = main([*base, "--quiet", *map(str, argv)])
    err = capsys.readouterr().err
    assert status == 2, (argv, err)
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, (message, err)
    named = named if named is not None else argv[-1]
    assert str(named) in err, (named, err)
    assert not out.exists(), argv


def test_resample_label_and_frame(tmp_path, model_dir, data, bad_cases):
    # the grid mismatch is an error only without --resample-label
    out = tmp_path / "resampled"
    tmp = bad_cases[0]
    argv = ["--image", data / "heart.nii.gz", "--label", tmp / "moved.nii.gz"]
    assert augment(model_dir, out, *argv, "--resample-label", levels="3", per_level="1") == 0
    label = read_image(out / "heart/L003_s000_label.nii.gz", kind="label")
    np.testing.assert_allclose(label.affine, AFFINE)
    # a frame of a 4D series
    argv = ["--image", tmp / "cine.nii.gz", "--frame", "2"]
    assert augment(model_dir, tmp_path / "frame", *argv, levels="3", per_level="1") == 0
    assert read_image(tmp_path / "frame/cine/L003_s000_image.nii.gz").shape == (32, 32, 2)


def test_keep_going_processes_the_others(tmp_path, model_dir, data, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("heart.nii.gz", "heart_seg.nii.gz"):
        (folder / name).write_bytes((data / name).read_bytes())
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b broken")
    save(folder / "tiny.nii.gz", np.ones((4, 40)))
    out = tmp_path / "out"
    assert augment(model_dir, out, "--input", folder) == 2  # stops before writing anything
    assert not out.exists()
    capsys.readouterr()
    assert augment(model_dir, out, "--input", folder, "--keep-going") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "drdm augment: 2 input(s) failed:"
    assert str(folder / "broken.nii.gz") in err[1] and str(folder / "tiny.nii.gz") in err[2]
    _, rows = manifest(out / "manifest.csv")
    assert {r["source_image"] for r in rows} == {str(folder / "heart.nii.gz")}
    assert len(rows) == 4


# ------------------------------------------------------------------------------ merge


def test_merge_manifests_checks(tmp_path, model_dir, data, capsys):
    out = tmp_path / "out"
    for i in (0, 2):
        args = ["--input", data, "--shards", "3", "--shard-index", str(i)]
        assert augment(model_dir, out, *args, levels="3", per_level="1") == 0
    capsys.readouterr()
    assert main(["merge-manifests", str(out)]) == 2
    assert "shard(s) 1 of 3 have no manifest" in capsys.readouterr().err
    files = [str(out / f"manifest-shard{i}of3.csv") for i in (0, 2)]
    assert main(["merge-manifests", *files, "--out", str(tmp_path / "m.csv")]) == 0
    assert len(manifest(tmp_path / "m.csv")[1]) == 2
    # the same sample with another seed in two files: a conflict
    text = (out / "manifest-shard0of3.csv").read_text().splitlines()
    fields = text[1].split(",")
    fields[7] = "123"
    (tmp_path / "c.csv").write_text("\n".join([text[0], ",".join(fields)]) + "\n")
    assert main(["merge-manifests", files[0], str(tmp_path / "c.csv"), "--out", "x.csv"]) == 2
    assert "conflicting rows" in capsys.readouterr().err


# ------------------------------------------------------------------------------ methods, formats


def test_baseline_methods(tmp_path, data, capsys):
    image = data / "stack.nii"
    for method in ("elastic", "mrbs", "bigaug"):
        out = tmp_path / method
        argv = ["augment", "--image", str(image), "--method", method, "--per-level", "1"]
        assert (
            main([*argv, "--out", str(out), "--quiet", "--no-figure", "--ddf-format", "npy"]) == 0
        )
        (row,) = manifest(out / "manifest.csv")[1]
        assert row["image"] == "stack/L000_s000_image.nii"  # no levels: named level 0
        ddf = np.load(out / row["ddf"])
        assert not ddf[2].any() and ddf[:2].any()  # --ndim 2 (default): slice by slice
    out = tmp_path / "elastic3d"
    volume = save(tmp_path / "vol.nii.gz", np.random.default_rng(0).random((12, 10, 9)))
    argv = ["augment", "--image", str(volume), "--method", "elastic", "--ndim", "3"]
    argv += ["--method-option", "sigma=0.2", "--ddf-format", "npy", "--out", str(out)]
    assert main([*argv, "--quiet", "--no-figure"]) == 0
    assert np.load(out / "vol/L000_s000_ddf.npy")[2].any()
    capsys.readouterr()
    for option, message in [("sigma=-1", "method elastic: sigma"), ("foo=1", "unknown option")]:
        argv = [
            "augment",
            "--image",
            str(image),
            "--method",
            "elastic",
            "--out",
            str(tmp_path / "x"),
        ]
        assert main([*argv, "--method-option", option]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_metaimage_input_keeps_format_and_geometry(tmp_path, model_dir, data):
    from drdm.io.image import write_image

    source = read_image(data / "stack.nii")
    label = read_image(data / "stack_seg.nii", kind="label")
    write_image(tmp_path / "vol.mha", source.array, source)
    write_image(tmp_path / "vol_seg.mha", label.array, label, kind="label")
    out = tmp_path / "out"
    argv = ["--image", tmp_path / "vol.mha", "--label", tmp_path / "vol_seg.mha"]
    assert augment(model_dir, out, *argv, levels="4", per_level="1") == 0
    deformed = read_image(out / "vol/L004_s000_image.mha")
    np.testing.assert_allclose(deformed.affine, source.affine, atol=1e-6)
    assert read_image(out / "vol/L004_s000_label.mha", kind="label").array.dtype == np.int16


def test_ddf_file_works_in_simpleitk(tmp_path, model_dir, data):
    """The NIfTI DDF of a slice-wise stack (anisotropic, rotated affine) resamples the original
    label in SimpleITK to the label drdm wrote (nearest neighbour both)."""
    sitk = pytest.importorskip("SimpleITK")
    from drdm.metrics import dice

    out = tmp_path / "out"
    argv = ["--image", data / "stack.nii", "--label", data / "stack_seg.nii"]
    argv += ["--label-interp", "nearest"]
    assert augment(model_dir, out, *argv, levels="9", per_level="1") == 0
    label = sitk.ReadImage(str(data / "stack_seg.nii"))
    field = sitk.ReadImage(str(out / "stack/L009_s000_ddf.nii.gz"))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    theirs = sitk.GetArrayFromImage(
        sitk.Resample(label, label, transform, sitk.sitkNearestNeighbor, 0)
    ).T
    ours = read_image(out / "stack/L009_s000_label.nii", kind="label").array
    assert not np.array_equal(ours, read_image(data / "stack_seg.nii", kind="label").array)
    scores = dice(theirs, ours, labels=[1, 2, 3])
    assert min(scores.values()) >= 0.99, scores


def test_synth_shards_equal_the_whole(tmp_path, model_dir, data):
    def synth(out, *extra):
        argv = [
            "synth",
            "--input",
            str(data),
            "--level-pairs",
            "3:2,0:5",
            "--model",
            str(model_dir),
        ]
        return main([*argv, "--out", str(out), "--quiet", "--no-figure", *extra])

    assert synth(tmp_path / "whole") == 0
    for i in range(2):
        assert synth(tmp_path / "sharded", "--shards", "2", "--shard-index", str(i)) == 0
    merged = tmp_path / "merged.csv"
    assert main(["merge-manifests", str(tmp_path / "sharded"), "--out", str(merged)]) == 0
    assert merged.read_bytes() == (tmp_path / "whole" / "manifest.csv").read_bytes()
    whole, sharded = tree(tmp_path / "whole"), tree(tmp_path / "sharded")
    assert {k: v for k, v in sharded.items() if not k.startswith("manifest")} == {
        k: v for k, v in whole.items() if k != "manifest.csv"
    }
    _, rows = manifest(tmp_path / "whole" / "manifest.csv")
    stack = [r for r in rows if r["moving"].startswith("stack/")]
    assert len(rows) == 6 and len(stack) == 2
    assert stack[0]["moving_label"] == "stack/A000_S005_s000_moving_label.nii"
    assert nib.load(tmp_path / "whole" / stack[0]["fixed_label"]).shape == (32, 32, 3)


def test_parse_errors_of_synth(tmp_path, model_dir, data, capsys):
    for pairs, message in [("3-2", "expected T'_aug:T'_syn"), ("3:0", "T'_syn >= 1"),
                           ("3:2,3:2", "repeated"), ("3:11", "must lie in 1..10")]:  # fmt: skip
        argv = ["synth", "--image", str(data / "heart.nii.gz"), "--level-pairs", pairs]
        assert main([*argv, "--model", str(model_dir), "--out", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
