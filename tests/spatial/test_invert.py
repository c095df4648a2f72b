"""Field inversion (drdm.spatial.invert_field): identities, accuracy inside the grid, the
closed-form solve, the convergence test, slice-wise fields, and one inverse per record."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import smooth_field, smooth_image
from drdm.spatial import identity_grid, invert_field, invert_field_report, warp
from drdm.spatial._invert import _solve


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def residual_inside(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``|v + u(x + v)|`` (largest component) at the points whose source lies in the grid."""
    r = v + warp(u[None], v[None], "linear", "border")[0]
    pos = identity_grid(u.shape[1:], dtype=u.dtype) + v
    inside = torch.ones(u.shape[1:], dtype=torch.bool)
    for i, n in enumerate(u.shape[1:]):
        inside &= (pos[i] >= 0) & (pos[i] <= n - 1)
    return r.abs().amax(0)[inside]


def affine_field(size, matrix, dtype=torch.float32):
    """``u(x) = (A - I)(x - c)``: the pull-back field of the affine map ``x -> A (x - c) + c``."""
    grid = identity_grid(size, dtype=torch.float64)
    centre = torch.tensor([(n - 1) / 2 for n in size], dtype=torch.float64)
    rel = grid - centre.view(-1, *[1] * len(size))
    a = torch.as_tensor(matrix, dtype=torch.float64) - torch.eye(len(size), dtype=torch.float64)
    return torch.einsum("ij,j...->i...", a, rel).to(dtype), rel, centre


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_convention_zero_field_inverts_to_zero(dtype):
    for shape in ((2, 9, 11), (3, 5, 6, 7)):
        v, report = invert_field_report(torch.zeros(shape, dtype=dtype))
        assert v.dtype == dtype and v.shape == shape and not v.any()
        assert report.steps == 0 and report.outside == 0


@pytest.mark.parametrize(
    "matrix",
    [
        [[2.0, 0.0], [0.0, 2.0]],  # zoom-out by 0.5: grad u = 1, the fixed point fails here
        [[2.5, 0.0], [0.0, 2.5]],  # BigAug's smallest scale 0.4: grad u = 1.5
        [[math.cos(0.35), -math.sin(0.35)], [math.sin(0.35), math.cos(0.35)]],  # 20 degrees
        [[1.2, 0.3], [-0.1, 0.9]],
    ],
)
def test_affine_fields_are_inverted_exactly(matrix):
    size = (33, 29)
    u, rel, _ = affine_field(size, matrix)
    inverse = torch.linalg.inv(torch.as_tensor(matrix, dtype=torch.float64))
    expected = torch.einsum("ij,j...->i...", inverse - torch.eye(2, dtype=torch.float64), rel)
    v, report = invert_field_report(u)
    inside = (rel + expected).abs().amax(0) <= 14  # inverse source inside the grid
    assert (v.double() - expected).abs().amax(0)[inside].max() < 1e-4
    assert report.unconverged == 0 and report.steps <= 2


def test_3d_affine_field_is_inverted_exactly():
    matrix = [[1.1, 0.1, 0.0], [0.0, 0.9, 0.2], [-0.1, 0.0, 1.3]]
    u, rel, _ = affine_field((12, 14, 10), matrix, torch.float64)
    inverse = torch.linalg.inv(torch.as_tensor(matrix, dtype=torch.float64))
    expected = torch.einsum("ij,j...->i...", inverse - torch.eye(3, dtype=torch.float64), rel)
    v, report = invert_field_report(u)
    src = rel + expected + torch.tensor([5.5, 6.5, 4.5], dtype=torch.float64).view(3, 1, 1, 1)
    upper = torch.tensor([11.0, 13.0, 9.0], dtype=torch.float64).view(3, 1, 1, 1)
    inside = ((src >= 0) & (src <= upper)).all(0)
    assert (v - expected).abs().amax(0)[inside].max() < 1e-9
    assert report.unconverged == 0


@pytest.mark.parametrize("ndim", [2, 3])
def test_smooth_fields_meet_the_accuracy_target_inside_the_grid(ndim):
    size = (96, 80) if ndim == 2 else (30, 34, 28)
    amplitude = 6.0 if ndim == 2 else 2.0  # smooth and fold-free
    u = smooth_field((1, ndim, *size), amplitude, gen(4 + ndim), dtype=torch.float32)[0]
    v, report = invert_field_report(u)
    r = residual_inside(u, v)
    assert torch.quantile(r.double(), 0.99) <= 1e-4
    assert report.unconverged == 0
    assert report.max_residual == pytest.approx(float(r.max()), abs=5e-6)
    assert report.points == math.prod(size)
    assert v.dtype == u.dtype and v.shape == u.shape
    # a round trip restores an image where the deformation kept it in view
    image = smooth_image(size, gen(1), dtype=torch.float32)
    back = warp(warp(image, u[None]), v[None])
    inner = (..., *[slice(10, -10)] * ndim)
    error = (back - image)[inner].abs().max()
    assert error < 0.2 * (warp(image, u[None]) - image)[inner].abs().max()


def test_float64_converges_to_a_tighter_tolerance():
    u = smooth_field((1, 2, 48, 40), 3.0, gen(2))[0]
    v = invert_field(u, tolerance=1e-10)
    assert residual_inside(u, v).max() < 1e-10


def test_closed_form_solve_matches_torch_linalg_solve():
    for nd in (2, 3):
        a = torch.eye(nd, dtype=torch.float64) + 0.4 * torch.randn(500, nd, nd, generator=gen(nd))
        a = a[torch.linalg.det(a).abs() > 0.05]
        r = torch.randn(a.shape[0], nd, generator=gen(10 + nd), dtype=torch.float64)
        x, det = _solve(a, r)
        torch.testing.assert_close(x, torch.linalg.solve(a, r), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(det, torch.linalg.det(a))


def test_convergence_test_ignores_points_pushed_out_of_the_grid():
    # zoom-in by 1.6 about the centre: the border of the original leaves the field of view,
    # where u only continues by its edge values and v + u(x + v) = 0 has no solution
    u, _, _ = affine_field((40, 40), [[1 / 1.6, 0.0], [0.0, 1 / 1.6]])
    v, report = invert_field_report(u)
    assert report.outside > 0.3 * report.points
    assert report.unconverged == 0 and report.steps <= 2
    assert residual_inside(u, v).max() < 1e-4


def test_fields_with_folds_end_and_report_what_did_not_converge():
    u = smooth_field((1, 2, 40, 40), 14.0, gen(11), dtype=torch.float32)[0]  # folds
    v, report = invert_field_report(u, iterations=30)
    assert report.steps <= 30 and torch.isfinite(v).all()
    r = residual_inside(u, v)
    # the report's count, up to points at float32's precision near the tolerance
    assert int((r >= 2e-5).sum()) <= report.unconverged <= int((r >= 5e-6).sum())
    assert (r < 1e-4).float().mean() > 0.95  # where a fold leaves several solutions, or none


def test_slicewise_fields_stay_in_plane_and_batches_invert_per_element():
    w = torch.zeros(3, 12, 14, 4)
    w[:2] = smooth_field((1, 3, 12, 14, 4), 1.5, gen(2), dtype=torch.float32)[0, :2]
    v = invert_field(w, slice_axis=2)
    assert not v[2].any()
    for k in range(4):  # each slice is the 2D inverse of its in-plane field
        torch.testing.assert_close(v[:2, ..., k], invert_field(w[:2, ..., k]))
    with pytest.raises(ValueError, match="not slice-wise along axis 0"):
        invert_field(w, slice_axis=0)
    with pytest.raises(ValueError, match="3D fields"):
        invert_field(w[:2, ..., 0], slice_axis=2)


def test_a_3d_field_with_a_zero_component_is_inverted_in_3d():
    # a genuinely 3D field may have a zero component (here: no displacement along axis 2, but
    # the in-plane displacement varies along it); without slice_axis it is inverted in 3D, the
    # slice axis is never read from the values
    w = torch.zeros(3, 12, 14, 6)
    w[:2] = smooth_field((1, 3, 12, 14, 6), 1.0, gen(4), dtype=torch.float32)[0, :2]
    v, report = invert_field_report(w)
    assert report.unconverged == 0
    assert not v[2].any()  # its third row of the Jacobian is zero: so is the inverse's
    assert residual_inside(w, v).max() < 1e-3
    u = smooth_field((1, 2, 20, 20), 2.0, gen(9), dtype=torch.float32)[0]
    both = invert_field(torch.stack([u, -u]))
    torch.testing.assert_close(both[0], invert_field(u))
    torch.testing.assert_close(both[1], invert_field(-u))


def test_singleton_axis_and_bad_input():
    u = torch.zeros(3, 10, 12, 1)
    u[0] = 0.5
    u[2] = 0.25  # along an axis of length 1: u is constant there
    v = invert_field(u)
    torch.testing.assert_close(v, -u)
    with pytest.raises(TypeError, match="floating"):
        invert_field(torch.zeros(2, 5, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="ndim"):
        invert_field(torch.zeros(4, 5, 5))
    with pytest.raises(ValueError, match="tolerance"):
        invert_field(torch.zeros(2, 5, 5), tolerance=0.0)


def test_invert_record_inverts_each_record_once(monkeypatch):
    import drdm.adapters.records as records

    calls = []

    def counting(ddf, iterations, tolerance, slice_axis=None):
        calls.append(ddf.shape)
        return invert_field(ddf, iterations, tolerance, slice_axis=slice_axis)

    monkeypatch.setattr(records, "invert_field", counting)
    monkeypatch.setattr(records, "_RECENT_INVERSES", ())
    u = smooth_field((1, 2, 24, 20), 2.0, gen(3), dtype=torch.float32)[0]
    first = records.invert_record(u)
    again = records.invert_record(u.clone())  # an equal copy, as Invertd hands each key
    assert len(calls) == 1
    torch.testing.assert_close(first, again)
    first.add_(1.0)  # the caller's copy, not what is remembered
    torch.testing.assert_close(records.invert_record(u), again)
    records.invert_record(u, tolerance=1e-3)  # other arguments: computed
    records.invert_record(u + 1e-3)  # another field: computed
    assert len(calls) == 3


def test_monai_invertd_inverts_one_field_for_every_key(monkeypatch):
    pytest.importorskip("monai")
    from monai.data import MetaTensor
    from monai.transforms import Compose, Invertd

    import drdm.adapters.records as records
    from drdm.adapters.monai import DRDMDeformd
    from helpers import RandomSmoothSampler

    calls = []

    def counting(ddf, iterations, tolerance, slice_axis=None):
        calls.append(ddf.shape)
        return invert_field(ddf, iterations, tolerance, slice_axis=slice_axis)

    monkeypatch.setattr(records, "invert_field", counting)
    monkeypatch.setattr(records, "_RECENT_INVERSES", ())
    keys = ["image", "label", "other"]
    deform = DRDMDeformd(keys, RandomSmoothSampler(amplitude=2.0), label_keys=["label"], seed=1)
    pipeline = Compose([deform])
    image = torch.rand(1, 32, 32, generator=gen(0))
    data = {k: MetaTensor(image.clone(), affine=torch.eye(4)) for k in keys}
    data["label"] = MetaTensor((image > 0.5).long(), affine=torch.eye(4))
    out = pipeline(data)
    inverted = Invertd(keys, transform=pipeline, orig_keys=keys, nearest_interp=False)(out)
    assert len(calls) == 1  # three keys, one record, one inverse
    pipeline.inverse(out)
    assert len(calls) == 1
    assert inverted["image"].shape == image.shape


def test_points_at_float32_precision_stop_early():
    # BigAug's zoom-out by 0.4 on a 160 grid: displacements up to 120 voxels, where float32
    # coordinates carry ~3e-5 voxels of rounding; the default tolerance 1e-5 is below it
    u, _, _ = affine_field((160, 160), [[2.5, 0.0], [0.0, 2.5]])
    u = u + smooth_field((1, 2, 160, 160), 2.0, gen(5), dtype=torch.float32)[0]
    v, report = invert_field_report(u)
    assert report.steps < 15 and report.unconverged == 0
    assert torch.quantile(residual_inside(u, v).double(), 0.99) <= 1e-4
