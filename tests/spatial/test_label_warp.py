"""drdm.spatial.warp_labels_onehot: warp_labels' one-hot arg-max, exactly, at a cost that does
not grow with the number of labels (issue 11, defect 16)."""

from __future__ import annotations

import time

import pytest
import torch

from drdm.pipelines.core import warp_volume
from drdm.spatial import warp_labels, warp_labels_onehot


def quantised_field(shape, generator):
    """Displacements in multiples of 1/8 voxel on grids with size - 1 a power of two: every
    interpolation weight is exact in floating point, so the two methods must agree exactly."""
    batch, ndim, *size = shape
    return torch.randint(-40, 41, shape, generator=generator).to(torch.float32) / 8.0


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("shape", [(2, 1, 17, 33), (1, 1, 17, 9, 33)])
@pytest.mark.parametrize("labels", [2, 5, 40])
def test_equals_onehot_argmax_exactly(shape, padding, labels):
    g = torch.Generator().manual_seed(labels)
    label = torch.randint(0, labels, shape, generator=g)
    ddf = quantised_field((shape[0], len(shape) - 2, *shape[2:]), g)
    expected = warp_labels(label, ddf, "onehot", padding)
    got = warp_labels_onehot(label, ddf, padding)
    assert got.dtype == label.dtype
    assert torch.equal(got, expected)
    assert (got != label).float().mean() > 0.2  # the field does move labels


def test_smooth_field_and_label_values_kept():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 6, (1, 1, 24, 20, 12), generator=g) * 1000 + 7
    ddf = torch.randn(1, 3, 24, 20, 12, generator=g) * 2.5
    got = warp_labels_onehot(label, ddf)
    expected = warp_labels(label, ddf, "onehot")
    assert (got != expected).float().mean() < 1e-4  # only floating-point near-ties may differ
    assert set(got.unique().tolist()) <= set(label.unique().tolist()) | {0}


def test_outside_the_image_is_background():
    label = torch.full((1, 1, 9, 9), 3)
    ddf = torch.zeros(1, 2, 9, 9)
    ddf[:, 0] = 20.0  # every point samples beyond the last row
    assert int(warp_labels_onehot(label, ddf).max()) == 0
    assert int(warp_labels_onehot(label, ddf, "border").min()) == 3


def _best_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_cost_does_not_grow_with_the_number_of_labels():
    g = torch.Generator().manual_seed(1)
    ddf = torch.randn(1, 3, 32, 32, 16, generator=g)
    few = torch.randint(0, 2, (1, 1, 32, 32, 16), generator=g)
    many = torch.randint(0, 2000, (1, 1, 32, 32, 16), generator=g)
    t_few = _best_time(lambda: warp_labels_onehot(few, ddf))
    t_many = _best_time(lambda: warp_labels_onehot(many, ddf))
    assert t_many < 3.0 * t_few + 0.05  # warp_labels: 250 chunks of 8 labels, ~100x slower


@pytest.mark.parametrize("count", [3, 300])
def test_deform_warps_labels_through_it(count):
    g = torch.Generator().manual_seed(2)
    label = torch.randint(0, count, (17, 17, 9), generator=g)
    ddf = quantised_field((1, 3, 17, 17, 9), g)[0]
    _, (warped,) = warp_volume(None, ddf, [label.numpy()])
    expected = warp_labels(label[None, None], ddf[None], "onehot")[0, 0].numpy()
    assert (warped == expected).all()


@pytest.mark.parametrize("labels", [3, 12, 40])
def test_warp_label_maps_is_the_one_path_for_label_channels(labels):
    # one function warps label channels for warp_volume (core) and DRDMDeform (transforms):
    # warp_labels up to 16 label values, warp_labels_onehot beyond; both paths give one result
    from drdm.pipelines import DRDMDeform
    from drdm.spatial import warp_label_maps

    g = torch.Generator().manual_seed(labels)
    lab = torch.randint(0, labels, (2, 17, 33), generator=g)
    ddf = quantised_field((1, 2, 17, 33), g)[0]
    got = warp_label_maps(lab, ddf)
    expected = warp_labels(lab[:, None], ddf[None].expand(2, 2, 17, 33), "onehot")[:, 0]
    assert torch.equal(got, expected)
    _, (core,) = warp_volume(None, ddf, [lab.numpy()])
    deform = DRDMDeform(_Fixed(), layout="channel_first")
    image = torch.zeros(1, 17, 33)
    outputs = deform.apply([image, lab], [False, True], ddf=ddf).outputs
    assert torch.equal(torch.from_numpy(core), got) and torch.equal(outputs[1], got)


def test_warp_label_maps_slice_wise_is_each_slice_in_2d():
    from drdm.spatial import warp_label_maps

    g = torch.Generator().manual_seed(2)
    lab = torch.randint(0, 20, (1, 17, 9, 4), generator=g)
    ddf = torch.zeros(3, 17, 9, 4)
    ddf[:2] = quantised_field((1, 2, 17, 9, 4), g)[0]
    got = warp_label_maps(lab, ddf, slice_axis=2)
    for k in range(4):
        per_slice = warp_label_maps(lab[..., k], ddf[:2, ..., k])
        assert torch.equal(got[..., k], per_slice)
    with pytest.raises(ValueError, match="not slice-wise"):
        warp_label_maps(lab, ddf, slice_axis=1)


class _Fixed:
    """A 2D sampler that is never called (the tests pass the field)."""

    ndim = 2

    def sample_ddf(self, images, generator):  # pragma: no cover - not called
        raise AssertionError("not called")
