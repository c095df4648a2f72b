from __future__ import annotations

import gzip
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import write_nifti
from drdm.cli.main import main


@pytest.fixture
def image2d(tmp_path):
    y, x = np.mgrid[:48, :40]
    array = np.exp(-((y - 24) ** 2 + (x - 20) ** 2) / 100.0).astype(np.float32)
    return write_nifti(tmp_path / "img.nii.gz", array)


def test_diffuse_2d_writes_outputs_with_input_affine(tmp_path, image2d, capsys):
    out = tmp_path / "out"
    assert main(["diffuse", str(image2d), "--t", "40", "--out", str(out), "--seed", "3"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["img_t40_seed3.png", "img_t40_seed3_ddf.nii.gz", "img_t40_seed3_image.nii.gz"]
    deformed = nib.load(out / "img_t40_seed3_image.nii.gz")
    source = nib.load(image2d)
    assert deformed.shape == (48, 40)
    np.testing.assert_allclose(deformed.affine, source.affine)
    ddf = nib.load(out / "img_t40_seed3_ddf.nii.gz")
    assert ddf.shape == (48, 40, 1, 1, 2)
    assert ddf.header.get_intent()[0] == "vector"
    assert not np.allclose(deformed.get_fdata(), source.get_fdata())
    assert "mean |u|" in capsys.readouterr().out
    # same seed, same result
    again = tmp_path / "again"
    main(["diffuse", str(image2d), "--t", "40", "--out", str(again), "--seed", "3"])
    np.testing.assert_array_equal(
        nib.load(again / "img_t40_seed3_ddf.nii.gz").get_fdata(), ddf.get_fdata()
    )


def test_diffuse_3d(tmp_path):
    path = write_nifti(tmp_path / "vol.nii", np.random.default_rng(0).random((20, 18, 16)))
    assert main(["diffuse", str(path), "--t", "10", "--out", str(tmp_path / "o")]) == 0
    ddf = nib.load(tmp_path / "o" / "vol_t10_seed0_ddf.nii.gz")
    assert ddf.shape == (20, 18, 16, 1, 3)


BAD = ["missing", "corrupt", "truncated", "4d", "1d", "nan", "t0", "t81"]


def _bad_inputs(tmp_path):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(gzip.compress(b"not a nifti file at all" * 20))
    truncated = tmp_path / "truncated.nii"
    write_nifti(truncated, np.zeros((16, 16), np.float32))
    truncated.write_bytes(truncated.read_bytes()[:200])
    nan = np.ones((16, 16), np.float32)
    nan[3, 4] = np.nan
    return [
        (tmp_path / "missing.nii.gz", "40", "no such file"),
        (corrupt, "40", "cannot read"),
        (truncated, "40", "cannot read"),
        (write_nifti(tmp_path / "four.nii.gz", np.zeros((8, 8, 8, 2), np.float32)), "40", "4D"),
        (write_nifti(tmp_path / "one.nii.gz", np.zeros((8,), np.float32)), "40", "1D"),
        (write_nifti(tmp_path / "nan.nii.gz", nan), "40", "NaN"),
        (write_nifti(tmp_path / "ok.nii.gz", np.ones((16, 16), np.float32)), "0", "t 0: must lie"),
        (tmp_path / "ok.nii.gz", "81", "t 81: must lie in 1..80"),
    ]


@pytest.mark.parametrize("case", BAD)
def test_diffuse_bad_input_one_line_error_no_output(tmp_path, capsys, case):
    path, t, message = dict(zip(BAD, _bad_inputs(tmp_path), strict=True))[case]
    out = tmp_path / "out"
    status = main(["diffuse", str(path), "--t", t, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2, (path, err)
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    if not message.startswith("t "):
        assert str(path) in err
    assert not out.exists()


def test_console_entry_point_exit_status(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "drdm",
            "diffuse",
            str(tmp_path / "nope.nii"),
            "--t",
            "3",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"drdm diffuse: error: {tmp_path / 'nope.nii'}: no such file or directory"
    ]


def test_demo_small_without_model(tmp_path, capsys, monkeypatch):
    import drdm.pretrained

    # the demo imports is_available when it runs (drdm --help loads no torch)
    monkeypatch.setattr(drdm.pretrained, "is_available", lambda name: False)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size-2d", "64", "--size-3d", "24"]) == 0
    assert "default model is not installed" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"forward_2d.png", "forward_3d.png", "cardiac2d_t55_label.nii.gz", "input"} <= names
    assert not {"augment", "synth", "augment_3d"} & names
    label = nib.load(out / "cardiac2d_t55_label.nii.gz").get_fdata()
    assert set(np.unique(label)) <= {0, 1, 2, 3}
    assert not any(name.endswith(".part") for name in names)


@pytest.mark.slow  # a small demo (about 8 s)
def test_demo_small_with_model(tmp_path):
    from helpers import tiny_model

    model = tiny_model(size=32).save_pretrained(tmp_path / "model")
    model_3d = tiny_model(ndim=3, size=16).save_pretrained(tmp_path / "model3d")
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--size-2d", "48", "--size-3d", "16", "--model", str(model)]
    assert main([*argv, "--model-3d", str(model_3d)]) == 0
    lines = (out / "augment_3d" / "manifest.csv").read_text().splitlines()
    assert len(lines) == 1 + 2  # one sample at each of the two default levels
    deformed = nib.load(out / "augment_3d" / "thorax" / "L004_s000_label.nii.gz")
    assert deformed.shape == (16, 16, 16)
    assert (out / "input" / "cardiac_gt.nii.gz").is_file()
    for part, rows in (("augment", 4), ("synth", 2)):
        assert (out / part / "overview.png").is_file()
        lines = (out / part / "manifest.csv").read_text().splitlines()
        assert len(lines) == 1 + rows
    deformed = nib.load(out / "augment" / "cardiac" / "L004_s000_label.nii.gz")
    assert set(np.unique(np.asarray(deformed.dataobj))) <= {0, 1, 2, 3}


def test_atomic_outputs_have_plain_file_permissions(tmp_path):
    import os

    from drdm.io import atomic_path

    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_output_folder_errors_name_the_flag(tmp_path, capsys):
    """The library's output check names what the caller calls the path: the CLI's ``--out``."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--out" in err and str(blocker) in err
