from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import smooth_field, smooth_image
from drdm.spatial import (
    compose,
    fold_ratio,
    identity_grid,
    integrate,
    interpolation_matrix,
    jacobian_det,
    magnitude_stats,
    resample_separable,
    resize_ddf,
    sample,
    warp,
    warp_labels,
)
from drdm.spatial._grid import voxel_to_grid_sample
from drdm.spatial._sample import _sample_separable

SIZES = {2: (20, 24), 3: (10, 12, 14)}


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["linear", "cubic", "lanczos", "nearest"])
def test_convention_identity_warp_is_exact(ndim, dtype, mode, gen):
    image = torch.rand(2, 3, *SIZES[ndim], generator=gen, dtype=dtype)
    ddf = torch.zeros(2, ndim, *SIZES[ndim], dtype=dtype)
    out = warp(image, ddf, mode=mode)
    if mode == "nearest":
        assert torch.equal(out, image)
    else:  # exact up to the rounding of grid_sample's coordinate normalisation
        tol = 4e-6 if dtype == torch.float32 else 1e-13
        torch.testing.assert_close(out, image, atol=tol, rtol=0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_convention_pull_back_integer_shift(ndim, gen):
    size = SIZES[ndim]
    image = torch.rand(1, 1, *size, generator=gen, dtype=torch.float64)
    ddf = torch.zeros(1, ndim, *size, dtype=torch.float64)
    ddf[:, 0] = 2.0  # warped(x) = image(x + 2 e_0)
    out = warp(image, ddf)
    torch.testing.assert_close(out[:, :, :-2], image[:, :, 2:], atol=1e-12, rtol=0)
    assert torch.all(out[:, :, -2:] == 0)  # zero padding outside
    border = warp(image, ddf, padding="border")
    torch.testing.assert_close(border[:, :, -1], image[:, :, -1], atol=1e-12, rtol=0)


def test_cubic_matches_torch_bicubic(gen):
    # the gather-based cubic kernel (used in 3D) equals PyTorch's bicubic (used in 2D)
    image = torch.rand(2, 2, 16, 20, generator=gen, dtype=torch.float64)
    ddf = torch.randn(2, 2, 16, 20, generator=gen, dtype=torch.float64) * 3
    coords = identity_grid((16, 20), dtype=torch.float64)[None] + ddf
    grid = voxel_to_grid_sample(coords, (16, 20))
    for padding in ("zeros", "border", "reflection"):
        ref = F.grid_sample(image, grid, mode="bicubic", padding_mode=padding, align_corners=True)
        gathered = _sample_separable(image, coords, "cubic", padding)
        torch.testing.assert_close(gathered, ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(warp(image, ddf, "cubic", padding), ref, atol=1e-12, rtol=0)


def test_cubic_3d_is_the_same_kernel_as_bicubic(gen):
    # with no displacement along the last axis, 3D cubic interpolation reduces to 2D bicubic
    # interpolation of every slice along that axis
    volume = torch.rand(1, 1, 10, 12, 5, generator=gen, dtype=torch.float64)
    ddf = torch.randn(1, 3, 10, 12, 5, generator=gen, dtype=torch.float64) * 2
    ddf[:, 2] = 0
    out = warp(volume, ddf, "cubic")
    for k in range(5):
        grid = voxel_to_grid_sample(
            identity_grid((10, 12), dtype=torch.float64)[None] + ddf[:, :2, :, :, k], (10, 12)
        )
        ref = F.grid_sample(volume[..., k], grid, mode="bicubic", align_corners=True)
        torch.testing.assert_close(out[..., k], ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_compose_constant_translations_is_their_sum(ndim):
    size = SIZES[ndim]
    a = torch.zeros(1, ndim, *size, dtype=torch.float64)
    b = torch.zeros_like(a)
    a[:, 0], a[:, -1] = 1.5, -0.25
    b[:, 0], b[:, 1] = -3.0, 2.0
    torch.testing.assert_close(compose(a, b), a + b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_compose_matches_sequential_warps(ndim, gen):
    size = (48, 48) if ndim == 2 else (24, 24, 24)
    image = smooth_image(size, gen)
    a = smooth_field((2, ndim, *size), 1.5, gen)
    b = smooth_field((2, ndim, *size), 1.5, gen)
    once = warp(image, compose(a, b), padding="border")
    twice = warp(warp(image, b, padding="border"), a, padding="border")
    inner = (slice(None), slice(None)) + (slice(4, -4),) * ndim
    err = (once - twice)[inner].abs().max()
    scale = image.abs().max()
    assert err < 0.05 * scale  # two linear interpolations vs one
    # and the composition is not trivially close: using only one field is far off
    assert (warp(image, a, padding="border") - twice)[inner].abs().max() > 5 * err


@pytest.mark.parametrize("ndim", [2, 3])
def test_jacobian_of_affine_map_is_its_determinant(ndim, gen):
    size = SIZES[ndim]
    matrix = torch.eye(ndim, dtype=torch.float64) + 0.3 * torch.randn(
        ndim, ndim, generator=gen, dtype=torch.float64
    )
    x = identity_grid(size, dtype=torch.float64)
    mapped = torch.einsum("ij,j...->i...", matrix, x) + 1.7
    ddf = (mapped - x)[None]
    det = jacobian_det(ddf)
    assert det.shape == (1, 1, *size)
    torch.testing.assert_close(det, torch.full_like(det, torch.linalg.det(matrix).item()))


@pytest.mark.parametrize("ndim", [2, 3])
def test_fold_ratio_smooth_field_zero_and_constructed_fold_positive(ndim, gen):
    size = (32,) * ndim
    smooth = smooth_field((3, ndim, *size), 0.8, gen)
    assert torch.all(fold_ratio(smooth) == 0)
    # a mirror of axis 0 inside a slab: x0 -> c - (x0 - c) has derivative -1
    x = identity_grid(size, dtype=torch.float64)
    folded = torch.zeros(1, ndim, *size, dtype=torch.float64)
    slab = (x[0] >= 10) & (x[0] <= 20)
    folded[0, 0] = torch.where(slab, -2.0 * (x[0] - 15.0), torch.zeros_like(x[0]))
    ratio = fold_ratio(folded)
    assert ratio.shape == (1,)
    assert 0.2 < ratio.item() < 0.5


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("method", ["onehot", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_label_warp_keeps_label_set(ndim, method, padding, gen):
    size = (24,) * ndim
    x = identity_grid(size)
    labels = torch.full((1, 1, *size), 3, dtype=torch.int64)
    labels[0, 0][x[0] > 12] = 7
    labels[0, 0][(x[1] > 8) & (x[1] < 16)] = 12
    if padding == "zeros":
        labels[0, 0][x[0] < 3] = 0
    ddf = smooth_field((2, ndim, *size), 3.0, gen, dtype=torch.float32)
    out = warp_labels(labels.expand(2, -1, *size), ddf, method=method, padding=padding, chunk=2)
    assert out.dtype == labels.dtype and out.shape == (2, 1, *size)
    assert set(out.unique().tolist()) <= set(labels.unique().tolist())
    assert not torch.equal(out[0], labels[0])


def test_onehot_label_warp_identity_and_shift():
    labels = torch.randint(0, 4, (1, 1, 16, 16), generator=torch.Generator().manual_seed(3))
    zero = torch.zeros(1, 2, 16, 16)
    assert torch.equal(warp_labels(labels, zero), labels)
    shift = zero.clone()
    shift[:, 1] = 1.0
    out = warp_labels(labels, shift)
    assert torch.equal(out[..., :-1], labels[..., 1:])
    assert torch.all(out[..., -1] == 0)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_ddf_constant_translation_rescales_exactly(ndim, align_corners):
    size = SIZES[ndim]
    new = tuple(2 * s + 3 for s in size)
    ddf = torch.zeros(2, ndim, *size, dtype=torch.float64)
    for i in range(ndim):
        ddf[:, i] = 0.5 + i
    out = resize_ddf(ddf, new, align_corners=align_corners)
    assert out.shape == (2, ndim, *new)
    for i in range(ndim):
        factor = (new[i] - 1) / (size[i] - 1) if align_corners else new[i] / size[i]
        torch.testing.assert_close(out[:, i], torch.full_like(out[:, i], (0.5 + i) * factor))


def test_resize_ddf_round_trip_of_smooth_field(gen):
    ddf = smooth_field((1, 2, 32, 32), 2.0, gen)
    back = resize_ddf(resize_ddf(ddf, (64, 64)), (32, 32))
    assert (back - ddf).abs().max() < 0.05 * ddf.abs().max()


@pytest.mark.parametrize("ndim", [2, 3])
def test_integrate_constant_velocity_is_exact_and_methods_agree(ndim, gen):
    size = (20,) * ndim
    v = torch.zeros(1, ndim, *size, dtype=torch.float64)
    v[:, 0] = 2.5
    for method, steps in (("scaling_squaring", 5), ("compose", 7)):
        torch.testing.assert_close(integrate(v, steps, method), v)
    smooth = smooth_field((2, ndim, *size), 1.0, gen)
    ss = integrate(smooth, 6, "scaling_squaring")
    euler = integrate(smooth, 64, "compose")
    # both approximate exp(v); they differ by the interpolation error of the grid (a few %)
    assert (ss - euler).abs().max() < 0.05 * smooth.abs().max()
    assert torch.all(fold_ratio(ss) == 0)


def test_compose_n_times_equals_integrate_compose(gen):
    v = smooth_field((1, 2, 24, 24), 0.5, gen)
    manual = v
    for _ in range(3):
        manual = compose(manual, v)
    torch.testing.assert_close(integrate(4 * v, 4, "compose"), manual)


def test_magnitude_stats_constant_field():
    ddf = torch.zeros(2, 2, 50, 100)
    ddf[:, 0] = 3.0  # 6 % of 50
    ddf[:, 1] = 8.0  # 8 % of 100
    stats = magnitude_stats(ddf)
    torch.testing.assert_close(stats.mean_percent, torch.full((2,), 10.0))
    torch.testing.assert_close(stats.max_percent, torch.full((2,), 10.0))


def test_gradcheck_warp_and_compose(gen):
    image = torch.rand(1, 1, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    ddf = (0.4 * torch.rand(1, 2, 6, 7, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda i, u: warp(i, u), (image, ddf))
    assert torch.autograd.gradcheck(lambda i, u: warp(i, u, "cubic"), (image, ddf))
    other = (0.3 * torch.rand(1, 2, 6, 7, generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(compose, (ddf, other))
    vol = torch.rand(1, 3, 4, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(jacobian_det, (vol,))


def test_batch_broadcast_and_batch_independence(gen):
    image = torch.rand(1, 2, 16, 16, generator=gen)
    ddfs = smooth_field((3, 2, 16, 16), 2.0, gen, dtype=torch.float32)
    batched = warp(image, ddfs)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], warp(image, ddfs[i : i + 1]))


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="channels"):
        warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="spatial grid"):
        warp(torch.zeros(1, 1, 8, 9), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="mode"):
        warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), mode="spline")
    with pytest.raises(TypeError, match="floating"):
        sample(torch.zeros(1, 1, 8, 8, dtype=torch.int64), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="batch"):
        warp(torch.zeros(2, 1, 8, 8), torch.zeros(3, 2, 8, 8))


@pytest.mark.parametrize("mode", ["linear", "cubic", "nearest"])
def test_separable_resampling_matches_general_sampler(mode, gen):
    image = torch.rand(2, 3, 9, 11, 7, generator=gen, dtype=torch.float64)
    positions = [
        torch.linspace(-0.7, 8.2, 5, dtype=torch.float64),
        torch.linspace(0.3, 9.9, 6, dtype=torch.float64),
        torch.linspace(1.1, 5.4, 4, dtype=torch.float64),
    ]
    out = resample_separable(image, positions, mode)
    coords = torch.stack(torch.meshgrid(*positions, indexing="ij"))[None]
    ref = sample(image, coords, mode, padding="border")
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    assert (
        interpolation_matrix(positions[0], 9, mode)
        .sum(1)
        .allclose(torch.ones(5, dtype=torch.float64))
    )


def test_smooth_preserves_constants_and_matches_convolution():
    from drdm.spatial import smooth, smoothing_gain

    const = torch.full((2, 1, 12, 9), 3.0, dtype=torch.float64)
    for edges in ("mirror", "replicate"):
        torch.testing.assert_close(smooth(const, [1.5, 2.0], edges=edges), const)
    # interior voxels equal a plain 1D convolution with the truncated Gaussian
    x = torch.randn(1, 1, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma = 2.0
    radius = 6
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    conv = torch.nn.functional.conv1d(x, kernel.view(1, 1, -1))
    torch.testing.assert_close(smooth(x, [sigma])[..., radius:-radius], conv)
    # replicate edges: the first output voxel sees the edge value repeated
    edge = (
        kernel[: radius + 1].sum() * x[0, 0, 0]
        + (kernel[radius + 1 :] * x[0, 0, 1 : radius + 1]).sum()
    )
    torch.testing.assert_close(smooth(x, [sigma], edges="replicate")[0, 0, 0], edge)
    noise = torch.randn(
        1, 1, 400, 400, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    std = smooth(noise, [1.0, 1.0])[..., 10:-10, 10:-10].std().item()
    assert abs(std / smoothing_gain([1.0, 1.0]) - 1.0) < 0.05
