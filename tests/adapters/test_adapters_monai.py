"""MONAI adapter: records, Invertd, names, MetaTensor field, one-hot labels, lazy, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import smooth_image
from helpers import RandomSmoothSampler, gen

monai = pytest.importorskip("monai")

from monai.data import DataLoader, Dataset, MetaTensor  # noqa: E402
from monai.transforms import (  # noqa: E402
    AsDiscreted,
    Compose,
    Invertd,
    RandFlipd,
    Rotate90d,
)
from monai.utils import set_determinism  # noqa: E402

from drdm.adapters.monai import BigAugIntensityd, DRDMDeformd  # noqa: E402
from drdm.errors import InputError  # noqa: E402
from drdm.spatial import warp  # noqa: E402


def disc(size=40):
    """(1, size, size) image and a two-label disc label map."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r2 = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 - 1.5) ** 2
    label = (r2 < (size / 3.2) ** 2).long() + (r2 < (size / 6) ** 2).long()
    image = label.float() + 0.1 * smooth_image((size, size), gen(3)).float()[0, 0]
    return image[None], label[None]


def sample(size=40, affine=None):
    image, label = disc(size)
    affine = torch.eye(4) if affine is None else affine
    return {
        "image": MetaTensor(image, affine=affine),
        "label": MetaTensor(label, affine=affine),
        "name": "case",
    }


def dice(a, b):
    a, b = torch.as_tensor(a) > 0, torch.as_tensor(b) > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def deformd(**kwargs):
    options = {"label_keys": ["label"], "seed": 3}
    options.update(kwargs)
    return DRDMDeformd(["image", "label"], RandomSmoothSampler(amplitude=2.5), **options)


def test_records_are_kept_and_invertd_round_trips_with_flips_around():
    pipeline = Compose(
        [
            RandFlipd(["image", "label"], prob=1.0, spatial_axis=0),
            deformd(mode=("bilinear", "nearest")),
            RandFlipd(["image", "label"], prob=1.0, spatial_axis=1),
        ]
    )
    pipeline.set_random_state(0)  # Compose reseeds its transforms
    data = sample(64)
    out = pipeline(data)
    names = [op["class"] for op in out["label"].applied_operations]
    assert names == ["RandFlipd", "DRDMDeformd", "RandFlipd"]
    original = data["label"].as_tensor()
    deformed = torch.flip(torch.flip(out["label"].as_tensor(), [2]), [1])
    assert dice(deformed == 2, original == 2) < 0.95  # the deformation is visible
    out["pred"] = out["label"].clone()
    inverter = Invertd("pred", transform=pipeline, orig_keys="label", nearest_interp=True)
    back = inverter(out)["pred"]
    assert back.shape == original.shape
    for value in (1, 2):
        assert dice(back == value, original == value) > 0.96
    assert not torch.equal(back.as_tensor(), out["label"].as_tensor())
    # Compose.inverse on the image: far closer to the original than the deformed image is
    restored = pipeline.inverse(out)["image"].as_tensor()
    unflipped = torch.flip(torch.flip(out["image"].as_tensor(), [2]), [1])
    inner = (slice(None), slice(8, -8), slice(8, -8))
    error = (restored - data["image"].as_tensor())[inner].abs().mean()
    assert error < 0.4 * (unflipped - data["image"].as_tensor())[inner].abs().mean()


def test_names_field_metatensor_and_label_key_errors():
    affine = torch.diag(torch.tensor([2.0, 1.5, 1.0, 1.0]))
    t = deformd(mode=("bilinear", "onehot"), padding_mode="border", ddf_key="ddf")
    out = t(sample(affine=affine))
    assert isinstance(out["ddf"], MetaTensor) and out["ddf"].shape == (2, 40, 40)
    torch.testing.assert_close(out["ddf"].affine, affine.double())
    expected = warp(
        sample()["image"].as_tensor()[None], out["ddf"].as_tensor()[None], "linear", "border"
    )[0]
    torch.testing.assert_close(out["image"].as_tensor(), expected, atol=1e-5, rtol=0)
    defaults = DRDMDeformd(["image"], RandomSmoothSampler(), label_keys=["label"])
    assert defaults.mode == {"image": "bilinear", "label": "onehot"}
    with pytest.raises(TypeError, match="label_method"):  # MONAI's names only
        DRDMDeformd(["image"], RandomSmoothSampler(), label_method="nearest")
    with pytest.raises(ValueError, match="'label'"):
        deformd(mode=("bilinear", "bicubic"))
    bad = sample()
    bad["label"] = MetaTensor(torch.zeros(1, 30, 40, dtype=torch.int64))
    with pytest.raises(InputError, match="label 'label' has shape"):
        deformd()(bad)


def test_onehot_label_keeps_one_class_per_voxel():
    pipeline = Compose(
        [AsDiscreted("label", to_onehot=3), deformd(mode=("bilinear", "nearest"), ddf_key="ddf")]
    )
    for seed in range(3):
        pipeline.set_random_state(seed)
        out = pipeline(sample())
        onehot = out["label"].as_tensor()
        assert onehot.shape == (3, 40, 40)
        assert torch.equal(onehot.sum(0), torch.ones(40, 40))


def test_prob_zero_pushes_a_record_and_invertible_false_fails_loudly():
    off = deformd(prob=0.0, ddf_key="ddf")
    data = sample()
    out = off(data)
    assert torch.equal(out["image"].as_tensor(), data["image"].as_tensor())
    assert [op["class"] for op in out["label"].applied_operations] == ["DRDMDeformd"]
    assert not out["ddf"].any()
    assert torch.equal(off.inverse(out)["label"].as_tensor(), data["label"].as_tensor())
    closed = deformd(invertible=False)
    with pytest.raises(RuntimeError, match="invertible=False"):
        closed.inverse(closed(sample()))


def test_lazy_compose_equals_eager_and_pending_operations_are_refused():
    def pipeline(lazy):
        return Compose([Rotate90d(["image", "label"], k=1), deformd(ddf_key="ddf")], lazy=lazy)

    eager_pipeline, lazy_pipeline = pipeline(False), pipeline(True)
    eager_pipeline.set_random_state(5)
    lazy_pipeline.set_random_state(5)
    eager, lazy = eager_pipeline(sample()), lazy_pipeline(sample())
    torch.testing.assert_close(lazy["image"].as_tensor(), eager["image"].as_tensor())
    assert torch.equal(lazy["label"].as_tensor(), eager["label"].as_tensor())
    pending = Rotate90d(["image", "label"], k=1, lazy=True)(sample())
    assert pending["image"].pending_operations
    with pytest.raises(RuntimeError, match="pending lazy operations"):
        deformd()(pending)


def _epoch(num_workers):
    set_determinism(seed=0)
    transform = Compose([deformd(seed=None, ddf_key="ddf")])
    data = [{"image": disc()[0], "label": disc()[1], "index": i} for i in range(4)]
    loader = DataLoader(Dataset(data, transform), batch_size=1, num_workers=num_workers)
    fields = torch.cat([torch.as_tensor(batch["ddf"]) for batch in loader])
    set_determinism(seed=None)
    return fields


@pytest.mark.parametrize("num_workers", [0, 2])
def test_set_determinism_reproduces_with_workers(num_workers):
    first, second = _epoch(num_workers), _epoch(num_workers)
    assert first.shape == (4, 2, 40, 40)
    assert torch.equal(first, second)
    assert len({tuple(f.flatten()[:4].tolist()) for f in first}) == 4  # samples differ


def test_bigaug_intensityd_changes_images_only():
    t = BigAugIntensityd("image", seed=0, probability=1.0)
    data = sample()
    out = t(data)
    assert isinstance(out["image"], MetaTensor)
    assert not torch.allclose(out["image"].as_tensor(), data["image"].as_tensor())
    assert out["label"] is data["label"]
    again = BigAugIntensityd("image", seed=0, probability=1.0)(data)
    torch.testing.assert_close(again["image"].as_tensor(), out["image"].as_tensor())
    assert np.isfinite(out["image"].numpy()).all()


def test_records_hold_one_field_per_sample_and_print_short():
    import copy

    from monai.transforms import RandSpatialCropSamplesd

    pipeline = Compose(
        [
            deformd(),
            RandFlipd(["image", "label"], prob=1.0, spatial_axis=0),
            RandSpatialCropSamplesd(
                ["image", "label"], roi_size=(16, 16), num_samples=3, random_size=False
            ),
        ]
    )
    pipeline.set_random_state(0)
    crops = pipeline(sample())
    crops.append(copy.deepcopy(crops[0]))  # e.g. a cache or a later transform's copy
    fields = [
        op["extra_info"]["ddf"]
        for crop in crops
        for key in ("image", "label")
        for op in crop[key].applied_operations
        if op["class"] == "DRDMDeformd"
    ]
    assert len(fields) == 8 and fields[0].shape == (2, 40, 40)
    assert len({f.untyped_storage().data_ptr() for f in fields}) == 1  # one storage
    assert len(repr(crops[0]["image"].applied_operations)) < 1500


def test_defaults_are_the_drdm_field_alone():
    from helpers import tiny_model

    t = DRDMDeformd(["image"], tiny_model())
    assert t.deformer.stack is None and t.deformer.then is None
    assert DRDMDeformd(["image"], tiny_model(), stack="bigaug").deformer.stack == "bigaug"


def test_one_inverse_per_record_shared_by_every_key(monkeypatch):
    import drdm.adapters.records as records

    calls = []
    original = records.invert_record

    def counting(ddf, *args, **kwargs):
        calls.append(tuple(ddf.shape))
        return original(ddf, *args, **kwargs)

    monkeypatch.setattr(records, "invert_record", counting)
    pipeline = Compose([deformd(mode=("bilinear", "nearest"))])
    pipeline.set_random_state(1)
    out = pipeline(sample())
    out["pred"] = out["label"].clone()
    Invertd("pred", transform=pipeline, orig_keys="label", nearest_interp=True)(out)
    back = pipeline.inverse(out)  # image and label
    assert calls == [(2, 40, 40)]  # one inverse for the record's three uses
    assert dice(back["label"].as_tensor() == 2, sample()["label"].as_tensor() == 2) > 0.96


def test_lanczos_gaussian_reflection_area_modes():
    # MONAI's padding_mode="reflection" and the kernels of other frameworks (issue 19): the
    # image is warped with drdm.spatial's kernel and padding, and Invertd's inverse too
    for mode in ("lanczos", "gaussian"):
        t = deformd(mode=(mode, "nearest"), padding_mode="reflection", ddf_key="ddf")
        data = sample()
        out = t(data)
        ddf = out["ddf"].as_tensor()[None]
        expected = warp(data["image"].as_tensor()[None], ddf, mode, "reflection")[0]
        torch.testing.assert_close(out["image"].as_tensor(), expected)
        assert set(out["label"].unique().tolist()) <= {0, 1, 2}
        back = t.inverse(out)
        assert dice(back["label"] == 2, data["label"] == 2) > 0.9
    # "area" (a downsampling average) warps linearly, and says so; on a label key: refused
    with pytest.warns(UserWarning, match="'area'.*'linear'"):
        area = deformd(mode=("area", "nearest"), ddf_key="ddf")
    out = area(sample())
    expected = warp(sample()["image"].as_tensor()[None], out["ddf"].as_tensor()[None])[0]
    torch.testing.assert_close(out["image"].as_tensor(), expected)
    with pytest.raises(ValueError, match="'label'.*'area' is an image interpolation"):
        deformd(mode=("bilinear", "area"))
    with pytest.raises(ValueError, match="reflection"):
        deformd(padding_mode="symmetric")


def test_stack_records_hold_the_slice_axis_and_invert_in_plane():
    # a 2D sampler on 3D stacks: the record carries the slice axis (never read from the
    # field's values), and the inverse is taken slice by slice along it
    image = torch.from_numpy(smooth_image((24, 20, 3), gen(4))[0].float().numpy())
    affine = torch.diag(torch.tensor([1.0, 1.0, 6.0, 1.0]))
    data = {"image": MetaTensor(image, affine=affine)}
    deform = DRDMDeformd(["image"], RandomSmoothSampler(amplitude=1.5), seed=2, ddf_key="ddf")
    out = deform(data)
    record = out["image"].applied_operations[-1]
    assert record["extra_info"]["slice_axis"] == 2
    assert not out["ddf"].as_tensor()[2].any()
    back = deform.inverse(out)["image"].as_tensor()
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert (back - image)[inner].abs().max() < 0.5 * (out["image"].as_tensor() - image)[
        inner
    ].abs().max()
