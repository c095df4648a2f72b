"""drdm.io.image: reading/writing with geometry, labels, bad input, DDFs that ITK can use."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import smooth_field
from drdm.errors import InputError
from drdm.io import (
    GeometryWarning,
    MedicalImage,
    check_same_grid,
    read_displacement,
    read_image,
    resample_label_to,
    write_displacement,
    write_image,
)
from drdm.spatial import fold_ratio, warp_labels

sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK's own header warnings go to stderr


# ----------------------------------------------------------------------------- helpers


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(spacing, angles=(0.0, 0.0, 0.0), translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation(*angles) @ np.diag(spacing)
    affine[:3, 3] = translation
    return affine


OBLIQUE = make_affine((1.2, 0.9, 2.5), (0.3, -0.2, 0.5), (-40.0, 25.0, 12.5))


def blob_labels(shape) -> np.ndarray:
    """Nested ellipsoids (labels 1, 2, 3) in index space; uint8."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = sum((g / r) ** 2 for g, r in zip(grids, (0.8, 0.7, 0.9), strict=False))
    labels = np.zeros(shape, np.uint8)
    labels[radius < 1.0] = 1
    labels[radius < 0.5] = 2
    shifted = sum(((g - c) / 0.3) ** 2 for g, c in zip(grids, (0.4, -0.3, 0.2), strict=False))
    labels[shifted < 1.0] = 3
    return labels


def smooth_ddf(shape, amplitude, seed, zero_last=False) -> np.ndarray:
    """A smooth, fold-free random field (ndim, *shape) in voxels, max |component| = amplitude."""
    generator = torch.Generator().manual_seed(seed)
    ddf = smooth_field((1, len(shape), *shape), 1.0, generator)
    ddf = ddf / ddf.abs().max() * amplitude
    if zero_last:
        ddf[:, -1] = 0.0
    assert float(fold_ratio(ddf)) == 0.0
    return ddf[0].numpy()


def save(path, array, affine, qform=None, sform=None, qcode=1, scode=1) -> Path:
    image = nib.Nifti1Image(np.asarray(array), None)
    image.set_qform(affine if qform is None else qform, code=qcode)
    image.set_sform(affine if sform is None else sform, code=scode)
    nib.save(image, str(path))
    return Path(path)


def sitk_to_ijk(image) -> np.ndarray:
    array = sitk.GetArrayFromImage(image)
    return array.transpose(tuple(range(array.ndim))[::-1])


def sitk_warp(label_path, ddf_path) -> np.ndarray:
    """Resample the label file with the displacement field file, all in SimpleITK."""
    label = sitk.ReadImage(str(label_path))
    field = sitk.ReadImage(str(ddf_path))
    assert field.GetNumberOfComponentsPerPixel() == label.GetDimension()
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    warped = sitk.Resample(label, label, transform, sitk.sitkNearestNeighbor, 0)
    return sitk_to_ijk(warped)


def dice_per_label(a, b) -> dict[int, float]:
    out = {}
    for value in np.unique(np.concatenate([np.unique(a), np.unique(b)])):
        if value == 0:
            continue
        x, y = a == value, b == value
        out[int(value)] = 2.0 * np.logical_and(x, y).sum() / (x.sum() + y.sum())
    return out


def project_warp(label: np.ndarray, ddf: np.ndarray) -> np.ndarray:
    labels = torch.from_numpy(label.astype(np.int64))[None, None]
    warped = warp_labels(labels, torch.from_numpy(ddf)[None], method="nearest")
    return warped[0, 0].numpy()


def assert_itk_agrees(image: MedicalImage, path: Path) -> None:
    reference = sitk.ReadImage(str(path))
    geometry = image.itk_geometry()
    assert reference.GetDimension() == image.ndim
    np.testing.assert_allclose(geometry.origin, reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(geometry.spacing, reference.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(geometry.direction, reference.GetDirection(), atol=1e-5)


# ------------------------------------------------- the DDF round trip through SimpleITK


def round_trip(tmp_path, label_array, affine, ddf) -> dict[int, float]:
    source = save(tmp_path / "label.nii.gz", label_array, affine)
    label = read_image(source, kind="label")
    write_image(tmp_path / "label_out.nii.gz", label.array, label, kind="label")
    write_displacement(tmp_path / "ddf.nii.gz", ddf, label)
    ours = project_warp(label.array, ddf)
    theirs = sitk_warp(tmp_path / "label_out.nii.gz", tmp_path / "ddf.nii.gz")
    assert theirs.shape == ours.shape
    scores = dice_per_label(ours, theirs)
    assert set(scores) == {1, 2, 3}
    assert np.mean(ours != label.array) > 0.01  # the deformation does move the labels
    assert np.mean(ours != theirs) < 1e-3  # measured: 0 or 1 voxel differs
    return scores


def test_ddf_round_trip_3d_oblique_anisotropic(tmp_path):
    shape = (30, 26, 18)
    ddf = smooth_ddf(shape, 2.0, seed=1)
    scores = round_trip(tmp_path, blob_labels(shape), OBLIQUE, ddf)
    assert min(scores.values()) >= 0.99, scores


def test_ddf_round_trip_2d_per_slice_stack(tmp_path):
    shape = (40, 48, 6)
    affine = make_affine((1.5, 1.5, 8.0), (0.1, 0.25, -0.6), (90.0, -120.0, 30.0))
    ddf = np.zeros((3, *shape))
    for k in range(shape[2]):  # its own in-plane deformation per slice, none through-plane
        ddf[:2, :, :, k] = smooth_ddf(shape[:2], 2.5, seed=10 + k)
    scores = round_trip(tmp_path, blob_labels(shape), affine, ddf)
    assert min(scores.values()) >= 0.99, scores


def test_ddf_round_trip_2d_nifti(tmp_path):
    shape = (44, 38)
    affine = make_affine((1.3, 0.8, 5.0), (0.0, 0.0, 0.7), (12.0, -7.0, 4.0))
    ddf = smooth_ddf(shape, 2.5, seed=3)
    scores = round_trip(tmp_path, blob_labels(shape), affine, ddf)
    assert min(scores.values()) >= 0.99, scores
    field = sitk.ReadImage(str(tmp_path / "ddf.nii.gz"))
    assert field.GetDimension() == 2 and field.GetNumberOfComponentsPerPixel() == 2


def test_vector_intents_as_itk_reads_them(tmp_path):
    """The measured ITK behaviour the writer relies on (module docstring of drdm.io.image)."""

    def itk_reads(shape, intent):
        ncomp = 3 if shape[2] > 1 else 2
        data = np.zeros((*shape, 1, ncomp), np.float32)
        for c in range(ncomp):  # voxel n holds (10 n + 1, 10 n + 2[, 10 n + 3])
            data[..., 0, c] = np.arange(np.prod(shape)).reshape(shape, order="F") * 10 + c + 1
        image = nib.Nifti1Image(data, OBLIQUE)
        image.header.set_intent(intent)
        nib.save(image, str(tmp_path / "v.nii.gz"))
        field = sitk.ReadImage(str(tmp_path / "v.nii.gz"))
        assert field.GetNumberOfComponentsPerPixel() == ncomp
        return sitk.GetArrayFromImage(field).reshape(-1, ncomp)[:3].tolist()

    # 3D DISPVECT: RAS -> LPS; VECTOR: unchanged
    assert itk_reads((4, 3, 2), 1006) == [[-1, -2, 3], [-11, -12, 13], [-21, -22, 23]]
    assert itk_reads((4, 3, 2), 1007) == [[1, 2, 3], [11, 12, 13], [21, 22, 23]]
    # 2D DISPVECT is scrambled (negation in steps of three values), VECTOR is unchanged
    assert itk_reads((4, 3, 1), 1006) == [[-1, -2], [11, -12], [-21, 22]]
    assert itk_reads((4, 3, 1), 1007) == [[1, 2], [11, 12], [21, 22]]


def test_displacement_file_layout_and_units(tmp_path):
    like = MedicalImage(np.zeros((6, 5, 4), np.float32), OBLIQUE)
    ddf = np.zeros((3, 6, 5, 4))
    ddf[0] = 1.0  # one voxel along array axis i
    write_displacement(tmp_path / "d.nii.gz", ddf, like)
    image = nib.load(str(tmp_path / "d.nii.gz"))
    assert image.shape == (6, 5, 4, 1, 3)
    assert image.header.get_intent()[0] == "displacement vector"
    # RAS millimetres: the first column of the affine
    np.testing.assert_allclose(image.get_fdata()[2, 2, 2, 0], OBLIQUE[:3, 0], atol=1e-5)
    affine_2d = make_affine((1.3, 0.8, 5.0), (0, 0, 0.7))
    like = MedicalImage(np.zeros((6, 5), np.float32), affine_2d)
    write_displacement(tmp_path / "d2.nii.gz", ddf[:2, :, :, 0], like)
    image = nib.load(str(tmp_path / "d2.nii.gz"))
    assert image.shape == (6, 5, 1, 1, 2)
    assert image.header.get_intent()[0] == "vector"
    # LPS millimetres
    np.testing.assert_allclose(image.get_fdata()[2, 2, 0, 0], -affine_2d[:2, 0], atol=1e-5)


@pytest.mark.parametrize("fmt", ["nifti", "npy"])
@pytest.mark.parametrize("shape", [(12, 10), (12, 10, 6)])
def test_read_displacement_round_trip(tmp_path, fmt, shape):
    affine = OBLIQUE if len(shape) == 3 else make_affine((1.3, 0.8, 5.0), (0, 0, 0.7))
    like = MedicalImage(np.zeros(shape, np.float32), affine)
    ddf = smooth_ddf(shape, 0.8, seed=5)
    path = tmp_path / ("d.nii.gz" if fmt == "nifti" else "d.npy")
    write_displacement(path, ddf, like, format=fmt)
    back = read_displacement(path, like=like)
    assert back.dtype == np.float32 and back.shape == ddf.shape
    np.testing.assert_allclose(back, ddf, atol=1e-4)
    if fmt == "npy":
        np.testing.assert_array_equal(np.load(path), ddf.astype(np.float32))
    other = MedicalImage(np.zeros(tuple(s + 1 for s in shape), np.float32), affine)
    with pytest.raises(InputError, match="differs"):
        read_displacement(path, like=other)


def test_read_displacement_of_voxel_vector_files(tmp_path):
    # the pre-release voxel writer (``write_ddf``, removed): vector intent named ``ddf_voxels``,
    # voxels along the array axes; such files stay readable
    ddf = smooth_ddf((8, 9, 5), 1.0, seed=2)
    old = nib.Nifti1Image(np.moveaxis(ddf, 0, -1)[:, :, :, None, :].astype(np.float32), OBLIQUE)
    old.header.set_intent(1007, name="ddf_voxels")
    nib.save(old, tmp_path / "old.nii.gz")
    np.testing.assert_allclose(read_displacement(tmp_path / "old.nii.gz"), ddf, atol=1e-6)
    save(tmp_path / "scalar.nii.gz", np.zeros((4, 4, 4), np.float32), OBLIQUE)
    with pytest.raises(InputError, match="not a displacement field"):
        read_displacement(tmp_path / "scalar.nii.gz")


# ----------------------------------------------------------------------- geometry policy

SFORM = make_affine((1.5, 2.0, 3.0), (0.0, 0.0, 0.3), (10.0, -20.0, 5.0))
QFORM = make_affine((1.5, 2.0, 3.0), (0.0, 0.0, -0.5), (1.0, 2.0, 3.0))


@pytest.mark.parametrize(
    ("qcode", "scode", "used"),
    [
        (1, 1, "sform"),
        (0, 2, "sform"),
        (2, 1, "sform"),
        (1, 2, "qform"),
        (1, 4, "qform"),
        (1, 0, "qform"),
    ],
)
def test_qform_sform_choice_follows_itk(tmp_path, qcode, scode, used):
    path = save(tmp_path / "g.nii.gz", np.zeros((6, 7, 5)), None, QFORM, SFORM, qcode, scode)
    disagree = qcode > 0 and scode > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_image(path)
    messages = [str(w.message) for w in caught if issubclass(w.category, GeometryWarning)]
    assert len(messages) == int(disagree)
    if disagree:
        assert str(path) in messages[0] and used in messages[0] and "\n" not in messages[0]
    np.testing.assert_allclose(image.affine, SFORM if used == "sform" else QFORM, atol=1e-5)
    assert_itk_agrees(image, path)


def test_sform_scales_contradicting_pixdim(tmp_path):
    image = nib.Nifti1Image(np.zeros((6, 7, 5), np.float32), None)
    image.set_qform(SFORM, code=1)
    image.set_sform(SFORM, code=1)
    image.header["pixdim"][1:4] = [1.0, 1.0, 1.0]
    nib.save(image, str(tmp_path / "p.nii"))
    with pytest.warns(GeometryWarning, match="contradict pixdim"):
        read = read_image(tmp_path / "p.nii")
    assert read.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert_itk_agrees(read, tmp_path / "p.nii")


def test_sheared_sform(tmp_path):
    sheared = SFORM.copy()
    sheared[0, 1] += 0.7
    path = save(tmp_path / "s.nii.gz", np.zeros((6, 7, 5)), None, QFORM, sheared, 1, 1)
    with pytest.warns(GeometryWarning, match="shear"):
        image = read_image(path)
    np.testing.assert_allclose(image.affine, QFORM, atol=1e-5)
    assert_itk_agrees(image, path)
    path = save(tmp_path / "n.nii.gz", np.zeros((6, 7, 5)), None, QFORM, sheared, 0, 1)
    with pytest.raises(InputError, match="shear"):
        read_image(path)


def test_no_orientation_uses_itk_default(tmp_path):
    image = nib.Nifti1Image(np.zeros((6, 7, 5), np.float32), None)
    image.header.set_zooms((0.5, 0.6, 2.0))
    nib.save(image, str(tmp_path / "a.nii"))
    with pytest.warns(GeometryWarning, match="no qform or sform"):
        read = read_image(tmp_path / "a.nii")
    assert_itk_agrees(read, tmp_path / "a.nii")


def test_clean_header_gives_no_warning_and_matches_itk(tmp_path):
    path = save(tmp_path / "c.nii.gz", np.zeros((6, 7, 5), np.int16), OBLIQUE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(path)
    np.testing.assert_allclose(image.affine, OBLIQUE, atol=1e-5)
    assert image.spacing == pytest.approx((1.2, 0.9, 2.5))
    assert_itk_agrees(image, path)


@pytest.mark.parametrize("shape", [(9, 8), (9, 8, 1)])
def test_2d_nifti(tmp_path, shape):
    affine = make_affine((1.3, 0.8, 5.0), (0, 0, 0.7), (3.0, 4.0, 5.0))
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    image = read_image(save(tmp_path / "in.nii.gz", data, affine))
    assert image.ndim == 2 and image.shape == (9, 8) and image.squeezed == (len(shape) == 3)
    assert image.spacing == pytest.approx((1.3, 0.8))
    write_image(tmp_path / "out.nii.gz", image.array * 2, image)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    assert out.shape == shape and out.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(out.dataobj), data * 2)
    if len(shape) == 2:
        assert_itk_agrees(image, tmp_path / "out.nii.gz")


def test_2d_nifti_with_a_degenerate_third_column(tmp_path):
    affine = make_affine((1.3, 0.8, 1.0), (0, 0, 0.7), (3.0, 4.0, 0.0))
    sform = affine.copy()
    sform[:3, 2] = 0.0  # as some tools write 2D files
    path = save(tmp_path / "flat.nii.gz", np.zeros((9, 8)), None, affine, sform, 0, 2)
    with pytest.warns(GeometryWarning, match="plane normal"):
        image = read_image(path)
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    with pytest.raises(RuntimeError, match="orthonormal"):
        sitk.ReadImage(str(path))  # ITK is stricter here


# ------------------------------------------------------------------------ kinds, writing


def test_written_nifti_header(tmp_path):
    like = MedicalImage(np.zeros((6, 7, 5), np.float32), OBLIQUE)
    write_image(tmp_path / "o.nii.gz", np.ones((6, 7, 5)), like)
    header = nib.load(str(tmp_path / "o.nii.gz")).header
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
    np.testing.assert_allclose(header.get_qform(), header.get_sform(), atol=1e-5)
    np.testing.assert_allclose(header.get_sform(), OBLIQUE, atol=1e-5)
    assert header.get_data_dtype() == np.float32
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "x.nii.gz", np.ones((6, 7, 4)), like)
    sheared = OBLIQUE.copy()
    sheared[0, 1] += 0.5
    with pytest.raises(ValueError, match="orthogonal"):
        write_image(tmp_path / "x.nii.gz", np.ones((6, 7, 5)), MedicalImage(like.array, sheared))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32])
def test_label_integrity(tmp_path, dtype):
    data = blob_labels((10, 9, 7)).astype(dtype)
    data[0, 0, 0] = 200 if dtype != np.uint8 else 7
    label = read_image(save(tmp_path / "l.nii.gz", data, OBLIQUE), kind="label")
    assert label.array.dtype == dtype
    np.testing.assert_array_equal(label.array, data)
    write_image(tmp_path / "o.nii.gz", label.array[::-1].copy(), label, kind="label")
    out = nib.load(str(tmp_path / "o.nii.gz"))
    assert out.get_data_dtype() == dtype
    np.testing.assert_array_equal(np.asarray(out.dataobj), data[::-1])


def test_wide_and_boolean_label_dtypes(tmp_path):
    wide = MedicalImage(np.zeros((4, 5, 6), np.int64), OBLIQUE)
    write_image(tmp_path / "w.nii.gz", np.full((4, 5, 6), 7), wide, kind="label")
    assert nib.load(str(tmp_path / "w.nii.gz")).get_data_dtype() == np.int64  # kept (issue 19)
    write_image(tmp_path / "w.mha", np.full((4, 5, 6), 7), wide, kind="label")
    assert read_image(tmp_path / "w.mha", kind="label").array.dtype == np.int64
    huge = np.full((4, 5, 6), 2**40)
    write_image(tmp_path / "h.nii.gz", huge, wide, kind="label")
    np.testing.assert_array_equal(read_image(tmp_path / "h.nii.gz", kind="label").array, huge)
    flags = MedicalImage(np.zeros((4, 5, 6), bool), OBLIQUE)
    write_image(tmp_path / "b.nii.gz", np.ones((4, 5, 6), bool), flags, kind="label")
    assert nib.load(str(tmp_path / "b.nii.gz")).get_data_dtype() == np.uint8


def test_float_stored_labels(tmp_path):
    data = blob_labels((10, 9, 7)).astype(np.float32)
    label = read_image(save(tmp_path / "l.nii.gz", data, OBLIQUE), kind="label")
    assert label.array.dtype == np.uint8
    np.testing.assert_array_equal(label.array, data)
    bad = data.copy()
    bad[1, 1, 1] = 1.5
    with pytest.raises(InputError, match="non-integer") as error:
        read_image(save(tmp_path / "b.nii.gz", bad, OBLIQUE), kind="label")
    assert "b.nii.gz" in str(error.value) and "\n" not in str(error.value)
    negative = data.astype(np.int16)
    negative[2, 2, 2] = -1
    with pytest.raises(InputError, match="negative"):
        read_image(save(tmp_path / "n.nii.gz", negative, OBLIQUE), kind="label")


def test_image_dtypes(tmp_path):
    data = np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5)
    image = read_image(save(tmp_path / "i.nii.gz", data, OBLIQUE))
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, data)
    wide = read_image(save(tmp_path / "d.nii.gz", data.astype(np.float64), OBLIQUE))
    assert wide.array.dtype == np.float64
    with pytest.raises(ValueError, match="kind"):
        read_image(tmp_path / "i.nii.gz", kind="mask")


# ---------------------------------------------------------------------------- bad input


def _bad_file(tmp_path, case):
    """The file of one bad-input case and the message expected for it."""
    if case == "missing":
        return tmp_path / "missing.nii.gz", "no such file"
    if case == "folder-without-dicom":
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "notes.txt").write_text("x")
        return tmp_path / "folder", "no DICOM series"
    if case == "truncated":
        good = save(tmp_path / "good.nii.gz", np.random.default_rng(0).random((20, 20, 8)), OBLIQUE)
        blob = good.read_bytes()
        (tmp_path / "trunc.nii.gz").write_bytes(blob[: len(blob) // 2])
        return tmp_path / "trunc.nii.gz", "cannot read"
    if case == "junk":
        (tmp_path / "junk.nii").write_bytes(b"not a nifti file at all" * 20)
        return tmp_path / "junk.nii", "cannot read"
    if case == "png":
        (tmp_path / "image.png").write_bytes(b"\x89PNG")
        return tmp_path / "image.png", "unsupported file type"
    if case in ("nan", "inf", "huge"):
        values = np.zeros((6, 6, 6), np.float64 if case == "huge" else np.float32)
        values[1, 2, 3] = {"nan": np.nan, "inf": np.inf, "huge": 1e300}[case]
        match = "float32 range" if case == "huge" else "NaN or Inf"
        return save(tmp_path / f"{case}.nii.gz", values, OBLIQUE), match
    shapes = {"thin": ((1, 6, 6), "at least 2 voxels"), "line": ((6,), "1D"),
              "vector": ((5, 5, 5, 2, 3), "5D")}  # fmt: skip
    shape, match = shapes[case]
    return save(tmp_path / f"{case}.nii.gz", np.zeros(shape), OBLIQUE), match


@pytest.mark.parametrize(
    "case",
    ["missing", "folder-without-dicom", "truncated", "junk", "png", "nan", "inf", "huge", "thin",
     "line", "vector"],
)  # fmt: skip
def test_bad_inputs(tmp_path, case):
    path, match = _bad_file(tmp_path, case)
    with pytest.raises(InputError, match=match) as error:
        read_image(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message


def test_values_near_the_float32_limit_are_accepted_as_images(tmp_path):
    values = np.zeros((6, 6, 6), np.float64)
    values[0, 0, 0] = 3e38
    assert read_image(save(tmp_path / "big.nii.gz", values, OBLIQUE)).array.max() == 3e38


def test_time_series_frames(tmp_path):
    series = np.stack([np.full((6, 7, 4), t, np.float32) for t in range(5)], axis=-1)
    path = save(tmp_path / "cine.nii.gz", series, OBLIQUE)
    with pytest.raises(InputError, match="choose one with frame ") as error:
        read_image(path)
    assert "5 frames" in str(error.value) and str(path) in str(error.value)
    with pytest.raises(InputError, match="out of range"):
        read_image(path, frame=5)
    frame = read_image(path, frame=3)
    assert frame.shape == (6, 7, 4) and np.all(frame.array == 3)
    np.testing.assert_allclose(frame.affine, OBLIQUE, atol=1e-5)
    single = read_image(save(tmp_path / "one.nii.gz", series[..., :1], OBLIQUE))
    assert single.shape == (6, 7, 4)  # a single time point needs no --frame
    labels = read_image(save(tmp_path / "lab.nii.gz", series.astype(np.uint8), OBLIQUE), "label", 2)
    assert labels.array.dtype == np.uint8 and np.all(labels.array == 2)


def test_atomic_writes(tmp_path, monkeypatch):
    like = MedicalImage(np.zeros((6, 7, 5), np.float32), OBLIQUE)
    target = tmp_path / "out"
    target.mkdir()

    def broken_save(image, filename, *args):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(target / "a.nii.gz", like.array, like)
    with pytest.raises(OSError, match="disk full"):
        write_displacement(target / "d.nii.gz", np.zeros((3, 6, 7, 5)), like)
    monkeypatch.setattr(sitk, "WriteImage", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(target / "a.mha", like.array, like)

    def broken_np_save(handle, array):
        handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_np_save)
    with pytest.raises(OSError, match="disk full"):
        write_displacement(target / "d.npy", np.zeros((3, 6, 7, 5)), like, format="npy")
    assert os.listdir(target) == []


def test_atomic_write_is_the_one_writer_of_whole_files(tmp_path, monkeypatch):
    """``atomic_write`` (text as UTF-8, or bytes) replaces the file whole; a failing write
    (a full disk names no file) leaves the old file and no temporary, and names the target."""
    from drdm.io import files

    target = tmp_path / "a.json"
    files.atomic_write(target, "é\n")
    assert target.read_bytes() == "é\n".encode()
    files.atomic_write(target, b"\x00\x01", fsync=True)
    assert target.read_bytes() == b"\x00\x01"

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left") as info:
        files.atomic_write(target, b"new", fsync=True)
    assert info.value.filename == str(target)
    assert target.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["a.json"]


# --------------------------------------------------------------- other formats, DICOM


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
@pytest.mark.parametrize("shape", [(9, 8, 6), (9, 8), (9, 8, 1)])
def test_sitk_formats_round_trip(tmp_path, suffix, shape):
    affine = OBLIQUE if len(shape) == 3 else make_affine((1.3, 0.8, 5.0), (0, 0, 0.7), (3, 4, 5))
    data = blob_labels(shape).astype(np.int16)
    label = read_image(save(tmp_path / "l.nii.gz", data, affine), kind="label")
    write_image(tmp_path / f"l{suffix}", label.array, label, kind="label")
    written = sitk.ReadImage(str(tmp_path / f"l{suffix}"))
    assert written.GetPixelID() == sitk.sitkInt16
    assert written.GetDimension() == len(shape)
    back = read_image(tmp_path / f"l{suffix}", kind="label")
    assert back.squeezed == label.squeezed
    np.testing.assert_array_equal(back.array, label.array)
    if len(shape) == 2:  # ITK's 2D geometry has no third axis: compare the in-plane part
        np.testing.assert_allclose(
            back.affine[:2, [0, 1, 3]], label.affine[:2, [0, 1, 3]], atol=1e-4
        )
    else:
        np.testing.assert_allclose(back.affine, label.affine, atol=1e-4)
    if not label.squeezed:
        assert_itk_agrees(back, tmp_path / "l.nii.gz")  # the grid ITK sees in the NIfTI
    if suffix == ".mha" and len(shape) == 3:  # reading the two-file variants too
        sitk.WriteImage(written, str(tmp_path / "two.mhd"))
        two = read_image(tmp_path / "two.mhd", kind="label")
        np.testing.assert_array_equal(two.array, label.array)
        np.testing.assert_allclose(two.affine, label.affine, atol=1e-4)
        blob = (tmp_path / f"l{suffix}").read_bytes()
        (tmp_path / "cut.mha").write_bytes(blob[: len(blob) - 50])
        with pytest.raises(InputError, match="cut.mha: cannot read"):
            read_image(tmp_path / "cut.mha")
    write_image(tmp_path / f"i{suffix}", label.array, back)
    image = read_image(tmp_path / f"i{suffix}")
    assert image.array.dtype == np.float32
    with pytest.raises(ValueError, match="cannot write"):
        write_image(tmp_path / "x.mhd", label.array, back)


def write_dicom_series(folder: Path, volume: np.ndarray, affine: np.ndarray) -> None:
    """A minimal DICOM series of ``volume`` (i, j, k) on ``affine`` (RAS), via SimpleITK."""
    folder.mkdir()
    image = sitk.GetImageFromArray(volume.T.copy())
    like = MedicalImage(volume, affine)
    geometry = like.itk_geometry()
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    direction = np.asarray(geometry.direction).reshape(3, 3)
    orientation = "\\".join(f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.shape[2]):
        slice_ = image[:, :, k]
        slice_.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.42")
        slice_.SetMetaData("0008|0060", "MR")
        slice_.SetMetaData("0020|0037", orientation)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
        slice_.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)


def test_dicom_series(tmp_path):
    volume = np.arange(8 * 7 * 4, dtype=np.int16).reshape(8, 7, 4)
    affine = make_affine((0.7, 0.8, 2.5), (0.0, 0.0, 0.2), (-10.0, 5.0, 3.0))
    write_dicom_series(tmp_path / "series", volume, affine)
    image = read_image(tmp_path / "series")
    np.testing.assert_array_equal(image.array, volume)
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    label = read_image(tmp_path / "series", kind="label")
    assert np.issubdtype(label.array.dtype, np.integer)


# ------------------------------------------------------------------- grids and pairs


def test_check_same_grid_and_resample(tmp_path):
    image = MedicalImage(np.zeros((10, 9, 6), np.float32), OBLIQUE, tmp_path / "img.nii.gz")
    same = MedicalImage(np.zeros((10, 9, 6), np.uint8), OBLIQUE + 1e-6, tmp_path / "lab.nii.gz")
    check_same_grid(image, same)
    shifted = OBLIQUE.copy()
    shifted[:3, 3] += OBLIQUE[:3, :3] @ np.array([2.0, 0.0, 0.0])  # two voxels along i
    moved = MedicalImage(blob_labels((10, 9, 6)), shifted, tmp_path / "lab.nii.gz")
    with pytest.raises(InputError, match="--resample-label") as error:
        check_same_grid(image, moved, resample_option="--resample-label")
    assert "img.nii.gz" in str(error.value) and "lab.nii.gz" in str(error.value)
    with pytest.raises(InputError, match="resample_label_to") as error:  # no option to name
        check_same_grid(image, moved)
    assert "--resample-label" not in str(error.value)
    wrong = MedicalImage(np.zeros((10, 9, 5), np.uint8), OBLIQUE, tmp_path / "lab.nii.gz")
    with pytest.raises(InputError, match="shape"):
        check_same_grid(image, wrong)
    resampled = resample_label_to(image, moved)
    check_same_grid(image, resampled)
    assert resampled.array.dtype == np.uint8
    np.testing.assert_array_equal(resampled.array[2:], moved.array[:-2])
    assert not resampled.array[:2].any()
    # a label on a grid twice as fine comes back to the coarse one
    fine_affine = OBLIQUE.copy()
    fine_affine[:3, :3] /= 2.0
    fine_affine[:3, 3] -= fine_affine[:3, :3] @ np.array([0.5, 0.5, 0.5])
    coarse = blob_labels((10, 9, 6))
    fine = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    back = resample_label_to(image, MedicalImage(fine, fine_affine))
    np.testing.assert_array_equal(back.array, coarse)


def test_real_sample(shared_data):
    path = shared_data / "samples" / "mnms_OpenDataset_162867.nii.gz"
    image = read_image(path)
    assert image.shape == (256, 256) and image.array.dtype == np.float64
    assert_itk_agrees(image, path)
