"""drdm.batch and the commands over it: the reliability defects of issue 11 (one test each)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from drdm.batch import BatchOptions, augment_files, diffuse_file, generate_file
from drdm.batch.manifest import AUGMENT_COLUMNS
from drdm.batch.run_folder import RunLock, claim_run_settings
from drdm.cli.main import main
from drdm.data.phantoms import cardiac_phantom_2d
from drdm.errors import InputError
from drdm.io import check_output_folder, read_image, remove_stale_temporaries
from drdm.io.files import atomic_path

AFFINE = np.diag([1.5, 1.5, 8.0, 1.0])


def save(path, array, affine=AFFINE, units=None):
    image = nib.Nifti1Image(np.asarray(array), affine)
    if units:
        image.header.set_xyzt_units(units, "sec")
    nib.save(image, str(path))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    phantom = cardiac_phantom_2d(32, generator=1)
    save(root / "heart.nii.gz", phantom.image.numpy())
    save(root / "heart_gt.nii.gz", phantom.label.numpy().astype(np.uint8))
    save(root / "other.nii.gz", cardiac_phantom_2d(32, generator=2).image.numpy())
    return root


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def one_line_error(capsys, status, *needles):
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert str(needle) in err, err
    return err


def augment_argv(model_dir, data, out, *extra):
    argv = ["augment", "--image", data / "heart.nii.gz", "--label", data / "heart_gt.nii.gz"]
    argv += ["--model", model_dir, "--levels", "3", "--per-level", "1", "--out", out]
    return [str(a) for a in (*argv, "--quiet", "--no-figure", *extra)]


# ------------------------------------------------------------------ 3: one run per folder


def test_run_lock_refuses_a_second_holder(tmp_path):
    with RunLock(tmp_path, "manifest"):
        with pytest.raises(InputError, match="another drdm run works in this folder"):
            RunLock(tmp_path, "manifest").acquire()
        with RunLock(tmp_path, "manifest-shard1of2"):  # another shard of the run: fine
            pass
    with RunLock(tmp_path, "manifest"):  # released: free again
        pass
    assert not list(tmp_path.iterdir())


def test_run_settings_are_claimed_once(tmp_path):
    assert claim_run_settings(tmp_path, "augment", {"stack": "bigaug"})
    assert not claim_run_settings(tmp_path, "augment", {"stack": "bigaug"})
    with pytest.raises(InputError, match="other settings"):
        claim_run_settings(tmp_path, "augment", {"stack": "none"})
    assert json.loads((tmp_path / "run.json").read_text())["settings"] == {"stack": "bigaug"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def _start(argv):
    return subprocess.Popen(
        [sys.executable, "-m", "drdm", *argv[:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow  # two command-line processes (about 20 s); the lock and claim are tested above
def test_two_runs_at_once_never_mix(tmp_path, model_dir, data):
    out = tmp_path / "out"
    runs = [
        _start(augment_argv(model_dir, data, out, "--stack", stack)) for stack in ("bigaug", "none")
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    winner = ("bigaug", "none")[[code for code, _ in results].index(0)]
    assert json.loads((out / "run.json").read_text())["settings"]["stack"] == winner
    # the same run twice at once: computed once (the other waits its turn or is refused)
    out2 = tmp_path / "same"
    runs = [_start(augment_argv(model_dir, data, out2)) for _ in range(2)]
    outputs = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in runs]
    written = sum(int(o.split("drdm augment: ")[1].split()[0]) for c, o, _ in outputs if c == 0)
    assert written == 1, outputs


# -------------------------------------------------- 4: manifests keep earlier runs' rows


def test_manifest_keeps_rows_of_other_levels(tmp_path, model_dir, data):
    out = tmp_path / "out"
    assert main(augment_argv(model_dir, data, out)) == 0
    argv = augment_argv(model_dir, data, out)
    argv[argv.index("--levels") + 1] = "5"
    assert main(argv) == 0
    assert sorted(r["level"] for r in rows(out / "manifest.csv")) == ["3", "5"]
    (out / rows(out / "manifest.csv")[0]["image"]).unlink()  # a deleted sample drops out
    assert main(argv) == 0
    assert [r["level"] for r in rows(out / "manifest.csv")] == ["5"]


# ------------------------------------------------------- 5: values beyond float32 range


@pytest.mark.parametrize(
    "command",
    [
        ["augment", "--levels", "3", "--per-level", "1", "--no-figure"],
        ["augment", "--method", "elastic", "--no-figure"],
        ["synth", "--level-pairs", "0:3", "--no-figure"],
        ["generate", "--level", "3"],
        ["diffuse", "--t", "10"],
    ],
    ids=["augment", "elastic", "synth", "generate", "diffuse"],
)
def test_huge_float64_values_are_refused(tmp_path, model_dir, capsys, command):
    huge = np.ones((32, 32), np.float64)
    huge[5, 5] = 1e300
    image = save(tmp_path / "huge.nii.gz", huge)
    out = tmp_path / "out"
    name, *rest = command
    source = [str(image)] if name in ("generate", "diffuse") else ["--image", str(image)]
    model = [] if name == "diffuse" or "elastic" in rest else ["--model", str(model_dir)]
    status = main([name, *source, *rest, *model, "--out", str(out), "--quiet"])
    one_line_error(capsys, status, image, "float32")
    assert not out.exists()


# ----------------------------------------------- 6: output folders that cannot be written


@pytest.mark.parametrize("command", ["augment", "synth", "generate", "diffuse", "show", "merge",
                                     "train"])  # fmt: skip
def test_output_below_a_file(tmp_path, model_dir, data, capsys, command):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = blocker / "sub"
    image = str(data / "heart.nii.gz")
    manifest = tmp_path / "m.csv"  # a valid (empty) augment manifest
    manifest.write_text(",".join(AUGMENT_COLUMNS) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text("output:\n  dir: out\n")
    argv = {
        "augment": ["augment", "--image", image, "--model", str(model_dir), "--out", str(out)],
        "synth": ["synth", "--image", image, "--level-pairs", "0:3", "--out", str(out)],
        "generate": [
            "generate",
            image,
            "--level",
            "3",
            "--model",
            str(model_dir),
            "--out",
            str(out),
        ],  # fmt: skip
        "diffuse": ["diffuse", image, "--t", "3", "--out", str(out)],
        "show": ["show", str(manifest), "--out", str(out / "x.png")],
        "merge": ["merge-manifests", str(manifest), "--out", str(out / "m.csv")],
        "train": ["train", "--config", str(config), "--out", str(out)],
    }[command]
    status = main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    assert "is a file, not a folder" in err and str(blocker) in err


def test_output_folder_checks(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="exists and is not a folder"):
        check_output_folder(tmp_path / "f")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "f" / "a" / "b")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a read-only folder
    with pytest.raises(InputError, match="permission denied"):
        check_output_folder(tmp_path / "new")


def test_unwritable_output_refused_before_generating(tmp_path, model_dir, data, capsys,
                                                     monkeypatch):  # fmt: skip
    import drdm.io.files

    monkeypatch.setattr(drdm.io.files.os, "access", lambda path, mode: False)
    argv = ["generate", str(data / "heart.nii.gz"), "--level", "3", "--model", str(model_dir)]
    status = main([*argv, "--out", str(tmp_path / "out"), "--quiet"])
    one_line_error(capsys, status, "permission denied")


# --------------------------------------------------------- 7: --keep-going on listed files


def test_keep_going_over_a_missing_listed_file(tmp_path, model_dir, data, capsys):
    listing = tmp_path / "pairs.csv"
    listing.write_text(f"image,label\n{data / 'heart.nii.gz'},\n{tmp_path / 'gone.nii.gz'},\n")
    argv = ["augment", "--input", str(listing), "--model", str(model_dir), "--levels", "3"]
    argv += ["--per-level", "1", "--quiet", "--no-figure"]
    assert main([*argv, "--out", str(tmp_path / "o"), "--keep-going"]) == 1
    assert "gone.nii.gz" in capsys.readouterr().err
    assert len(rows(tmp_path / "o" / "manifest.csv")) == 1
    status = main([*argv, "--out", str(tmp_path / "o2")])
    one_line_error(capsys, status, "gone.nii.gz", "does not exist")


# ---------------------------------------------------- 8: diffuse on a stack of thick slices


def test_diffuse_deforms_a_thick_slice_stack_slice_by_slice(tmp_path):
    stack = np.stack([cardiac_phantom_2d(32, generator=k).image.numpy() for k in range(10)], -1)
    path = save(tmp_path / "sax.nii.gz", stack, np.diag([1.5, 1.5, 10.0, 1.0]))
    report = diffuse_file(path, 80, tmp_path / "o", progress=False, figure=False)
    assert report.slice_axis == 2
    field = report.samples[0].field
    assert np.abs(field[2]).max() == 0.0 and np.abs(field[:2]).max() > 0.5
    whole = diffuse_file(path, 80, tmp_path / "o3", ndim=3, progress=False, figure=False)
    assert whole.slice_axis is None and np.abs(whole.samples[0].field[2]).max() > 0


# --------------------------------------------------------------- 9: generate --label checks


@pytest.mark.parametrize(
    "label, message",
    [
        (lambda a: (a, np.diag([2.0, 1.5, 8.0, 1.0])), "label grid differs"),
        (lambda a: (a.astype(np.int16) - 1, AFFINE), "negative values"),
        (lambda a: (a + 0.5, AFFINE), "non-integer"),
        (lambda a: (a[:16], AFFINE), "label shape"),
    ],
    ids=["other-grid", "negative", "fractional", "other-shape"],
)
def test_generate_checks_the_label_as_augment_does(tmp_path, model_dir, data, capsys, label,
                                                   message):  # fmt: skip
    array = np.asarray(nib.load(data / "heart_gt.nii.gz").dataobj).astype(np.float32)
    values, affine = label(array)
    path = save(tmp_path / "lab.nii.gz", values, affine)
    argv = ["generate", str(data / "heart.nii.gz"), "--label", str(path), "--level", "3"]
    status = main([*argv, "--model", str(model_dir), "--out", str(tmp_path / "o"), "--quiet"])
    one_line_error(capsys, status, path, message)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------- 10: NIfTI spatial units


@pytest.mark.parametrize("units, scale", [("meter", 1000.0), ("micron", 1e-3), ("mm", 1.0)])
def test_spatial_units_are_converted_to_mm(tmp_path, units, scale):
    affine = np.diag([0.0015, 0.0015, 0.008, 1.0]) / scale * 1.0
    affine[3, 3] = 1.0
    affine[:3, 3] = np.array([0.01, -0.02, 0.03]) / scale
    path = save(tmp_path / "m.nii.gz", np.random.default_rng(0).random((16, 16, 8)), affine, units)
    image = read_image(path)
    np.testing.assert_allclose(image.spacing, (0.0015, 0.0015, 0.008), rtol=1e-6)
    np.testing.assert_allclose(image.affine[:3, 3], (0.01, -0.02, 0.03), rtol=1e-6)
    out = diffuse_file(path, 10, tmp_path / "o", ndim=3, progress=False, figure=False)
    written = nib.load(out.out / out.samples[0].image)
    assert written.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(written.header.get_zooms()[:3], image.spacing, rtol=1e-5)


# ------------------------------------------------------------------- 11: any integer seed


@pytest.mark.parametrize("command", ["generate", "diffuse"])
def test_huge_seed(tmp_path, model_dir, data, command):
    extra = ["--level", "3", "--model", str(model_dir)] if command == "generate" else ["--t", "5"]
    argv = [command, str(data / "heart.nii.gz"), *extra, "--seed", str(2**70), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0


# -------------------------------------------- 12: temporaries of killed runs are removed


def test_temporaries_of_a_killed_process_are_removed_on_resume(tmp_path, model_dir, data):
    out = tmp_path / "out"
    folder = out / "heart"
    code = (
        "import os, sys\n"
        "from drdm.io.files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'')\n"
        "    os._exit(9)  # like SIGKILL: no clean-up\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder / "L003_s000_image.nii.gz")])
    left = [p for p in folder.iterdir() if p.name.endswith(".part")]
    assert len(left) == 1 and left[0].stat().st_size == 0
    with atomic_path(folder / "mine.txt") as live:  # a running writer's temporary is kept
        live.write_text("x")
        assert remove_stale_temporaries(out) == left
        assert live.exists()
    assert main(augment_argv(model_dir, data, out)) == 0
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


# --------------------------------------------------------- 13: orphan label files


def test_folder_scan_skips_orphan_label_files(tmp_path, model_dir, data, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("heart.nii.gz", "heart_gt.nii.gz"):
        (folder / name).write_bytes((data / name).read_bytes())
    (folder / "lonely_gt.nii.gz").write_bytes((data / "heart_gt.nii.gz").read_bytes())
    argv = ["augment", "--input", str(folder), "--model", str(model_dir), "--levels", "3"]
    argv += ["--per-level", "1", "--out", str(tmp_path / "o"), "--quiet", "--no-figure"]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        f"drdm augment: warning: {folder / 'lonely_gt.nii.gz'}: a label file without its "
        "image (lonely.*); skipped"
    ]  # one line: no Python source line (defect 15)
    assert [r["source_image"] for r in rows(tmp_path / "o" / "manifest.csv")] == [
        str((folder / "heart.nii.gz").resolve())
    ]


# --------------------------------------------------------- 14: merge-manifests validates


@pytest.mark.parametrize(
    "content",
    ["a,b\n1,2\n", "just some text\nwith lines\n", "image,label\n"],
    ids=["other-csv", "text", "partial-header"],
)
def test_merge_manifests_refuses_other_files(tmp_path, capsys, content):
    path = tmp_path / "x.csv"
    path.write_text(content)
    status = main(["merge-manifests", str(path), "--out", str(tmp_path / "m.csv")])
    one_line_error(capsys, status, path, "not a drdm augment or synth manifest")
    assert not (tmp_path / "m.csv").exists()


# -------------------------------------------------------------------- 15: messages


@pytest.mark.parametrize(
    "case, needles",
    [
        ("pairs", ["level_pairs", "81"]),
        ("empty-csv", ["names no images"]),
        ("levels", ["--levels", "empty item"]),
        ("small-generate", ["too small"]),
        ("small-diffuse", ["too small"]),
    ],
)
def test_messages(tmp_path, model_dir, data, capsys, case, needles):
    small = save(tmp_path / "small.nii.gz", np.ones((4, 4), np.float32))
    empty = tmp_path / "empty.csv"
    empty.write_text("image,label\n")
    out = ["--out", str(tmp_path / "o"), "--quiet"]
    model = ["--model", str(model_dir)]
    argv = {
        "pairs": ["synth", "--image", str(data / "heart.nii.gz"), "--level-pairs", "81:4", *model],
        "empty-csv": ["augment", "--input", str(empty), *model],
        "levels": ["augment", "--image", str(data / "heart.nii.gz"), "--levels", "4,,5", *model],
        "small-generate": ["generate", str(small), "--level", "3", *model],
        "small-diffuse": ["diffuse", str(small), "--t", "3"],
    }[case]
    one_line_error(capsys, main([*argv, *out]), *needles)
    assert not (tmp_path / "o").exists()


def test_diffuse_shows_progress(tmp_path, data, capsys):
    assert main(["diffuse", str(data / "heart.nii.gz"), "--t", "5", "--out", str(tmp_path)]) == 0
    assert "field" in capsys.readouterr().err  # the tqdm bar (unit: field)


# ----------------------------------------------------------- the library calls themselves


def test_library_calls_match_the_commands(tmp_path, model_dir, data):
    options = BatchOptions(
        out=tmp_path / "lib",
        image=data / "heart.nii.gz",
        labels=(data / "heart_gt.nii.gz",),
        model=str(model_dir),
        figure=False,
        progress=False,
    )
    report = augment_files(options, [3], per_level=1)
    assert report.status == 0 and report.batch.computed == 1
    assert main(augment_argv(model_dir, data, tmp_path / "cli", "--stack", "auto")) == 0
    lib = (tmp_path / "lib" / "heart" / "L003_s000_image.nii.gz").read_bytes()
    assert lib == (tmp_path / "cli" / "heart" / "L003_s000_image.nii.gz").read_bytes()
    single = generate_file(data / "heart.nii.gz", 3, tmp_path / "g", model=str(model_dir),
                           n=2, progress=False, figure=False)  # fmt: skip
    assert [s.image for s in single.samples] == [
        "heart_T3_seed0_0_image.nii.gz",
        "heart_T3_seed0_1_image.nii.gz",
    ]
    assert Path(single.out / single.samples[1].ddf).is_file()


# ------------------------------------------------- 2: geometry of generate and diffuse outputs


@pytest.mark.parametrize("command", ["generate", "diffuse"])
def test_outputs_keep_itk_geometry_and_kind(tmp_path, model_dir, capsys, command):
    import SimpleITK as sitk

    phantoms = [cardiac_phantom_2d(32, generator=k) for k in range(3)]
    stack = np.stack([p.image.numpy() for p in phantoms], -1)
    image = nib.Nifti1Image(stack, np.diag([1.0, 1.0, 1.0, 1.0]))  # sform scales 1 mm...
    image.header.set_zooms((1.5, 1.5, 10.0))  # ...contradicting pixdim (ITK uses pixdim)
    image.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    image.set_qform(None, code=0)
    nib.save(image, str(tmp_path / "sax.nii.gz"))
    flat = cardiac_phantom_2d(32, generator=5)
    save(tmp_path / "one.nii.gz", flat.image.numpy()[:, :, None])
    save(tmp_path / "one_gt.nii.gz", flat.label.numpy().astype(np.uint8)[:, :, None])
    extra = ["--level", "3", "--model", str(model_dir)] if command == "generate" else ["--t", "20"]
    tag = "T3" if command == "generate" else "t20"
    k = "_0" if command == "generate" else ""
    assert main([command, str(tmp_path / "sax.nii.gz"), *extra, "--out", str(tmp_path / "a"),
                 "--quiet"]) == 0  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "contradict pixdim" in err[0]  # one-line geometry warning
    written = sitk.ReadImage(str(tmp_path / "a" / f"sax_{tag}_seed0{k}_image.nii.gz"))
    source = sitk.ReadImage(str(tmp_path / "sax.nii.gz"))
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(written.GetSpacing(), (1.5, 1.5, 10.0), rtol=1e-5)
    argv = [command, str(tmp_path / "one.nii.gz"), "--label", str(tmp_path / "one_gt.nii.gz")]
    assert main([*argv, *extra, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    label = nib.load(tmp_path / "b" / f"one_{tag}_seed0{k}_label.nii.gz")
    assert label.shape == (32, 32, 1) and label.get_data_dtype() == np.uint8
    assert nib.load(tmp_path / "b" / f"one_{tag}_seed0{k}_image.nii.gz").shape == (32, 32, 1)
