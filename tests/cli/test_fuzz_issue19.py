"""Issue 19, "bad input, tried as a new user would": each defect of the list with a test that
failed before its fix (commands through ``main``, library calls directly)."""

from __future__ import annotations

import errno
import logging
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from safetensors import SafetensorError

from drdm.cli.main import main
from drdm.data.phantoms import cardiac_phantom_2d
from drdm.errors import InputError
from drdm.io import read_image, write_image

sitk.ProcessObject_SetGlobalWarningDisplay(False)

AFFINE = np.diag([1.5, 1.5, 8.0, 1.0])


def save(path, array, affine=AFFINE, dtype=None):
    nib.save(nib.Nifti1Image(np.asarray(array), affine, dtype=dtype), str(path))
    return path


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A 32 x 32 cardiac phantom image and its label map (uint8)."""
    root = tmp_path_factory.mktemp("phantom")
    p = cardiac_phantom_2d(32, generator=1)
    save(root / "heart.nii.gz", p.image.numpy())
    return root / "heart.nii.gz", p.label.numpy().astype(np.int64)


def stderr_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# --------------------------------------------------------------------- 1. 64-bit labels


@pytest.mark.parametrize(
    ("dtype", "big"),
    [(np.uint64, 2**63 + 5), (np.float64, 2.0**64), (np.float32, 2.0**63)],
)
def test_labels_beyond_int64_are_refused(tmp_path, phantom, capsys, dtype, big):
    image, label = phantom
    values = label.astype(dtype)
    values[label == 1] = big
    path = save(tmp_path / "lab.nii.gz", values, dtype=dtype)
    out = tmp_path / "out"
    argv = ["diffuse", str(image), "--t", "5", "--label", str(path), "--out", str(out)]
    assert main([*argv, "--quiet"]) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and "lab.nii.gz" in lines[0] and "2**63 - 1" in lines[0], lines
    assert not out.exists()


def test_int64_labels_above_2_pow_53_survive_exactly(tmp_path, phantom):
    image, label = phantom
    values = label.copy()
    values[label == 1] = 2**53 + 1
    values[label == 2] = 2**62 + 3
    path = save(tmp_path / "lab.nii.gz", values, dtype=np.int64)
    out = tmp_path / "out"
    argv = ["diffuse", str(image), "--t", "5", "--label", str(path), "--out", str(out)]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0
    written = nib.load(str(next(out.glob("*_label.nii.gz"))))
    assert written.get_data_dtype() == np.int64
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 2**53 + 1, 2**62 + 3, 3}
    assert 2**53 + 1 in np.asarray(written.dataobj)
    wide = read_image(path, kind="label")  # and the writer alone, on every value
    write_image(tmp_path / "w.nii.gz", wide.array, wide, kind="label")
    np.testing.assert_array_equal(read_image(tmp_path / "w.nii.gz", kind="label").array, values)


# ------------------------------------------------------ 8. int64 label maps stay int64


def test_small_int64_label_map_keeps_int64(tmp_path, phantom):
    image, label = phantom
    path = save(tmp_path / "lab.nii.gz", label, dtype=np.int64)
    out = tmp_path / "out"
    argv = ["diffuse", str(image), "--t", "5", "--label", str(path), "--out", str(out)]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0
    written = next(out.glob("*_label.nii.gz"))
    assert nib.load(str(written)).get_data_dtype() == np.int64
    assert sitk.ReadImage(str(written)).GetPixelID() == sitk.sitkInt64


# ---------------------------------------------- 3. codes 0 and negative pixdim, as ITK


def _no_transform_nifti(path, array, pixdim):
    image = nib.Nifti1Image(np.asarray(array), None)
    header = image.header
    header["qform_code"] = 0
    header["sform_code"] = 0
    header["pixdim"][1:4] = pixdim
    nib.save(image, str(path))
    return path


def _dice(a, b, value):
    a, b = a == value, b == value
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.parametrize("pixdim", [(-1.5, 2.0, 3.0), (1.5, -2.0, -3.0)])
def test_negative_pixdim_without_qform_or_sform_matches_itk(tmp_path, capsys, pixdim):
    z, y, x = np.mgrid[:16, :16, :16] - 7.5
    volume = np.exp(-((x - 2) ** 2 + 2 * y**2 + z**2) / 40.0).astype(np.float32)
    label = ((x - 2) ** 2 + 2 * y**2 + z**2 < 30).astype(np.uint8) + (x > 3).astype(np.uint8)
    image = _no_transform_nifti(tmp_path / "img.nii", volume, pixdim)
    label_path = _no_transform_nifti(tmp_path / "lab.nii", label, pixdim)
    out = tmp_path / "out"
    argv = ["diffuse", str(image), "--t", "40", "--ndim", "3", "--label", str(label_path)]
    assert main([*argv, "--out", str(out), "--quiet", "--device", "cpu", "--seed", "3"]) == 0
    err = capsys.readouterr().err
    assert "ITK's default" not in err and "flipped" in err
    assert "pixdim[1,2,3]" not in err  # nibabel's own line (item 9)
    reference = sitk.ReadImage(str(label_path))
    written = sitk.ReadImage(str(next(out.glob("*_label.nii"))))
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    field = sitk.ReadImage(str(next(out.glob("*_ddf.nii.gz"))))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    itk = sitk.GetArrayFromImage(
        sitk.Resample(reference, reference, transform, sitk.sitkNearestNeighbor, 0)
    )
    ours = sitk.GetArrayFromImage(written)
    assert (ours != sitk.GetArrayFromImage(reference)).any()  # it was deformed
    for value in (1, 2):
        assert _dice(itk, ours, value) >= 0.9, value


# --------------------------------------------------------- 9. nibabel's stray lines


def test_nibabel_header_messages_do_not_reach_the_terminal(tmp_path, capsys):
    """nibabel prints header fixes through a logging handler of its own (unprefixed)."""
    array = cardiac_phantom_2d(32, generator=1).image.numpy()
    path = _no_transform_nifti(tmp_path / "img.nii", array, (0.0, 1.5, 1.0))
    bad = tmp_path / "bin.nii"
    raw = bytearray(path.read_bytes())
    raw[70:74] = np.array([1, 1], "<i2").tobytes()  # datatype 1 (binary), bitpix 1
    bad.write_bytes(bytes(raw))
    handler = logging.StreamHandler()  # capsys cannot see nibabel's handler (made at import)
    stream = handler.stream = __import__("io").StringIO()
    logger = logging.getLogger("nibabel.global")
    logger.addHandler(handler)
    try:
        out = tmp_path / "out"
        assert main(["diffuse", str(path), "--t", "3", "--out", str(out), "--quiet"]) == 0
        assert main(["diffuse", str(bad), "--t", "3", "--out", str(out), "--quiet"]) == 2
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == ""
    lines = stderr_lines(capsys)
    assert all(line.startswith("drdm diffuse: ") for line in lines), lines
    assert any("pixdim (0, 1.5)" in line and "img.nii" in line for line in lines), lines
    assert any("bin.nii" in line and "data code 1" in line for line in lines), lines


# ---------------------------------------------------------------- 2. train, disk full

TRAIN_CONFIG = """\
seed: 0
network: {widths: [4, 8, 8], bottleneck_width: 4, embed_dim: 8, num_steps: 10}
forward: {num_steps: 10, grid_size: 8}
data: {image_size: [16, 16], phantoms: {kind: cardiac2d, count: 2, seed: 0}}
optim: {steps: 2, batch_size: 1}
output: {dir: run, checkpoint_every: 1, plot: false}
"""


@pytest.mark.parametrize(
    "failure",
    [
        SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
            '"No space left on device" })'
        ),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_train_on_a_full_disk_one_line_exit_2_nothing_partial(
    tmp_path, capsys, monkeypatch, failure
):
    import drdm.training.state as state

    def full(*args, **kwargs):
        raise failure

    monkeypatch.setattr(state, "save_file", full)
    config = tmp_path / "cfg.yaml"
    config.write_text(TRAIN_CONFIG)
    assert main(["train", "--config", str(config), "--quiet", "--device", "cpu"]) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1, lines
    assert "optimizer.safetensors: no space left on device" in lines[0]
    assert "step-00000001" in lines[0] and ".partial" not in lines[0]
    leftovers = [p.name for p in (tmp_path / "run").rglob("*") if "partial" in p.name]
    assert leftovers == []


def test_disk_full_while_writing_an_output_names_the_file(tmp_path, phantom, capsys, monkeypatch):
    import drdm.io.image as image_io

    def full(image, filename):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_io.nib, "save", full)
    image, _ = phantom
    out = tmp_path / "out"
    assert main(["diffuse", str(image), "--t", "3", "--out", str(out), "--quiet"]) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1, lines
    assert "_ddf.nii.gz: no space left on device" in lines[0] and str(out) in lines[0]
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix != ".png"]


# ---------------------------------------------------- 4 and 14. DRDM.generate's inputs


def test_generate_refuses_intensities_the_network_cannot_take():
    import torch

    from helpers import gen, tiny_model

    model = tiny_model()
    with torch.no_grad():  # a network whose output overflows, as the default one at 1e36
        for param in model.network.parameters():
            param.fill_(1e3)
    images = torch.full((1, 1, 32, 32), 1e36)
    images[..., :16] = 0.0
    with pytest.raises(ValueError, match="not finite .* up to 1e\\+36.*normalize=True"):
        model.generate(images, 3, generator=gen(), engine="torch")


def test_generate_normalize_survives_float32_extremes():
    import torch

    from helpers import gen, tiny_model

    images = (torch.rand(1, 1, 32, 32) * 2 - 1) * 3e38  # max - min overflows float32
    out = tiny_model().generate(images, 3, generator=gen(), normalize=True, engine="torch")
    assert bool(torch.isfinite(out.ddf).all())


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
        ({"images": "meta"}, ValueError, "meta-device"),
        ({"images": "empty"}, ValueError, "images need >= 1 image"),
    ],
)
def test_generate_bad_arguments_one_line_errors_naming_the_parameter(kwargs, error, names):
    import torch

    from helpers import tiny_model

    images = {
        "meta": torch.empty(1, 1, 32, 32, device="meta"),
        "empty": torch.empty(0, 1, 32, 32),
    }.get(kwargs.pop("images", None), torch.rand(1, 1, 32, 32))
    with pytest.raises(error, match=names) as caught:
        tiny_model().generate(images, 3, **kwargs)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------- 5. --out ""


@pytest.mark.parametrize("command", ["augment", "generate", "diffuse", "train", "show"])
def test_empty_out_is_refused(tmp_path, phantom, capsys, monkeypatch, command, model_dir):
    image, _ = phantom
    monkeypatch.chdir(tmp_path)
    argv = {
        "augment": ["augment", "--image", str(image), "--model", str(model_dir)],
        "generate": ["generate", str(image), "--level", "3", "--model", str(model_dir)],
        "diffuse": ["diffuse", str(image), "--t", "3"],
        "train": ["train", "--config", str(tmp_path / "none.yaml")],
        "show": ["show", str(tmp_path)],
    }[command]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--out", "", "--quiet"] if command != "show" else [*argv, "--out", ""])
    assert stop.value.code == 2
    assert "--out" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder


def test_empty_out_is_refused_by_the_library(tmp_path, phantom, monkeypatch):
    from drdm.batch import diffuse_file

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="empty path"):
        diffuse_file(phantom[0], 3, "", progress=False)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------- 6. messages naming real options


def test_generate_and_diffuse_grid_mismatch_names_no_missing_option(tmp_path, phantom, capsys):
    image, label = phantom
    shifted = AFFINE.copy()
    shifted[0, 3] = 30.0
    lab = save(tmp_path / "lab.nii.gz", label.astype(np.uint8), shifted)
    out = tmp_path / "out"
    for argv in (["diffuse", str(image), "--t", "3"], ["generate", str(image), "--level", "3"]):
        assert main([*argv, "--label", str(lab), "--out", str(out), "--quiet"]) == 2
        lines = stderr_lines(capsys)
        assert len(lines) == 1 and "lab.nii.gz" in lines[0], lines
        assert "--resample-label" not in lines[0] and "resample" in lines[0]
    assert not out.exists()


def test_4d_series_frame_option_exists_where_the_message_names_it(tmp_path, phantom, capsys):
    image, _ = phantom
    series = np.stack([nib.load(str(image)).get_fdata()] * 3, -1)[:, :, None]
    cine = save(tmp_path / "cine.nii.gz", series.astype(np.float32))
    out = tmp_path / "out"
    assert main(["diffuse", str(cine), "--t", "3", "--out", str(out), "--quiet"]) == 2
    assert "choose one with frame (0..2)" in capsys.readouterr().err
    argv = ["diffuse", str(cine), "--t", "3", "--frame", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0  # the option the message names exists
    from drdm.io import read_volume

    with pytest.raises(InputError, match="4D time series") as error:  # train's reader
        read_volume(cine)
    assert "--frame" not in str(error.value)


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_broken_symlink_as_out_says_so(tmp_path, phantom, capsys, kind):
    out = tmp_path / "out"
    if kind == "dangling":
        out.symlink_to(tmp_path / "missing")
    else:
        out.symlink_to(out)
    argv = ["diffuse", str(phantom[0]), "--t", "3", "--out", str(out), "--quiet"]
    assert main(argv) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and "symbolic link" in lines[0] and "exists" not in lines[0], lines


def test_warnings_print_no_numpy_reprs(tmp_path, capsys):
    array = cardiac_phantom_2d(32, generator=1).image.numpy()
    path = save(tmp_path / "img.nii.gz", array)
    image = nib.load(str(path))
    image.header["pixdim"][1] = np.nan
    nib.save(image, str(path))
    out = tmp_path / "out"
    assert main(["diffuse", str(path), "--t", "3", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "pixdim (nan, 1.5)" in err and "np.float" not in err


# ------------------------------------------------------------ 7. a 300-digit seed


@pytest.mark.parametrize("command", ["diffuse", "generate"])
def test_huge_seed_gives_short_names(tmp_path, phantom, model_dir, command):
    seed = "9" * 300
    out = tmp_path / "out"
    argv = {
        "diffuse": ["diffuse", str(phantom[0]), "--t", "3"],
        "generate": ["generate", str(phantom[0]), "--level", "3", "--model", str(model_dir)],
    }[command]
    assert main([*argv, "--seed", seed, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    names = [p.name for p in out.iterdir()]
    assert names and max(len(n) for n in names) < 100
    from drdm.batch.single import seed_tag

    assert seed_tag(int(seed)) != seed_tag(int(seed) - 1)  # other seed, other names
    assert seed_tag(-(10**30)) != seed_tag(10**30) and seed_tag(-7) == "seed-7"


# ---------------------------------------------------- 10. SIGTERM and killed runs


def test_sigterm_in_process_ends_like_ctrl_c(tmp_path, phantom, capsys, monkeypatch):
    """SIGTERM while the second sample is written: message, exit 130, lock gone, the first
    sample's row kept (the second, interrupted before its row, is redone by the next run)."""
    import os
    import signal

    import drdm.batch.runner as runner

    calls = []
    write = runner.write_outputs

    def write_then_terminate(*args, **kwargs):
        write(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    class Unhandled(Exception):
        pass

    def unhandled(signum, frame):  # what the test sees if the command does not handle it
        raise Unhandled()

    monkeypatch.setattr(runner, "write_outputs", write_then_terminate)
    out = tmp_path / "out"
    argv = ["augment", "--image", str(phantom[0]), "--method", "elastic", "--per-level", "50"]
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        assert main([*argv, "--no-figure", "--quiet", "--out", str(out)]) == 130
        assert signal.getsignal(signal.SIGTERM) is unhandled  # restored after the command
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stderr_lines(capsys)[-1] == "drdm augment: interrupted (SIGTERM)"
    assert not list(out.glob(".drdm-*.lock"))
    assert len((out / "manifest.csv").read_text().splitlines()) == 1 + 1


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(tmp_path, phantom, model_dir):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    argv = [sys.executable, "-m", "drdm", "augment", "--image", str(phantom[0]), "--model"]
    argv += [str(model_dir), "--levels", "3", "--per-level", "400", "--stack", "none"]
    argv += ["--no-figure", "--quiet", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("heart/*_image.nii.gz"))) < 3 and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "drdm augment: interrupted (SIGTERM)"
    assert not list(out.glob(".drdm-*.lock"))
    rows = (out / "manifest.csv").read_text().splitlines()[1:]
    written = len(list(out.glob("heart/*_image.nii.gz")))
    assert 2 <= len(rows) < 400
    assert written - 1 <= len(rows) <= written  # the sample being written may lack its row


def test_rows_of_a_killed_run_are_not_recomputed(tmp_path):
    """SIGKILL runs no clean-up: the rows since the last manifest flush come from the journal."""
    from drdm.batch.manifest import AUGMENT_COLUMNS, ManifestBook

    files = ("image", "label", "ddf")
    keys = [f"x/L003_s{k:03d}_image.nii.gz" for k in range(3)]
    book = ManifestBook(tmp_path / "manifest.csv", AUGMENT_COLUMNS, tmp_path, files, keys)
    book.flush()  # the periodic flush: no rows yet
    (tmp_path / "x").mkdir()
    for k, key in enumerate(keys[:2]):  # two samples written, then the process is killed
        row = {c: "" for c in AUGMENT_COLUMNS}
        row.update(image=key, ddf=key.replace("image", "ddf"), seed=k, level=3, sample=k)
        row["max_disp_pct"] = 0.5
        for name in (row["image"], row["ddf"]):
            (tmp_path / name).write_bytes(b"x")
        book.add(row)
    del book  # no flush
    again = ManifestBook(tmp_path / "manifest.csv", AUGMENT_COLUMNS, tmp_path, files, keys)
    assert [again.done(key, k) for k, key in enumerate(keys)] == [True, True, False]
    again.flush(final=True)
    text = (tmp_path / "manifest.csv").read_text()
    assert keys[0] in text and keys[1] in text and ",0.5," in text
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".jsonl")]


# ------------------------------------------------ 11. config that does not fit weights


def test_model_config_not_fitting_its_weights_one_line(tmp_path, phantom, capsys):
    import json

    from helpers import tiny_model

    folder = tiny_model().save_pretrained(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["network"]["widths"] = [4, 8, 16]
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    argv = ["generate", str(phantom[0]), "--level", "3", "--model", str(folder), "--out"]
    assert main([*argv, str(out), "--quiet"]) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and len(lines[0]) < 600, lines
    assert "model.safetensors does not fit the network in config.json" in lines[0]
    assert "of another shape" in lines[0]


# ------------------------------------------------------- 12. absurd sample counts


def test_absurd_per_level_is_refused_at_once(tmp_path, phantom, model_dir, capsys):
    import time

    out = tmp_path / "out"
    argv = ["augment", "--image", str(phantom[0]), "--model", str(model_dir), "--levels", "3,5"]
    start = time.monotonic()
    assert main([*argv, "--per-level", "10000000", "--out", str(out), "--quiet"]) == 2
    assert time.monotonic() - start < 5
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and "per_level 10000000" in lines[0] and "limit" in lines[0]
    assert not out.exists()


# --------------------------------------------------------- 13. images/ + labels/


def test_images_labels_layout_warns_about_orphans(tmp_path, phantom):
    from drdm.batch.inputs import find_pairs

    image, label = phantom
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("a", "b"):
        shutil.copy(image, tmp_path / "images" / f"{name}.nii.gz")
    save(tmp_path / "labels" / "a.nii.gz", label.astype(np.uint8))
    save(tmp_path / "labels" / "z.nii.gz", label.astype(np.uint8))
    with pytest.warns(UserWarning) as caught:
        pairs = find_pairs(tmp_path)
    assert [(p.name, lab and lab.name) for p, lab in pairs] == [
        ("a.nii.gz", "a.nii.gz"),
        ("b.nii.gz", None),
    ]
    messages = [str(w.message) for w in caught]
    assert any("b.nii.gz" in m and "no label map" in m for m in messages), messages
    assert any("z.nii.gz" in m and "without its image" in m for m in messages), messages
