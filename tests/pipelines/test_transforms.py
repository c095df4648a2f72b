"""Tests of drdm.pipelines.transforms.DRDMDeform: layouts, consistency, worker-safe seeding."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from conftest import smooth_field, smooth_image
from drdm.errors import InputError
from drdm.pipelines import (
    DEFAULT_LEVELS,
    DEFAULT_STACK,
    BigAugIntensity,
    DRDMDeform,
    default_levels,
)
from drdm.pipelines.transforms import check_mode, warp_channels
from drdm.spatial import invert_field, warp, warp_labels
from helpers import RandomSmoothSampler, gen, label_map, tiny_model


class Pairs(Dataset):
    def __init__(self, n: int = 4):
        self.image = smooth_image((24, 24), gen(1)).float()[0]  # (1, 24, 24)
        self.label = torch.from_numpy(label_map())[None].to(torch.uint8)
        self.n = n
        self.deform = DRDMDeform(RandomSmoothSampler(), seed=7, ddf_key="ddf")

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return self.deform({"image": self.image, "label": self.label, "index": index})


def test_tuple_form_layouts_and_consistency():
    deform = DRDMDeform(RandomSmoothSampler(), seed=3)
    image = smooth_image((24, 24), gen(2)).float()[0]  # (1, H, W) channel first
    label = torch.from_numpy(label_map())[None]
    out_image, out_label = deform(image, label, generator=gen(5))
    assert out_image.shape == image.shape and out_image.dtype == torch.float32
    assert out_label.shape == label.shape and out_label.dtype == label.dtype
    # the same field for both: recompute it with the same generator state
    ddf = RandomSmoothSampler().sample_ddf(image[None], gen(5))
    torch.testing.assert_close(out_image, warp(image[None], ddf)[0])
    torch.testing.assert_close(out_label, warp_labels(label[None], ddf)[0])
    # numpy (*spatial) inputs come back as numpy with their dtypes
    np_image = image[0].numpy()
    a = deform(np_image, label_map().astype(np.uint8), generator=gen(5))
    assert isinstance(a[0], np.ndarray) and a[0].dtype == np.float32 and a[0].shape == (24, 24)
    assert deform(np_image.astype(np.float64), generator=gen(5)).dtype == np.float64
    assert a[1].dtype == np.uint8 and set(np.unique(a[1])) <= {0, 2, 5}
    np.testing.assert_allclose(a[0], out_image[0].numpy(), atol=1e-5)
    # an image alone returns the image alone
    assert deform(image, generator=gen(5)).shape == image.shape


def test_dict_form_with_field_and_2d_model_on_stack():
    deform = DRDMDeform(
        RandomSmoothSampler(),
        keys=("t1", "t2"),
        label_keys=("seg", "absent"),
        ddf_key="ddf",
        layout="channel_first",
    )
    vol = smooth_image((20, 22, 4), gen(3)).float()[0]  # (1, X, Y, Z): channel + 3D stack
    sample = {"t1": vol, "t2": vol * 2, "seg": (vol > 0).to(torch.int32), "id": "case"}
    out = deform(sample, generator=gen(0))
    assert out["id"] == "case" and "absent" not in out and sample["t1"] is vol
    ddf = out["ddf"]
    assert ddf.shape == (3, 20, 22, 4) and not ddf[2].any()  # slice-wise along the short axis
    torch.testing.assert_close(out["t2"], out["t1"] * 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["t1"], warp(vol[None], ddf[None])[0], atol=1e-5, rtol=0)
    assert set(out["seg"].unique().tolist()) <= {0, 1}
    # a bare stack for a 2D sampler needs layout="spatial"
    bare = DRDMDeform(RandomSmoothSampler(), layout="spatial")
    assert bare(vol[0], generator=gen(0)).shape == (20, 22, 4)
    with pytest.raises(KeyError):
        deform({"t1": vol}, generator=gen(0))


def test_levels_with_tiny_drdm_model():
    model = tiny_model()
    deform = DRDMDeform(model, levels=(2, 6), seed=0)
    assert [s.level for s in deform.samplers] == [2, 6]
    image = smooth_image((32, 32), gen(4)).float()[0]
    label = torch.from_numpy(label_map((32, 32)))[None]
    out_image, out_label = deform(image, label)
    assert torch.isfinite(out_image).all() and set(out_label.unique().tolist()) <= {0, 2, 5}
    with pytest.raises(ValueError):
        DRDMDeform(RandomSmoothSampler(), level=3)
    with pytest.raises(ValueError):
        DRDMDeform(model, level=3, levels=(2, 3))
    # without levels: 0.4 and 0.6 of the model's T
    assert [s.level for s in DRDMDeform(model).samplers] == list(default_levels(model.num_steps))


def test_stack_defaults_are_drdm_alone_and_one_field_for_image_and_labels():
    model = tiny_model()
    default = DRDMDeform(model, seed=0, ddf_key="ddf")
    assert default.stack is None and default.then is None  # the DRDM field alone
    assert default.intensity is None  # geometry only
    image = smooth_image((32, 32), gen(8)).float()[0]
    out = default({"image": image}, generator=gen(0))
    # no intensity change: the output is exactly the warp of the input by the returned field
    torch.testing.assert_close(out["image"], warp(image[None], out["ddf"][None])[0])
    # the same draw with the same generator: exactly the model's field, nothing stacked
    sampled, _ = default.sample_fields(image[None], gen(0))
    torch.testing.assert_close(out["ddf"], sampled[0])
    # BigAug's geometry is one explicit option; drdm augment's recipe keeps it
    bigaug = DRDMDeform(model, stack="bigaug")
    assert DEFAULT_STACK == "bigaug" and bigaug.stack == "bigaug" and bigaug.then is not None
    plain = DRDMDeform(RandomSmoothSampler())
    assert plain.stack is None and plain.then is None and plain.intensity is None
    assert DRDMDeform(model, stack="none").stack is None
    with pytest.raises(InputError, match="stack"):
        DRDMDeform(model, stack="auto")  # the transforms have no implicit stack
    affine = DRDMDeform(RandomSmoothSampler(), stack="affine", ddf_key="ddf", seed=1)
    assert affine.then is not None and affine.intensity is None
    own = DRDMDeform(model, intensity=lambda x, g: x * 2)
    assert own.then is None and own.intensity(torch.ones(1), None) == 2
    with pytest.raises(InputError, match="stack"):
        DRDMDeform(model, stack="mirror")
    # image and labels follow ONE field: the composed one that is returned
    label = torch.from_numpy(label_map((32, 32)))[None]
    moved = 0
    for k in range(6):
        out = affine({"image": image, "label": label}, generator=gen(k))
        ddf = out["ddf"][None]
        torch.testing.assert_close(out["image"], warp(image[None], ddf)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(out["label"], warp_labels(label[None], ddf)[0])
        base = RandomSmoothSampler().sample_ddf(image[None], gen(k))
        moved += float((ddf - base).abs().max()) > 1.0  # rotated or scaled on top
    assert moved >= 2


def test_bigaug_intensity_is_its_own_transform():
    image = smooth_image((32, 32), gen(8)).float()[0]
    label = torch.from_numpy(label_map((32, 32)))[None]
    change = BigAugIntensity(seed=0, probability=1.0)
    out = change({"image": image, "label": label, "id": 3})
    assert out["label"] is label and out["id"] == 3  # labels never touched
    assert out["image"].shape == image.shape and not torch.allclose(out["image"], image)
    # explicit generators reproduce; numpy (*spatial) in, numpy out
    a = change(image[0].numpy(), generator=gen(4))
    b = change(image[0].numpy(), generator=gen(4))
    assert isinstance(a, np.ndarray) and a.shape == (32, 32) and np.array_equal(a, b)
    # batches: one draw per element
    batch = BigAugIntensity(layout="batch", probability=1.0)(torch.stack([image, image]), gen(1))
    assert batch.shape == (2, 1, 32, 32) and not torch.equal(batch[0], batch[1])


def test_default_levels_are_fractions_of_t():
    assert default_levels(80) == DEFAULT_LEVELS == (32, 48)
    assert default_levels(10) == (4, 6)
    assert default_levels(1) == (1,)  # rounded to at least 1, repeats dropped
    assert default_levels(2) == (1,)
    with pytest.raises(ValueError):
        default_levels(0)


def test_seeded_main_process_sequences_reproduce():
    image = smooth_image((24, 24), gen(6)).float()[0]
    a, b, c = (DRDMDeform(RandomSmoothSampler(), seed=s) for s in (1, 1, 2))
    first = [a(image) for _ in range(2)]
    second = [b(image) for _ in range(2)]
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], first[1])  # successive calls differ
    assert not torch.equal(first[0], c(image))


def _run(loader) -> torch.Tensor:
    return torch.cat([batch["ddf"] for batch in loader])


def test_dataloader_workers_differ_and_runs_reproduce():
    data = Pairs(4)

    def loader(seed):
        return DataLoader(data, batch_size=1, num_workers=2, generator=gen(seed))

    run1 = _run(loader(0))
    run2 = _run(loader(0))
    assert run1.shape == (4, 2, 24, 24)
    assert torch.equal(run1, run2)  # same seeds: identical
    # items 0 and 1 are the first call in worker 0 and worker 1: they must differ
    assert not torch.equal(run1[0], run1[1])
    assert len({tuple(f.flatten()[:5].tolist()) for f in run1}) == 4
    # another epoch (another DataLoader seed) gives other deformations
    assert not torch.equal(run1, _run(loader(1)))


def test_layout_is_explicit_and_ambiguous_shapes_are_refused():
    deform = DRDMDeform(RandomSmoothSampler(), seed=0)
    stack = smooth_image((12, 16, 5), gen(1)).float()[0, 0]  # (12, 16, 5)
    with pytest.raises(InputError, match="layout='spatial'"):
        deform(stack)  # 12 channels of 16 x 5, or a stack of 5 slices?
    with pytest.raises(InputError, match="layout='batch'"):
        deform(torch.zeros(2, 1, 16, 16))  # a batch, or a (C, X, Y, Z) stack?
    assert deform(torch.zeros(1, 16, 16)).shape == (1, 16, 16)  # one reading only
    assert deform(torch.zeros(16, 16)).shape == (16, 16)
    assert DRDMDeform(RandomSmoothSampler(), layout="spatial")(stack).shape == (12, 16, 5)
    with pytest.raises(ValueError, match="layout"):
        DRDMDeform(RandomSmoothSampler(), layout="cf")
    with pytest.raises(TypeError, match="channel_first"):  # the old spelling of layout is gone
        DRDMDeform(RandomSmoothSampler(), channel_first=False)
    # a 3D model: (C, X, Y, Z) is the only 4-axis reading
    assert DRDMDeform(RandomSmoothSampler(3)).resolve_layout(torch.zeros(1, 8, 8, 8)) == (
        "channel_first"
    )


def test_batch_layout_gives_one_field_per_element_in_one_sampler_call():
    calls = []

    class Counting(RandomSmoothSampler):
        def sample_ddf(self, images, generator):
            calls.append(images.shape[0])
            return super().sample_ddf(images, generator)

    deform = DRDMDeform(Counting(), layout="batch", ddf_key="ddf")
    image = smooth_image((24, 24), gen(2)).float()[0]
    images = torch.stack([image, image, image])  # (3, 1, 24, 24): identical inputs
    labels = torch.from_numpy(np.stack([label_map()] * 3))  # (3, 24, 24)
    out = deform({"image": images, "label": labels}, generator=gen(0))
    assert calls == [3]  # all elements in one call
    ddf = out["ddf"]
    assert ddf.shape == (3, 2, 24, 24)
    assert not torch.equal(ddf[0], ddf[1]) and not torch.equal(ddf[1], ddf[2])
    torch.testing.assert_close(out["image"], warp(images, ddf), atol=1e-5, rtol=0)
    assert torch.equal(out["label"][:, None], warp_labels(labels[:, None], ddf))
    # (B, L, *spatial) labels too, and a 2D sampler on a batch of 3D stacks
    vols = smooth_image((10, 12, 3), gen(3)).float()[0].expand(2, 1, 10, 12, 3)
    out3 = deform({"image": vols, "label": (vols > 0).int()}, generator=gen(1))
    assert out3["ddf"].shape == (2, 3, 10, 12, 3) and not out3["ddf"][:, 2].any()
    assert calls[-1] == 2 * 3  # both volumes' slices in one call
    with pytest.raises(InputError, match="batch"):
        deform(image)  # (1, 24, 24) is not a batch


def test_seed_none_follows_torch_manual_seed():
    image = smooth_image((24, 24), gen(6)).float()[0]
    deform = DRDMDeform(RandomSmoothSampler())
    torch.manual_seed(123)
    first = [deform(image) for _ in range(2)]
    torch.manual_seed(123)
    second = [deform(image) for _ in range(2)]
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], first[1])


def test_onehot_labels_are_warped_jointly():
    deform = DRDMDeform(RandomSmoothSampler(amplitude=3.0), layout="channel_first")
    image = smooth_image((32, 32), gen(3)).float()[0]
    index = torch.from_numpy(label_map((32, 32)))
    onehot = torch.stack([index == v for v in (0, 2, 5)]).float()  # (3, 32, 32) one-hot
    for k in range(4):
        _, out = deform(image, onehot, generator=gen(k))
        assert out.dtype == torch.float32 and set(out.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(out.sum(0), torch.ones(32, 32))  # exactly one class everywhere
        _, by_index = deform(image, index[None], generator=gen(k))
        assert torch.equal(torch.tensor([0, 2, 5])[out.argmax(0)], by_index[0])


def test_label_errors_name_the_key():
    deform = DRDMDeform(RandomSmoothSampler(), label_keys=("seg",), layout="channel_first")
    image = smooth_image((24, 24), gen(3)).float()[0]
    with pytest.raises(InputError, match="label 'seg' has shape"):
        deform({"image": image, "seg": torch.zeros(20, 24, dtype=torch.int64)})
    with pytest.raises(InputError, match="label 'seg' has non-integer values"):
        deform({"image": image, "seg": torch.full((24, 24), 0.5)})


def test_stacked_rotation_is_in_mm_with_spacing():
    deform = DRDMDeform(
        RandomSmoothSampler(amplitude=0.0), stack="affine", ddf_key="ddf", layout="spatial"
    )
    image = torch.zeros(32, 32)
    iso = deform.apply_dict({"image": image}, generator=gen(5), spacing=(1.0, 1.0))["ddf"]
    aniso = deform.apply_dict({"image": image}, generator=gen(5), spacing=(1.0, 3.0))["ddf"]
    assert iso.abs().max() > 1.0  # this draw rotates or scales
    assert not torch.allclose(iso, aniso, atol=1e-3)  # the spacing changes the voxel field
    with pytest.raises(InputError, match="spacing"):
        deform.apply_dict({"image": image}, spacing=(1.0, 1.0, 1.0))


def test_invert_field():
    u = smooth_field((1, 2, 40, 40), 2.5, gen(9), dtype=torch.float32)[0]
    v = invert_field(u)
    residual = v + warp(u[None], v[None], "linear", "border")[0]
    assert residual.abs().max() < 1e-3
    image = smooth_image((40, 40), gen(1)).float()
    back = warp(warp(image, u[None]), v[None])
    error = (back - image)[..., 8:-8, 8:-8].abs().max()
    assert error < 0.1 * image.abs().max()  # what two linear interpolations lose
    assert error < 0.2 * (warp(image, u[None]) - image)[..., 8:-8, 8:-8].abs().max()
    # slice-wise fields stay exactly in-plane; batches invert element by element
    w = torch.zeros(3, 12, 14, 4)
    w[:2] = smooth_field((1, 3, 12, 14, 4), 1.0, gen(2), dtype=torch.float32)[0, :2]
    assert not invert_field(w, slice_axis=2)[2].any()
    both = invert_field(torch.stack([u, -u]))
    torch.testing.assert_close(both[0], v)
    # a zoom-out by 0.5 about the centre (grad u = 1: the plain fixed-point iteration
    # v <- -u(x + v) does not converge) is inverted exactly: v = -(x - c) / 2
    grid = torch.stack(torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij"))
    zoom = grid - 16.0  # u(x) = (x - c) (1 / 0.5 - 1)
    torch.testing.assert_close(invert_field(zoom), -0.5 * zoom, atol=1e-4, rtol=0)


def test_a_tuple_as_one_argument_is_a_clear_error():
    deform = DRDMDeform(RandomSmoothSampler(), seed=0)
    image = smooth_image((24, 24), gen(2)).float()[0]
    label = torch.from_numpy(label_map())[None]
    for wrong in ((image, label), [image, label]):
        with pytest.raises(TypeError, match=r"separate arguments, deform\(image, label\)") as err:
            deform(wrong)
        assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="label map 0 is a tuple"):
        deform(image, (label,))
    with pytest.raises(TypeError, match="torch tensor or a numpy array"):
        deform("image.nii.gz")


def test_import_pipelines_pulls_in_neither_nibabel_nor_scipy():
    # a fresh interpreter: in this one, other tests have imported both long ago
    code = (
        "import sys, drdm.pipelines, drdm.pipelines.transforms;"
        "print(sorted(m for m in ('nibabel', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("interpolation", ["lanczos", "gaussian", "trilinear"])
@pytest.mark.parametrize("padding", ["reflection", "border"])
def test_modes_and_paddings_of_other_frameworks_are_the_spatial_kernels(interpolation, padding):
    # TorchIO's "lanczos" / "gaussian", MONAI's "reflection" / "trilinear" (issue 19): the
    # image warped with drdm.spatial's kernel, the labels with the padding, by one field
    deform = DRDMDeform(
        RandomSmoothSampler(amplitude=4.0), interpolation=interpolation, padding=padding
    )
    image = smooth_image((24, 24), gen(2)).float()[0]
    label = torch.from_numpy(label_map())[None]
    out_image, out_label = deform(image, label, generator=gen(5))
    ddf = RandomSmoothSampler(amplitude=4.0).sample_ddf(image[None], gen(5))
    kernel = "linear" if interpolation == "trilinear" else interpolation
    torch.testing.assert_close(out_image, warp(image[None], ddf, kernel, padding)[0])
    assert torch.equal(out_label, warp_labels(label[None], ddf, "onehot", padding)[0])
    # a 3D stack (slice-wise through the 2D path) takes the same kernel
    stack = torch.stack([image[0], image[0].flip(0)], -1)
    stacked = DRDMDeform(
        RandomSmoothSampler(amplitude=4.0),
        interpolation=interpolation,
        padding=padding,
        layout="spatial",
        slice_axis=2,
        ddf_key="ddf",
    )
    out = stacked({"image": stack})
    for k in range(2):
        plane = out["ddf"][None, :2, ..., k]
        expected = warp(stack[None, None, ..., k], plane, kernel, padding)[0, 0]
        torch.testing.assert_close(out["image"][..., k], expected)


def test_area_is_warped_linearly_with_a_warning_and_refused_for_labels():
    # MONAI's "area" is a downsampling average: nothing to average on the same grid
    with pytest.warns(UserWarning, match="'area' is MONAI's downsampling average.*'linear'"):
        deform = DRDMDeform(RandomSmoothSampler(), interpolation="area")
    assert deform.interpolation == "linear"
    image = smooth_image((24, 24), gen(2)).float()[0]
    linear = DRDMDeform(RandomSmoothSampler())
    torch.testing.assert_close(deform(image, generator=gen(5)), linear(image, generator=gen(5)))
    with pytest.warns(UserWarning, match="'area'"):
        assert check_mode("area", False) == "linear"
    for name in ("area", "lanczos", "gaussian", "bicubic"):
        with pytest.raises(ValueError, match="label 'seg'.*image interpolation"):
            check_mode(name, True, "seg")
    with pytest.raises(ValueError, match="reflection"):
        DRDMDeform(RandomSmoothSampler(), padding="mirror")
    with pytest.raises(ValueError, match="lanczos"):
        DRDMDeform(RandomSmoothSampler(), interpolation="hamming")


def test_warp_channels_takes_every_mode_and_padding():
    x = smooth_image((20, 20), gen(8)).float()[0]
    ddf = smooth_field((1, 2, 20, 20), 3.0, gen(9))[0].float()
    for mode in ("lanczos", "gaussian", "bicubic"):
        for padding in ("zeros", "border", "reflection"):
            kernel = "cubic" if mode == "bicubic" else mode
            expected = warp(x[None], ddf[None], kernel, padding)[0]  # type: ignore[arg-type]
            torch.testing.assert_close(warp_channels(x, ddf, mode, padding), expected)


def test_a_given_field_is_slice_wise_only_when_said():
    # a 3D field with an all-zero component along axis 2 is a 3D field unless the caller
    # gives its slice axis (before issue 18 the zero component made it slice-wise)
    deform = DRDMDeform(RandomSmoothSampler(), layout="channel_first", seed=0)
    image = smooth_image((16, 14, 5), gen(3)).float()[0]
    ddf = torch.zeros(3, 16, 14, 5)
    ddf[:2] = smooth_field((1, 3, 16, 14, 5), 1.5, gen(4), dtype=torch.float32)[0, :2]
    applied = deform.apply([image], [False], ddf=ddf)
    assert applied.slice_axis is None
    expected = warp(image[None], ddf[None])[0]
    torch.testing.assert_close(applied.outputs[0], expected, atol=0, rtol=0)
    flat = deform.apply([image], [False], ddf=ddf, ddf_slice_axis=2)
    assert flat.slice_axis == 2
    torch.testing.assert_close(flat.outputs[0], expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not slice-wise"):
        deform.apply([image], [False], ddf=ddf, ddf_slice_axis=0)
    moved = warp_channels(image, ddf, "bilinear", slice_axis=2)
    torch.testing.assert_close(moved, flat.outputs[0], atol=0, rtol=0)
