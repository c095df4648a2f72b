"""Interpolation kernels and paddings of drdm.spatial.sample / warp beyond linear and cubic:
``reflection`` padding, the Lanczos windowed sinc and the Gaussian kernel (issue 19, item 8:
the names MONAI and TorchIO users pass)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import smooth_field
from drdm.spatial import (
    INTERP_MODES,
    PADDINGS,
    identity_grid,
    sample,
    warp,
    warp_labels,
    warp_labels_onehot,
)
from drdm.spatial._sample import _sample_separable, reflect

SIZES = {2: (7, 9), 3: (5, 6, 7)}


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def far_coords(size, gen, points=(4, 5)):
    """Random voxel coordinates up to one image extent outside the image on every side."""
    ndim = len(size)
    extent = torch.tensor(size, dtype=torch.float64).view(1, ndim, *[1] * len(points))
    unit = torch.rand(1, ndim, *points, generator=gen, dtype=torch.float64)
    return unit * 3 * extent - extent


def test_convention_vocabulary():
    assert INTERP_MODES == ("linear", "cubic", "lanczos", "gaussian", "nearest")
    assert PADDINGS == ("zeros", "border", "reflection")
    image = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="reflection"):
        warp(image, torch.zeros(1, 2, 4, 4), padding="mirror")
    with pytest.raises(ValueError, match="lanczos"):
        warp(image, torch.zeros(1, 2, 4, 4), mode="area")


def test_convention_reflect_about_edge_voxel_centres():
    index = torch.arange(-7, 11)
    # size 4: ... 3 2 1 | 0 1 2 3 | 2 1 0 1 2 3 ...  (period 6, the edge voxel not repeated)
    expected = [1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert reflect(index, 4).tolist() == expected
    assert reflect(torch.tensor([-0.5, 3.25, 4.0]), 4).tolist() == [0.5, 2.75, 2.0]
    assert reflect(torch.arange(-3, 4), 1).tolist() == [0] * 7


def test_reflection_warp_of_a_row_by_hand():
    row = torch.arange(4.0).view(1, 1, 1, 4)  # 0 1 2 3
    ddf = torch.zeros(1, 2, 1, 4)
    ddf[:, 1] = -2.0  # I(x - 2): positions -2 -1 0 1 -> mirrored 2 1 0 1
    for mode in ("linear", "cubic", "lanczos", "nearest"):
        out = warp(row, ddf, mode, "reflection")
        torch.testing.assert_close(out.flatten(), torch.tensor([2.0, 1.0, 0.0, 1.0]))


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("mode", ["linear", "cubic", "lanczos", "gaussian", "nearest"])
def test_reflection_equals_sampling_the_mirrored_image(ndim, mode, gen):
    # reflection padding == sampling an image extended by hand with mirror copies (np.pad
    # "reflect": about the edge voxel centres), for grid_sample's modes and the gather path
    size = SIZES[ndim]
    image = torch.rand(2, 2, *size, generator=gen, dtype=torch.float64)
    coords = far_coords(size, gen, (4, 5, 3)[:ndim])
    pad = 2 * max(size)
    widths = [(0, 0), (0, 0)] + [(pad, pad)] * ndim
    mirrored = torch.from_numpy(np.pad(image.numpy(), widths, mode="reflect"))
    expected = sample(mirrored, coords + pad, mode, "zeros")
    got = sample(image, coords, mode, "reflection")
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_2d_grid_sample_and_the_gather_path_agree(padding, gen):
    # 2D cubic runs through grid_sample's bicubic, 3D cubic through the gather path: the two
    # must treat every padding alike (grid_sample reflects each bicubic tap index)
    image = torch.rand(2, 3, 9, 11, generator=gen, dtype=torch.float64)
    coords = far_coords((9, 11), gen, (6, 7)).expand(2, -1, -1, -1)
    torch.testing.assert_close(
        _sample_separable(image, coords, "cubic", padding),
        sample(image, coords, "cubic", padding),
        atol=1e-12,
        rtol=0,
    )
    # a 3D volume with no displacement along its last axis is its slices' 2D warp (for the
    # interpolating kernels: the Gaussian also smooths along the third axis)
    volume = torch.rand(1, 1, 9, 11, 3, generator=gen, dtype=torch.float64)
    ddf = torch.randn(1, 3, 9, 11, 3, generator=gen, dtype=torch.float64) * 6
    ddf[:, 2] = 0
    for mode in ("linear", "cubic", "lanczos"):
        out = warp(volume, ddf, mode, padding)
        for k in range(3):
            plane = warp(volume[..., k], ddf[:, :2, ..., k], mode, padding)
            torch.testing.assert_close(out[..., k], plane, atol=1e-12, rtol=0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_reflection_label_warps_agree(ndim, gen):
    size = (17, 33) if ndim == 2 else (9, 9, 17)
    labels = torch.randint(0, 5, (1, 1, *size), generator=gen)
    ddf = torch.randint(-80, 81, (1, ndim, *size), generator=gen).float() / 8  # exact weights
    onehot = warp_labels(labels, ddf, "onehot", "reflection")
    assert torch.equal(warp_labels_onehot(labels, ddf, "reflection"), onehot)
    nearest = warp_labels(labels, ddf, "nearest", "reflection")
    grid = identity_grid(size, dtype=torch.float64)[None] + ddf.double()
    mirrored = [reflect(grid[:, a], size[a]).round().long() for a in range(ndim)]
    assert torch.equal(nearest[0, 0], labels[0, 0][tuple(m[0] for m in mirrored)])
    assert 0 < (onehot != labels).float().mean() < 1  # moved, and never padded with 0 alone


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("mode", ["lanczos", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_convention_identity_and_integer_shift(ndim, mode, dtype, gen):
    size = SIZES[ndim]
    image = torch.rand(2, 2, *size, generator=gen, dtype=dtype)
    zero = torch.zeros(2, ndim, *size, dtype=dtype)
    out = warp(image, zero, mode, "border")
    assert out.dtype == dtype and out.shape == image.shape
    if mode == "lanczos":  # an interpolating kernel: exact at the voxels
        torch.testing.assert_close(out, image, atol=1e-6, rtol=0)
        shift = zero.clone()
        shift[:, -1] = 2.0
        moved = warp(image, shift, mode, "zeros")
        torch.testing.assert_close(moved[..., :-2], image[..., 2:], atol=1e-6, rtol=0)
        assert torch.all(moved[..., -2:] == 0)
    else:  # a smoothing kernel: a weighted mean of the neighbours, not the voxel itself
        assert (out - image).abs().max() > 0.05
        assert out.min() >= image.min() - 1e-6 and out.max() <= image.max() + 1e-6


@pytest.mark.parametrize("ndim", [2, 3])
def test_polynomials(ndim, gen):
    # inside the image (taps never reach the edge): normalised weights keep constants exactly
    # (ITK's Lanczos does not: 0.4 % ripple in 3D), the Gaussian linear ramps too (a symmetric
    # kernel, up to its cut-off); Lanczos interpolates a smooth image far better than linear
    size = (24, 26) if ndim == 2 else (14, 15, 16)
    grid = identity_grid(size, dtype=torch.float64)[None]
    ramp = (
        grid * torch.tensor([0.3, -0.2, 0.1][:ndim], dtype=torch.float64).view(1, -1, *[1] * ndim)
    ).sum(1, keepdim=True)
    ddf = smooth_field((1, ndim, *size), 1.5, gen)
    inner = (slice(None), slice(None)) + (slice(6, -6),) * ndim
    ones = torch.ones(1, 1, *size, dtype=torch.float64)
    torch.testing.assert_close(warp(ones, ddf, "gaussian")[inner], ones[inner], atol=1e-12, rtol=0)
    torch.testing.assert_close(warp(ones, ddf, "lanczos")[inner], ones[inner], atol=1e-12, rtol=0)
    expected = (
        ramp
        + (
            ddf
            * torch.tensor([0.3, -0.2, 0.1][:ndim], dtype=torch.float64).view(1, -1, *[1] * ndim)
        ).sum(1, keepdim=True)
    )[inner]
    torch.testing.assert_close(warp(ramp, ddf, "gaussian")[inner], expected, atol=2e-4, rtol=0)
    wave = torch.cos(0.6 * grid.sum(1, keepdim=True))
    truth = torch.cos(0.6 * (grid + ddf).sum(1, keepdim=True))[inner]
    err_lanczos = (warp(wave, ddf, "lanczos")[inner] - truth).abs().max()
    err_linear = (warp(wave, ddf, "linear")[inner] - truth).abs().max()
    assert err_lanczos < 0.1 * err_linear


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("mode", ["lanczos", "gaussian"])
def test_matches_simpleitk(ndim, mode):
    # TorchIO's "lanczos" / "gaussian" are SimpleITK's sitkLanczosWindowedSinc / sitkGaussian:
    # resample one random image by one affine map with both. Lanczos: SimpleITK's result
    # divided by its result on a constant image (its weights' sum; ours are normalised),
    # everywhere inside (ITK repeats the edge voxels: our "border"). Gaussian: equal away from
    # the edges (ITK renormalises over the voxels inside the image instead)
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(ndim)
    shape = (30, 34) if ndim == 2 else (18, 20, 22)
    array = rng.random(shape)
    image = sitk.GetImageFromArray(array)
    matrix = np.eye(ndim) + rng.normal(0, 0.05, (ndim, ndim))
    shift = rng.normal(0, 0.7, ndim)
    transform = sitk.AffineTransform(ndim)
    transform.SetMatrix(matrix.ravel().tolist())
    transform.SetTranslation(shift.tolist())
    kind = {"lanczos": sitk.sitkLanczosWindowedSinc, "gaussian": sitk.sitkGaussian}[mode]
    expected = sitk.GetArrayFromImage(sitk.Resample(image, image, transform, kind, 0.0))
    flat = sitk.GetImageFromArray(np.ones(shape))
    weight_sum = sitk.GetArrayFromImage(sitk.Resample(flat, flat, transform, kind, 0.0))
    if mode == "lanczos":
        assert np.abs(weight_sum - 1).max() > 1e-3  # ITK's ripple, which ours has not
        expected = expected / np.where(weight_sum == 0, 1, weight_sum)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    xyz = index[::-1].reshape(ndim, -1)  # SimpleITK's index order is the reverse of numpy's
    source = (matrix @ xyz + shift[:, None])[::-1].reshape(ndim, *shape)
    got = sample(
        torch.from_numpy(array)[None, None], torch.from_numpy(source.copy())[None], mode, "border"
    )
    got = got[0, 0].numpy()
    margin = 0 if mode == "lanczos" else 4
    inside = np.all(
        [(source[a] >= margin) & (source[a] <= shape[a] - 1 - margin) for a in range(ndim)], 0
    )
    assert inside.sum() > 100
    tolerance = 1e-12 if mode == "lanczos" else 5e-5
    assert np.abs(got - expected)[inside].max() < tolerance


@pytest.mark.parametrize("mode", ["lanczos", "gaussian"])
@pytest.mark.parametrize("padding", ["zeros", "reflection"])
def test_gradcheck(mode, padding, gen):
    image = torch.rand(1, 1, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    coords = (far_coords((5, 6), gen, (3, 3)) * 0.5 + 1.0).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda i, c: sample(i, c, mode, padding), (image, coords))
    # at integer positions too (the sinc's removable singularity at 0)
    at_voxels = identity_grid((5, 6), dtype=torch.float64)[None].requires_grad_(True)
    out = sample(image, at_voxels, mode, padding).sum()
    grads = torch.autograd.grad(out, (image, at_voxels))
    assert all(torch.isfinite(g).all() for g in grads)
