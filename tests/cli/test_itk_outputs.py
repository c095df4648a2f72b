"""One I/O path: every command's outputs keep the input's grid and kind, and SimpleITK's
DisplacementFieldTransform applied to the input reproduces each command's own output
(augment, synth, generate, diffuse, demo; 2D, a slice-wise stack and 3D)."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from drdm.cli.main import main
from drdm.data.phantoms import cardiac_phantom_2d
from helpers import tiny_model

sitk.ProcessObject_SetGlobalWarningDisplay(False)

#: oblique in-plane, anisotropic: 1.5 x 1.5 mm in-plane, 8 mm slices
OBLIQUE = np.array(
    [[0.0, -1.5, 0.0, 20.0], [1.5, 0.0, 0.0, -10.0], [0.0, 0.0, 8.0, 5.0], [0, 0, 0, 1.0]]
)
#: 3D: rotated about z, 1.2 x 1.0 x 1.4 mm
C, S = np.cos(0.3), np.sin(0.3)
ROTATED = np.array(
    [[1.2 * C, -1.0 * S, 0.0, 3.0], [1.2 * S, 1.0 * C, 0.0, -4.0], [0, 0, 1.4, 7.0], [0, 0, 0, 1]]
)


def save(path, array, affine):
    image = nib.Nifti1Image(np.asarray(array), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        2: tiny_model(size=32).save_pretrained(root / "m2"),
        3: tiny_model(ndim=3, size=16).save_pretrained(root / "m3"),
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """(image, label, model ndim) per case: a 2D slice, a 3-slice stack, a 3D volume."""
    root = tmp_path_factory.mktemp("inputs")
    phantoms = [cardiac_phantom_2d(32, generator=k) for k in range(3)]
    image2 = phantoms[0].image.numpy()
    label2 = phantoms[0].label.numpy().astype(np.uint8)
    stack = np.stack([p.image.numpy() for p in phantoms], -1)
    stack_label = np.stack([p.label.numpy() for p in phantoms], -1).astype(np.int16)
    z, y, x = np.mgrid[:16, :16, :16] - 7.5
    volume = np.exp(-(x**2 + 2 * y**2 + z**2) / 40.0).astype(np.float32)
    volume_label = ((x**2 + 2 * y**2 + z**2) < 30).astype(np.uint8) + (x > 3).astype(np.uint8)
    return {
        "2d": (
            save(root / "slice.nii.gz", image2, OBLIQUE),
            save(root / "slice_gt.nii.gz", label2, OBLIQUE),
            2,
        ),
        "stack": (
            save(root / "stack.nii.gz", stack, OBLIQUE),
            save(root / "stack_gt.nii.gz", stack_label, OBLIQUE),
            2,
        ),
        "3d": (
            save(root / "vol.nii.gz", volume, ROTATED),
            save(root / "vol_gt.nii.gz", volume_label, ROTATED),
            3,
        ),
    }


def sitk_resample(path, field_path, interpolator):
    image = sitk.ReadImage(str(path))
    field = sitk.ReadImage(str(field_path))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return sitk.GetArrayFromImage(sitk.Resample(image, image, transform, interpolator, 0))


def array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def assert_reproduces(source, field, output, tolerance=0.01):
    """SimpleITK's linear resampling of ``source`` by ``field`` equals ``output``."""
    theirs = sitk_resample(source, field, sitk.sitkLinear)
    ours = array(output)
    assert theirs.shape == ours.shape
    scale = float(np.abs(array(source)).max())
    assert np.abs(ours - array(source)).mean() > 1e-3 * scale  # the field moved something
    assert np.abs(theirs - ours).mean() < tolerance * scale, np.abs(theirs - ours).max()


def assert_same_grid(source, output, label=False):
    a, b = sitk.ReadImage(str(source)), sitk.ReadImage(str(output))
    assert a.GetSize() == b.GetSize()  # X x Y x 1 stays so, 2D stays 2D
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    if label:
        assert a.GetPixelID() == b.GetPixelID()  # the label dtype is kept


CASES = ["2d", "stack", "3d"]


@pytest.mark.parametrize("case", CASES)
def test_augment_output_reproduced_by_simpleitk(tmp_path, models, inputs, case):
    image, label, ndim = inputs[case]
    out = tmp_path / "aug"
    argv = ["augment", "--image", image, "--label", label, "--model", models[ndim]]
    argv += ["--levels", "6", "--per-level", "1", "--stack", "none", "--out", out]
    assert main([*map(str, argv), "--quiet", "--no-figure"]) == 0
    prefix = out / image.name.split(".")[0] / "L006_s000"
    assert_same_grid(image, f"{prefix}_image.nii.gz")
    assert_same_grid(label, f"{prefix}_label.nii.gz", label=True)
    assert_reproduces(image, f"{prefix}_ddf.nii.gz", f"{prefix}_image.nii.gz")


@pytest.mark.parametrize("case", CASES)
def test_synth_output_reproduced_by_simpleitk(tmp_path, models, inputs, case):
    image, label, ndim = inputs[case]
    out = tmp_path / "syn"
    argv = ["synth", "--image", image, "--label", label, "--model", models[ndim]]
    argv += ["--level-pairs", "0:8", "--out", out]
    assert main([*map(str, argv), "--quiet", "--no-figure"]) == 0
    prefix = out / image.name.split(".")[0] / "A000_S008_s000"
    assert_same_grid(image, f"{prefix}_fixed.nii.gz")
    # T'_aug = 0: moving is the input, and fixed is one warp of it by the saved field
    assert_reproduces(f"{prefix}_moving.nii.gz", f"{prefix}_ddf.nii.gz", f"{prefix}_fixed.nii.gz")


@pytest.mark.parametrize("case", CASES)
def test_generate_output_reproduced_by_simpleitk(tmp_path, models, inputs, case):
    image, label, ndim = inputs[case]
    out = tmp_path / "gen"
    argv = ["generate", image, "--label", label, "--model", models[ndim], "--level", "6"]
    assert main([*map(str, argv), "--out", str(out), "--quiet"]) == 0
    prefix = out / f"{image.name.split('.')[0]}_T6_seed0_0"
    assert_same_grid(image, f"{prefix}_image.nii.gz")
    assert_same_grid(label, f"{prefix}_label.nii.gz", label=True)
    assert_reproduces(image, f"{prefix}_ddf.nii.gz", f"{prefix}_image.nii.gz")


@pytest.mark.parametrize("case", CASES)
def test_diffuse_output_reproduced_by_simpleitk(tmp_path, inputs, case):
    image, label, _ = inputs[case]
    out = tmp_path / "dif"
    argv = ["diffuse", image, "--label", label, "--t", "40", "--out", out, "--quiet"]
    assert main(list(map(str, argv))) == 0
    prefix = out / f"{image.name.split('.')[0]}_t40_seed0"
    assert_same_grid(image, f"{prefix}_image.nii.gz")
    assert_same_grid(label, f"{prefix}_label.nii.gz", label=True)
    assert_reproduces(image, f"{prefix}_ddf.nii.gz", f"{prefix}_image.nii.gz")
    if case == "stack":  # slice by slice: no through-plane motion
        field = nib.load(f"{prefix}_ddf.nii.gz").get_fdata()
        assert np.abs(field[..., 2]).max() == 0.0


@pytest.mark.slow  # the whole demo (about 20 s on a loaded machine)
def test_demo_outputs_reproduced_by_simpleitk(tmp_path, models):
    out = tmp_path / "demo"
    argv = ["demo", "--out", out, "--size-2d", "32", "--size-3d", "16", "--model", models[2]]
    assert main(list(map(str, argv))) == 0
    for name, source in (("cardiac2d_t30", "cardiac"), ("thorax3d_t30", "thorax"),
                         ("stack_t30", "stack")):  # fmt: skip
        image = out / "input" / f"{source}.nii.gz"
        assert_reproduces(image, out / f"{name}_ddf.nii.gz", out / f"{name}_image.nii.gz")
        assert_same_grid(out / "input" / f"{source}_gt.nii.gz", out / f"{name}_label.nii.gz", True)
    field = nib.load(out / "stack_t30_ddf.nii.gz").get_fdata()  # slice by slice
    assert np.abs(field[..., 2]).max() == 0.0 and np.abs(field[..., :2]).max() > 0
    image = out / "input" / "cardiac.nii.gz"
    for part, columns in (("augment", ("image", "ddf")), ("synth", ("fixed", "ddf"))):
        with open(out / part / "manifest.csv", newline="") as f:
            row = next(csv.DictReader(f))
        assert_same_grid(image, out / part / row[columns[0]])
        if part == "augment":  # the default recipe stacks BigAug's intensity changes: labels
            label = out / "input" / "cardiac_gt.nii.gz"
            assert_same_grid(label, out / part / row["label"], label=True)
