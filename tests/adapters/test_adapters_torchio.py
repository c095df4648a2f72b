"""TorchIO adapter: history replay, inverse, torch-seeded randomness, spacing, slice axes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import smooth_image
from helpers import RandomSmoothSampler, gen

tio = pytest.importorskip("torchio")

from drdm.adapters.torchio import (  # noqa: E402
    DRDMFieldDeformation,
    RandomBigAugIntensity,
    RandomDRDMDeformation,
)
from drdm.spatial import warp, warp_labels  # noqa: E402


class RecordingSampler(RandomSmoothSampler):
    """Keeps the last field it produced (per call: (B, 2, h, w))."""

    def sample_ddf(self, images, generator):
        self.last = super().sample_ddf(images, generator)
        return self.last


def disc_subject(size=64, spacing=(1.0, 1.0, 1.0)):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r2 = (yy - size / 2) ** 2 + (xx - size / 2 - 2) ** 2
    label = ((r2 < (size / 3.2) ** 2).long() + (r2 < (size / 6) ** 2).long())[None, ..., None]
    image = label.float() + 0.1 * smooth_image((size, size), gen(3)).float()[0, :, :, :, None]
    affine = np.diag([*spacing, 1.0])
    return tio.Subject(
        image=tio.ScalarImage(tensor=image, affine=affine),
        seg=tio.LabelMap(tensor=label, affine=affine),
    )


def dice(a, b):
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_history_replays_and_inverts():
    subject = disc_subject()
    out = RandomDRDMDeformation(RandomSmoothSampler(amplitude=2.5), seed=1)(subject)
    assert [name for name, _ in out.applied_transforms] == ["DRDMFieldDeformation"]
    ddf = out.applied_transforms[0][1]["ddf"]
    assert ddf.shape == (3, 64, 64, 1) and not ddf[2].any()  # in-plane for a 2D image
    replayed = out.get_composed_history()(subject)
    assert torch.equal(replayed["image"].data, out["image"].data)
    assert torch.equal(replayed["seg"].data, out["seg"].data)
    original = subject["seg"].data
    assert dice(out["seg"].data == 2, original == 2) < 0.95  # visibly deformed
    back = out.apply_inverse_transform(warn=True)
    for value in (1, 2):
        assert dice(back["seg"].data == value, original == value) > 0.96
    assert back["seg"].data.dtype == original.dtype
    assert torch.equal(subject["image"].data, disc_subject()["image"].data)  # input untouched


def test_deterministic_transform_checks_and_inverse_flag():
    field = torch.zeros(3, 8, 8, 1)
    with pytest.raises(ValueError, match="ddf"):
        DRDMFieldDeformation(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="image_interpolation"):
        DRDMFieldDeformation(field, image_interpolation="hamming")
    with pytest.raises(ValueError, match="reflection"):
        DRDMFieldDeformation(field, padding="mirror")
    with pytest.raises(ValueError, match="reflection"):
        RandomDRDMDeformation(RandomSmoothSampler(), padding="mirror")
    t = DRDMFieldDeformation(field)
    assert t.is_invertible() and t.inverse().invert_transform


def test_torch_manual_seed_reproduces_and_workers_differ():
    subject = disc_subject(32)
    transform = RandomDRDMDeformation(RandomSmoothSampler())  # no seed: torch's generator
    torch.manual_seed(7)
    a = [transform(subject)["image"].data for _ in range(2)]
    torch.manual_seed(7)
    b = [transform(subject)["image"].data for _ in range(2)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], a[1])

    dataset = tio.SubjectsDataset([disc_subject(32) for _ in range(4)], transform=transform)

    def run(seed, workers):
        loader = DataLoader(
            dataset,
            batch_size=1,
            num_workers=workers,
            generator=gen(seed),
            collate_fn=lambda batch: batch[0]["image"].data,
        )
        return torch.stack(list(loader))

    first, second = run(0, 2), run(0, 2)
    assert torch.equal(first, second)
    assert len({tuple(x.flatten()[::97].tolist()) for x in first}) == 4
    torch.manual_seed(3)
    zero_a = run(0, 0)
    torch.manual_seed(3)
    assert torch.equal(zero_a, run(0, 0))


def test_slice_axis_from_spacing_and_rotation_in_mm():
    image = smooth_image((12, 20, 10), gen(8)).float()[0]
    label = (image > 0).to(torch.int16)
    affine = np.diag([6.0, 1.0, 1.0, 1.0])
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=image, affine=affine),
        seg=tio.LabelMap(tensor=label, affine=affine),
    )
    sampler = RecordingSampler()
    out = RandomDRDMDeformation(sampler, seed=1)(subject)
    assert sampler.last.shape == (12, 2, 20, 10)  # slice-wise along axis 0 (largest spacing)
    field = torch.zeros(3, 12, 20, 10)
    field[1:] = sampler.last.movedim(0, 1).float()
    torch.testing.assert_close(
        out["image"].data, warp(image[None], field[None])[0], atol=1e-5, rtol=0
    )
    expected = warp_labels(label[None].long(), field[None])[0].to(torch.int16)
    assert torch.equal(out["seg"].data.to(torch.int16), expected)
    # the history records the slice axis with the field: the inverse is in-plane too
    assert out.applied_transforms[0][1]["slice_axis"] == 0
    back = out.apply_inverse_transform()
    assert back["image"].data.shape == image.shape
    # the stacked rotation honours the in-plane spacing: same draws, other voxel field
    rotated = 0
    for seed in range(8):
        fields = []
        for spacing in ((1.0, 1.0, 1.0), (1.0, 3.0, 1.0)):
            t = RandomDRDMDeformation(RandomSmoothSampler(amplitude=0.0), stack="affine", seed=seed)
            fields.append(t(disc_subject(32, spacing)).applied_transforms[0][1]["ddf"])
        # rotations (drawn with probability 1/2) differ in voxels; scalings do not
        rotated += not torch.allclose(fields[0], fields[1], atol=1e-3)
    assert rotated >= 2


def test_bigaug_intensity_for_subjects_is_replayable():
    subject = disc_subject(32)
    out = RandomBigAugIntensity(slice_axis=2, seed=0, probability=1.0)(subject)
    assert not torch.equal(out["image"].data, subject["image"].data)
    assert torch.equal(out["seg"].data, subject["seg"].data)
    replayed = out.get_composed_history()(subject)
    assert torch.equal(replayed["image"].data, out["image"].data)


def volume_subject(shape=(16, 16, 8), image_dtype=torch.float32):
    image = smooth_image(shape, gen(4)).float()[0] * 100
    label = (image > 0).to(torch.int16)
    return tio.Subject(
        image=tio.ScalarImage(tensor=image.to(image_dtype)), seg=tio.LabelMap(tensor=label)
    )


def test_queue_patches_share_one_recorded_field_and_invertible_false_keeps_none():
    subject = volume_subject()
    transform = RandomDRDMDeformation(RandomSmoothSampler(3), seed=0)
    queue = tio.Queue(
        tio.SubjectsDataset([subject], transform),
        max_length=4,
        samples_per_volume=4,
        sampler=tio.UniformSampler((8, 8, 4)),
        shuffle_patches=False,
    )
    patches = [queue[i] for i in range(4)]
    fields = [
        arguments["ddf"]
        for patch in patches
        for name, arguments in patch.applied_transforms
        if name == "DRDMFieldDeformation"
    ]
    assert len(fields) == 4
    assert all(f.shape == (3, 16, 16, 8) for f in fields)  # the full volume's field ...
    assert len({f.untyped_storage().data_ptr() for f in fields}) == 1  # ... held once
    # a patch's record still replays on the full subject (the field is the full field)
    out = RandomDRDMDeformation(RandomSmoothSampler(3), seed=0)(subject)
    field = out.applied_transforms[0][1]["ddf"]
    assert len(repr(out.applied_transforms)) < 300 and "SharedField((3, 16, 16, 8)" in repr(field)
    replayed = out.get_composed_history()(subject)
    assert torch.equal(replayed["image"].data, out["image"].data)
    # the opt-out records what ran, without the field; replaying or inverting says why not
    off = RandomDRDMDeformation(RandomSmoothSampler(3), seed=0, invertible=False)(subject)
    name, arguments = off.applied_transforms[0]
    assert name == "DRDMFieldDeformation" and arguments["ddf"] is None
    assert torch.equal(off["image"].data, out["image"].data)  # the same deformation ran
    with pytest.raises(RuntimeError, match="invertible=False"):
        off.apply_inverse_transform()
    with pytest.raises(RuntimeError, match="not recorded"):
        off.get_composed_history()(subject)


def test_integer_images_come_back_float32_and_labels_keep_their_dtype():
    integer = volume_subject(image_dtype=torch.int16)
    floating = volume_subject()
    floating["image"].set_data(integer["image"].data.float())
    a = RandomDRDMDeformation(RandomSmoothSampler(3), seed=2)(integer)
    b = RandomDRDMDeformation(RandomSmoothSampler(3), seed=2)(floating)
    assert a["image"].data.dtype == torch.float32  # as TorchIO's RandomElasticDeformation
    torch.testing.assert_close(a["image"].data, b["image"].data)  # not rounded
    assert not torch.equal(a["image"].data, a["image"].data.round())
    assert a["seg"].data.dtype == torch.int16


def test_repr_shows_the_arguments_and_defaults_are_the_drdm_field_alone():
    from helpers import tiny_model

    transform = RandomDRDMDeformation(tiny_model(), levels=(2, 6), seed=1)
    text = repr(transform)
    assert text.startswith("RandomDRDMDeformation(source=DRDM(2D, T=10")
    for part in ("levels=(2, 6)", "stack=None", "seed=1", "invertible=True"):
        assert part in text
    assert transform.deformer.stack is None and transform.deformer.then is None
    assert RandomDRDMDeformation(tiny_model(), stack="bigaug").deformer.then is not None


@pytest.mark.parametrize("interpolation", ["lanczos", "gaussian"])
def test_lanczos_gaussian_and_reflection(interpolation):
    # TorchIO's image_interpolation names (SimpleITK's kernels, drdm.spatial's implementation)
    # and reflection padding (issue 19): the image by the kernel, the label map by the padding
    subject = disc_subject(32)
    transform = RandomDRDMDeformation(
        RandomSmoothSampler(amplitude=4.0),
        image_interpolation=interpolation,
        padding="reflection",
        seed=0,
    )
    out = transform(subject)
    recorded = out.history[-1]
    assert recorded.image_interpolation == interpolation and recorded.padding == "reflection"
    field = recorded.ddf.as_subclass(torch.Tensor)
    plane = field[None, :2, ..., 0]  # 2D images are (C, W, H, 1): in-plane field
    image = subject["image"].data[None, ..., 0]
    expected = warp(image, plane, interpolation, "reflection")[0]
    torch.testing.assert_close(out["image"].data[..., 0], expected)
    label = subject["seg"].data[None, ..., 0]
    expected_label = warp_labels(label, plane, "onehot", "reflection")[0]
    assert torch.equal(out["seg"].data[..., 0], expected_label)
    replayed = out.get_composed_history()(subject)
    assert torch.equal(replayed["image"].data, out["image"].data)


def test_bspline_warps_with_keys_cubic_and_says_so():
    field = torch.zeros(3, 8, 8, 1)
    with pytest.warns(UserWarning, match="'bspline'.*Keys cubic"):
        DRDMFieldDeformation(field, image_interpolation="bspline")
