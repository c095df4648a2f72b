"""Tests of drdm.pipelines.core: samplers, slice-wise handling, single native warps, synthesis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import smooth_field, smooth_image
from drdm.errors import InputError
from drdm.pipelines.core import (
    DeformResult,
    DRDMSampler,
    FieldSampler,
    deform_volume,
    resolve_slice_axis,
    sample_field,
    synthesize_pair,
    warp_volume,
)
from drdm.spatial import compose, warp, warp_labels
from helpers import T, tiny_model


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class ShiftSampler:
    """Deterministic: batch element b is shifted by (b + 1) * shift voxels; records its calls."""

    def __init__(self, ndim: int, shift=(0.5, -1.25, 0.75)):
        self.ndim = ndim
        self.shift = shift[:ndim]
        self.calls: list[tuple[int, ...]] = []

    def sample_ddf(self, images, generator):
        self.calls.append(tuple(images.shape))
        batch, _, *spatial = images.shape
        scale = torch.arange(1, batch + 1, dtype=images.dtype).view(-1, 1)
        vec = scale * torch.tensor(self.shift, dtype=images.dtype)
        return vec.view(batch, self.ndim, *[1] * self.ndim).expand(-1, -1, *spatial).clone()


class ZeroSampler:
    """No deformation (2D)."""

    ndim = 2

    def sample_ddf(self, images, generator):
        return torch.zeros(images.shape[0], 2, *images.shape[2:], dtype=images.dtype)


class SmoothSampler:
    """Smooth random fields drawn from the generator; records the images it was given."""

    def __init__(self, ndim: int, amplitude: float = 2.0):
        self.ndim = ndim
        self.amplitude = amplitude
        self.seen: list[torch.Tensor] = []

    def sample_ddf(self, images, generator):
        self.seen.append(images.clone())
        shape = (images.shape[0], self.ndim, *images.shape[2:])
        return smooth_field(shape, self.amplitude, generator, dtype=images.dtype)


def labels_2d(size=(32, 32)) -> np.ndarray:
    lab = np.zeros(size, np.uint8)
    lab[8:20, 6:18] = 3
    lab[12:16, 10:14] = 7
    lab[22:28, 20:30] = 1
    return lab


def test_protocol_and_2d_single_warp():
    sampler = ShiftSampler(2)
    assert isinstance(sampler, FieldSampler)
    image = smooth_image((32, 32), gen(1))[0, 0].float().numpy()
    label = labels_2d()
    res = deform_volume(sampler, image, [label], gen())
    assert isinstance(res, DeformResult) and res.slice_axis is None
    assert sampler.calls == [(1, 1, 32, 32)]
    assert res.ddf.shape == (2, 32, 32) and res.ddf.dtype == np.float32
    np.testing.assert_allclose(res.ddf[:, 5, 7], [0.5, -1.25])
    # ONE warp of the original at native resolution
    direct = warp(torch.from_numpy(image)[None, None], torch.from_numpy(res.ddf)[None])[0, 0]
    np.testing.assert_allclose(res.image, direct.numpy(), rtol=0, atol=1e-6)
    assert res.image.dtype == np.float32 and res.image.shape == (32, 32)
    # labels: same dtype, only the input's values, equal to warp_labels
    (out,) = res.labels
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1, 3, 7}
    expected = warp_labels(
        torch.from_numpy(label).long()[None, None], torch.from_numpy(res.ddf)[None]
    )
    np.testing.assert_array_equal(out, expected[0, 0].numpy())
    nearest = deform_volume(sampler, image, [label], gen(), label_method="nearest").labels[0]
    assert set(np.unique(nearest)) <= {0, 1, 3, 7}


def test_cubic_and_float64_and_tensor_inputs():
    sampler = ShiftSampler(2)
    image = smooth_image((24, 20), gen(2))[0, 0]  # float64 tensor
    res = deform_volume(sampler, image, [], gen(), interpolation="cubic")
    assert res.image.dtype == np.float64
    direct = warp(image[None, None], torch.from_numpy(res.ddf).double()[None], mode="cubic")
    np.testing.assert_allclose(res.image, direct[0, 0].numpy(), atol=1e-6)
    ints = (image.numpy() * 100).astype(np.int16)  # integer images come back as float32
    assert deform_volume(sampler, ints, [], gen()).image.dtype == np.float32


def test_slice_axis_detection():
    assert resolve_slice_axis((216, 256, 10), (1.56, 1.56, 10.0)) == 2
    assert resolve_slice_axis((12, 64, 64), (8.0, 1.0, 1.0)) == 0
    # isotropic or mildly anisotropic spacing: the axis with the fewest voxels
    assert resolve_slice_axis((64, 12, 64), (1.0, 1.0, 1.4)) == 1
    assert resolve_slice_axis((64, 12, 64)) == 1
    assert resolve_slice_axis((16, 16, 16)) == 2  # ties: the last axis
    assert resolve_slice_axis((16, 16, 1), (3.0, 0.5, 0.5)) == 2  # a single slice
    assert resolve_slice_axis((16, 16, 16), (1.0, 1.0, 1.0)) == 2
    assert resolve_slice_axis((16, 16, 16), slice_axis=0) == 0
    assert resolve_slice_axis((16, 16, 16), slice_axis=-2) == 1
    for bad in (None, 3, "z", True):
        with pytest.raises(InputError):
            resolve_slice_axis((16, 16, 16), slice_axis=bad)
    with pytest.raises(InputError):
        resolve_slice_axis((16, 16, 16), spacing=(1.0, 1.0))


def test_2d_sampler_on_3d_stack_slicewise():
    sampler = ShiftSampler(2)
    volume = smooth_image((20, 24, 6), gen(3))[0, 0].float().numpy()
    stack_labels = np.stack([labels_2d((20, 24))] * 6, axis=-1).astype(np.int16)
    res = deform_volume(sampler, volume, [stack_labels], gen(), spacing=(1.5, 1.5, 8.0))
    assert res.slice_axis == 2
    assert sampler.calls == [(6, 1, 20, 24)]  # all slices in ONE sampler call
    assert res.ddf.shape == (3, 20, 24, 6)
    assert not res.ddf[2].any()  # through-plane displacement exactly zero
    for k in range(6):  # slice k has its own field: shift * (k + 1)
        np.testing.assert_allclose(res.ddf[:2, 3, 4, k], [0.5 * (k + 1), -1.25 * (k + 1)])
    # the same as one 3D warp with the 3D field (which blends no neighbouring slices)
    direct = warp(torch.from_numpy(volume)[None, None], torch.from_numpy(res.ddf)[None])[0, 0]
    np.testing.assert_allclose(res.image, direct.numpy(), atol=1e-5)
    # every slice is the 2D warp of the original slice
    k = 4
    slice_warp = warp(
        torch.from_numpy(volume[..., k])[None, None], torch.from_numpy(res.ddf[:2, ..., k])[None]
    )
    np.testing.assert_allclose(res.image[..., k], slice_warp[0, 0].numpy(), atol=1e-6)
    assert res.labels[0].dtype == np.int16 and set(np.unique(res.labels[0])) <= {0, 1, 3, 7}
    # overriding the axis; no spacing -> the axis with the fewest voxels
    sampler.calls.clear()
    assert deform_volume(sampler, volume, [], gen(), slice_axis=0).slice_axis == 0
    assert sampler.calls == [(20, 1, 24, 6)]
    assert deform_volume(sampler, volume, [], gen()).slice_axis == 2
    with pytest.raises(InputError):
        deform_volume(sampler, volume, [], gen(), slice_axis=None)


def test_3d_sampler_whole_volume_and_2d_error():
    sampler = ShiftSampler(3)
    volume = smooth_image((10, 12, 8), gen(4))[0, 0].float()
    res = deform_volume(sampler, volume, [], gen(), slice_axis=None)
    assert sampler.calls == [(1, 1, 10, 12, 8)] and res.slice_axis is None
    np.testing.assert_allclose(res.ddf[:, 2, 3, 4], [0.5, -1.25, 0.75])
    with pytest.raises(InputError, match="3D deformation model cannot deform a 2D image"):
        deform_volume(sampler, volume[..., 0], [], gen())


def test_multichannel_intensity_and_bad_input():
    sampler = ShiftSampler(2)
    image = smooth_image((16, 16), gen(5)).float()[0].repeat(2, 1, 1)
    image[1] *= 3
    seen = []

    def intensity(batch, generator):
        seen.append(tuple(batch.shape))
        return batch * 2 + 1

    res = deform_volume(sampler, image, [], gen(), intensity=intensity, channel_first=True)
    plain = deform_volume(sampler, image, [], gen(), channel_first=True)
    assert res.image.shape == (2, 16, 16) and seen == [(1, 2, 16, 16)]
    np.testing.assert_allclose(res.image, plain.image * 2 + 1, atol=1e-5)  # after the warp
    np.testing.assert_allclose(plain.image[1], plain.image[0] * 3, atol=1e-5)  # same field
    # slice-wise: the slices are the channels of ONE image (one draw for the stack)
    seen.clear()
    deform_volume(sampler, np.ones((8, 8, 3), np.float32), [], gen(), intensity=intensity)
    assert seen == [(1, 3, 8, 8)]
    from drdm.baselines import BigAug

    no_noise = BigAug(2, probability=1.0, probabilities={"noise": 0.0}).intensity_transform()
    stack = np.repeat(image[0].numpy()[:, :, None], 4, axis=2)  # four identical slices
    out = deform_volume(ZeroSampler(), stack, [], gen(2), intensity=no_noise).image
    assert np.abs(out - stack).max() > 0.05  # changed, and alike in every slice:
    np.testing.assert_allclose(out, np.repeat(out[:, :, :1], 4, axis=2), atol=1e-5)
    lab = labels_2d((16, 16)).astype(np.float32)
    lab[0, 0] = 0.5
    with pytest.raises(InputError, match="non-integer"):
        deform_volume(sampler, image[0], [lab], gen())
    with pytest.raises(InputError, match="shape"):
        deform_volume(sampler, image[0], [np.zeros((15, 16), np.uint8)], gen())
    bad = image[0].clone()
    bad[3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        deform_volume(sampler, bad, [], gen())

    class Wrong:
        ndim = 2

        def sample_ddf(self, images, generator):
            return torch.zeros(1, 2, 4, 4)

    with pytest.raises(ValueError, match="sample_ddf returned"):
        deform_volume(Wrong(), image[0], [], gen())


def test_sample_field_and_warp_volume_reproduce_deform_volume():
    sampler = SmoothSampler(2)
    volume = smooth_image((18, 20, 5), gen(6))[0, 0].float().numpy()
    label = np.stack([labels_2d((18, 20))] * 5, axis=-1)
    res = deform_volume(sampler, volume, [label], gen(7))
    field = sample_field(sampler, volume, gen(7))
    np.testing.assert_array_equal(field.numpy(), res.ddf)
    assert res.slice_axis == 2
    image, labels = warp_volume(volume, field, [label], slice_axis=res.slice_axis)
    np.testing.assert_array_equal(image, res.image)
    np.testing.assert_array_equal(labels[0], res.labels[0])
    # slices differ from each other
    assert not np.allclose(res.ddf[:, ..., 0], res.ddf[:, ..., 1])


@pytest.mark.parametrize("shape", [(40, 40), (24, 28, 3)])
def test_synthesis_convention(shape):
    aug, syn = SmoothSampler(2, 2.5), SmoothSampler(2, 2.5)
    image = smooth_image(shape, gen(8))[0, 0]
    label = (image > image.median()).to(torch.uint8).numpy()
    res = synthesize_pair(aug, syn, image, [label], gen(9))
    # phi_syn was sampled for the moving image
    moving_seen = syn.seen[0]
    if len(shape) == 3:
        moving_seen = moving_seen.movedim(0, -1)[0]
        assert res.slice_axis == 2
        for f in (res.ddf_aug, res.ddf_syn, res.ddf_fixed):
            assert not f[2].any()
    np.testing.assert_allclose(moving_seen.numpy().squeeze(), res.moving, atol=1e-12)
    aug_t = torch.from_numpy(res.ddf_aug).double()[None]
    syn_t = torch.from_numpy(res.ddf_syn).double()[None]
    fixed_t = torch.from_numpy(res.ddf_fixed).double()[None]
    x = image[None, None]
    np.testing.assert_allclose(res.moving, warp(x, aug_t)[0, 0].numpy(), atol=1e-6)
    # the fixed image is ONE warp of I0 by compose(phi_syn, phi_aug) ...
    torch.testing.assert_close(fixed_t, compose(syn_t, aug_t), atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.fixed, warp(x, fixed_t)[0, 0].numpy(), atol=1e-6)
    # ... and approximately the moving image warped by phi_syn (warping twice); the other
    # composition order is clearly worse
    twice = warp(warp(x, aug_t), syn_t)[0, 0].numpy()
    wrong = warp(x, compose(aug_t, syn_t))[0, 0].numpy()
    inner = tuple(slice(6, -6) for _ in shape[:2]) + ((slice(None),) if len(shape) == 3 else ())
    err = np.abs(res.fixed - twice)[inner].mean()
    err_wrong = np.abs(wrong - twice)[inner].mean()
    assert err < 0.25 * err_wrong, (err, err_wrong)
    assert set(np.unique(res.fixed_labels[0])) <= {0, 1}
    assert res.fixed_labels[0].dtype == np.uint8
    # without augmentation the moving image is the input itself
    plain = synthesize_pair(None, SmoothSampler(2), image, [label], gen(9))
    np.testing.assert_allclose(plain.moving, image.numpy())
    assert not plain.ddf_aug.any()
    np.testing.assert_allclose(plain.ddf_fixed, plain.ddf_syn, atol=1e-6)


# ----------------------------------------------------------------------------- real DRDM model
@pytest.fixture(scope="module")
def model2d():
    return tiny_model()


def test_drdm_sampler_end_to_end_2d(model2d):
    sampler = DRDMSampler(model2d, level=4)
    assert sampler.ndim == 2 and isinstance(sampler, FieldSampler)
    image = (smooth_image((36, 40), gen(10))[0, 0].float() * 50 + 100).numpy()
    label = labels_2d((36, 40))
    a = deform_volume(sampler, image, [label], gen(11))
    b = deform_volume(sampler, image, [label], gen(11))
    np.testing.assert_array_equal(a.ddf, b.ddf)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.ddf.shape == (2, 36, 40) and np.isfinite(a.ddf).all() and np.abs(a.ddf).max() > 0
    direct = warp(torch.from_numpy(image)[None, None], torch.from_numpy(a.ddf)[None])
    np.testing.assert_allclose(a.image, direct[0, 0].numpy(), rtol=1e-6, atol=1e-4)
    assert set(np.unique(a.labels[0])) <= {0, 1, 3, 7}
    with pytest.raises(InputError):
        DRDMSampler(model2d, level=0)
    with pytest.raises(InputError):
        DRDMSampler(model2d, level=T + 1)


def test_drdm_sampler_on_3d_stack(model2d):
    sampler = DRDMSampler(model2d, level=5, batch_size=2)
    volume = smooth_image((28, 24, 3), gen(12))[0, 0].float().numpy()
    label = np.stack([labels_2d((28, 24))] * 3, axis=-1)
    res = deform_volume(sampler, volume, [label], gen(13), spacing=(1.5, 1.5, 10.0))
    assert res.slice_axis == 2 and res.ddf.shape == (3, 28, 24, 3)
    assert not res.ddf[2].any() and np.abs(res.ddf[:2]).max() > 0
    assert not np.allclose(res.ddf[:2, ..., 0], res.ddf[:2, ..., 1])  # own field per slice
    assert res.labels[0].shape == label.shape
    syn = synthesize_pair(sampler, DRDMSampler(model2d, level=3), volume, [label], gen(14))
    assert syn.fixed.shape == volume.shape and not syn.ddf_fixed[2].any()


class RotationSampler:
    """A fixed in-plane rotation about the grid centre (a field that does not commute with a
    shift); 2D, or 3D about the last axis."""

    def __init__(self, ndim: int = 2, degrees: float = 15.0):
        self.ndim = ndim
        self.angle = np.radians(degrees)

    def sample_ddf(self, images, generator):
        size = images.shape[2:]
        grid = torch.stack(
            torch.meshgrid(*[torch.arange(n, dtype=images.dtype) for n in size], indexing="ij")
        )
        centre = torch.tensor([(n - 1) / 2 for n in size], dtype=images.dtype)
        rel = grid - centre.view(-1, *[1] * len(size))
        c, s = np.cos(self.angle), np.sin(self.angle)
        out = torch.zeros_like(rel)
        out[0] = c * rel[0] - s * rel[1] - rel[0]
        out[1] = s * rel[0] + c * rel[1] - rel[1]
        return out.unsqueeze(0).expand(images.shape[0], *out.shape).clone()


def test_then_is_composed_after_the_first_field():
    """deform_volume(first, then=second): ddf = compose(second, first), i.e. first acts first;
    one warp of the original equals the two warps in that order."""
    image = smooth_image((40, 40), gen(3)).numpy()[0, 0]
    label = labels_2d((40, 40))
    shift = ShiftSampler(2, (1.5, -2.0))
    rotation = RotationSampler(2)
    result = deform_volume(shift, image, [label], gen(0), then=rotation)
    first = shift.sample_ddf(torch.zeros(1, 1, 40, 40), gen(0))
    second = rotation.sample_ddf(torch.zeros(1, 1, 40, 40), gen(0))
    expected = compose(second.double(), first.double())[0]
    assert np.allclose(result.ddf, expected.numpy(), atol=1e-4)
    wrong = compose(first.double(), second.double())[0]
    assert not np.allclose(result.ddf, wrong.numpy(), atol=0.5)
    two_warps = warp(warp(torch.from_numpy(image)[None, None].double(), first.double()), second)
    inside = (slice(8, 32), slice(8, 32))
    assert np.abs(result.image - two_warps[0, 0].numpy())[inside].max() < 0.05
    assert set(np.unique(result.labels[0])) <= set(np.unique(label))


def test_then_on_a_slicewise_stack_is_one_inplane_field():
    """A 2D `then` after a slice-wise field: the same in-plane transform for every slice and
    still no through-plane displacement."""
    volume = smooth_image((32, 36, 5), gen(4)).numpy()[0, 0]
    first = SmoothSampler(2, amplitude=1.0)
    result = deform_volume(
        first, volume, [], gen(1), spacing=(1.5, 1.5, 8.0), then=RotationSampler()
    )
    assert result.slice_axis == 2
    assert not np.any(result.ddf[2])
    plain = deform_volume(first, volume, [], gen(1), spacing=(1.5, 1.5, 8.0))  # same draws
    rot = RotationSampler().sample_ddf(torch.zeros(1, 1, 32, 36), gen(0)).double()
    for k in range(5):  # slice k: compose(rotation, slice k of the first field)
        own = torch.from_numpy(plain.ddf[:2, :, :, k]).double()[None]
        assert np.allclose(result.ddf[:2, :, :, k], compose(rot, own)[0].numpy(), atol=1e-4)
    assert np.abs(plain.ddf[:2, :, :, 0] - plain.ddf[:2, :, :, 1]).max() > 0.1  # own fields
    with pytest.raises(InputError, match="stacked"):
        deform_volume(SmoothSampler(3), volume, [], gen(1), then=RotationSampler(2))


@pytest.mark.parametrize(
    "shape, spacing",
    [
        ((200, 180, 10), (1.25, 1.25, 8.0)),
        ((64, 12, 64), (1.0, 1.0, 1.0)),
        ((40, 40, 40), (3.0, 1.0, 1.0)),
        ((40, 40, 30), (1.0, 1.0, 1.2)),  # slightly anisotropic: the old training rule differed
        ((30, 40, 40), (1.0, 1.3, 1.0)),
        ((32, 32, 1), (1.0, 1.0, 1.0)),
    ],
)
def test_one_slice_axis_rule_for_training_and_augmentation(shape, spacing):
    from drdm.io import auto_slice_axis
    from drdm.training.data import auto_slice_axis as training_rule

    axis = resolve_slice_axis(shape, spacing, "auto")
    assert axis == training_rule(shape, spacing) == auto_slice_axis(shape, spacing)
