"""Issue 19, "bad input, tried as a new user would": each defect of the list with a test that
failed before its fix (commands through ``main``, library calls directly)."""

from __future__ import annotations

import errno
import logging

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from safetensors import SafetensorError

from drdm.cli.main import main
from drdm.data.phantoms import cardiac_phantom_2d
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
