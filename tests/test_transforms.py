"""Tests of drdm.transforms.DRDMDeform: layouts, consistency, worker-safe seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from conftest import smooth_field, smooth_image
from drdm.spatial import warp, warp_labels
from drdm.transforms import DEFAULT_LEVELS, DEFAULT_STACK, DRDMDeform, default_levels
from test_pipeline import tiny_model


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class RandomSmoothSampler:
    """Smooth random fields from the generator (a stand-in for any FieldSampler)."""

    def __init__(self, ndim: int = 2, amplitude: float = 2.0):
        self.ndim = ndim
        self.amplitude = amplitude

    def sample_ddf(self, images, generator):
        shape = (images.shape[0], self.ndim, *images.shape[2:])
        return smooth_field(shape, self.amplitude, generator, dtype=images.dtype)


def label_map(size=(24, 24)) -> np.ndarray:
    lab = np.zeros(size, np.int64)
    lab[4:14, 5:15] = 2
    lab[8:11, 8:12] = 5
    return lab


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
        RandomSmoothSampler(), keys=("t1", "t2"), label_keys=("seg", "absent"), ddf_key="ddf"
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
    # a bare stack for a 2D sampler needs channel_first=False
    bare = DRDMDeform(RandomSmoothSampler(), channel_first=False)
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


def test_stack_defaults_and_one_field_for_image_and_labels():
    from drdm.errors import InputError

    model = tiny_model()
    default = DRDMDeform(model, seed=0)
    assert default.stack == DEFAULT_STACK == "bigaug"
    assert default.then is not None and default.intensity is not None  # BigAug's two parts
    plain = DRDMDeform(RandomSmoothSampler())
    assert plain.stack is None and plain.then is None and plain.intensity is None
    assert DRDMDeform(model, stack=None).then is None
    affine = DRDMDeform(RandomSmoothSampler(), stack="affine", ddf_key="ddf", seed=1)
    assert affine.then is not None and affine.intensity is None
    own = DRDMDeform(model, intensity=lambda x, g: x * 2)
    assert own.then is not None and own.intensity(torch.ones(1), None) == 2  # replaces BigAug's
    with pytest.raises(InputError, match="stack"):
        DRDMDeform(model, stack="mirror")
    # image and labels follow ONE field: the composed one that is returned
    image = smooth_image((32, 32), gen(8)).float()[0]
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


# ----------------------------------------------------------------------------- adapters
class RecordingSampler(RandomSmoothSampler):
    """Keeps the last field it produced (per call: (B, 2, h, w))."""

    def sample_ddf(self, images, generator):
        self.last = super().sample_ddf(images, generator)
        return self.last


def anisotropic_stack():
    """(1, 12, 20, 10) with 6 mm spacing along axis 0: the spacing picks axis 0, not 2."""
    image = smooth_image((12, 20, 10), gen(8)).float()[0]
    label = (image > 0).to(torch.int16)
    affine = np.diag([6.0, 1.0, 1.0, 1.0])
    return image, label, affine


def test_monai_dict_transform():
    pytest.importorskip("monai")
    from monai.data import MetaTensor

    from drdm.adapters.monai import DRDMDeformd

    image, label, affine = anisotropic_stack()
    sample = {
        "image": MetaTensor(image, affine=torch.from_numpy(affine)),
        "label": MetaTensor(label, affine=torch.from_numpy(affine)),
        "name": "case1",
    }
    t = DRDMDeformd(["image"], RandomSmoothSampler(), label_keys=["label"], ddf_key="ddf", seed=3)
    out = t(sample)
    assert isinstance(out["image"], MetaTensor) and out["name"] == "case1"
    torch.testing.assert_close(out["image"].affine, sample["image"].affine)
    assert out["ddf"].shape == (3, 12, 20, 10) and not out["ddf"][0].any()  # slices along axis 0
    assert out["label"].dtype == torch.int16 and set(out["label"].unique().tolist()) <= {0, 1}
    expected = warp(image[None], out["ddf"][None])[0]
    torch.testing.assert_close(out["image"].as_tensor(), expected, atol=1e-5, rtol=0)
    again = DRDMDeformd(["image"], RandomSmoothSampler(), label_keys=["label"], seed=3)(sample)
    torch.testing.assert_close(again["image"], out["image"])  # set_random_state reproduces
    off = DRDMDeformd(["image", "label"], RandomSmoothSampler(), label_keys=["label"], prob=0.0)
    assert off(sample)["image"] is sample["image"]
    assert off.deformer.stack is None  # "auto": no stack for a FieldSampler
    stacked = DRDMDeformd(["image"], RandomSmoothSampler(), stack="affine")
    assert stacked.deformer.stack == "affine" and stacked.deformer.then is not None


def test_torchio_subject_transform():
    tio = pytest.importorskip("torchio")
    from drdm.adapters.torchio import RandomDRDMDeformation

    image, label, affine = anisotropic_stack()
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=image, affine=affine),
        seg=tio.LabelMap(tensor=label, affine=affine),
    )
    sampler = RecordingSampler()
    out = RandomDRDMDeformation(sampler, seed=1)(subject)
    assert sampler.last.shape == (12, 2, 20, 10)  # slice-wise along axis 0 (largest spacing)
    np.testing.assert_allclose(out["image"].affine, affine)
    field = torch.zeros(3, 12, 20, 10)
    field[1:] = sampler.last.movedim(0, 1).float()
    torch.testing.assert_close(
        out["image"].data, warp(image[None], field[None])[0], atol=1e-5, rtol=0
    )
    expected = warp_labels(label[None].long(), field[None])[0].to(torch.int16)
    assert torch.equal(out["seg"].data.to(torch.int16), expected)
    assert torch.equal(subject["image"].data, image)  # the input subject is not modified
    # a 2D image is (1, W, H, 1) in TorchIO: deformed in its plane
    flat = tio.Subject(
        image=tio.ScalarImage(tensor=smooth_image((24, 24), gen(9)).float()[..., None][0])
    )
    out2 = RandomDRDMDeformation(sampler, seed=1)(flat)
    assert sampler.last.shape == (1, 2, 24, 24) and out2["image"].data.shape == (1, 24, 24, 1)
    assert RandomDRDMDeformation(sampler, stack="bigaug").deformer.intensity is not None
