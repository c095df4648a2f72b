"""Tests of drdm.pipelines.bank.FieldBank: building, lookup, drawing, files, manifests and
DRDMDeform use."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from conftest import smooth_image, write_nifti
from drdm.errors import InputError
from drdm.pipelines import DRDMDeform
from drdm.pipelines.bank import FieldBank, image_fingerprint
from drdm.spatial import warp, warp_labels
from helpers import RandomSmoothSampler, gen, label_map, tiny_model


def images():
    return [smooth_image((24, 24), gen(s)).float()[0, 0] for s in (1, 2, 3)]


def test_build_shapes_levels_and_cost():
    model = tiny_model()
    bank = FieldBank.build(model, images()[:2], num_fields=3, levels=(2, 6), generator=gen(0))
    assert len(bank) == 2 and bank.keys() == [0, 1] and bank.ndim == 2
    assert bank.fields(0).shape == (3, 2, 24, 24)
    assert bank.levels(1) == [2, 6, 2]  # levels in turn
    assert bank.build_seconds > 0 and bank.nbytes == 2 * 3 * 2 * 24 * 24 * 4
    f = bank.fields(0)
    assert not torch.equal(f[0], f[2])  # independent draws at the same level
    # the same generator seed gives the same bank bit for bit
    again = FieldBank.build(model, images()[:2], num_fields=3, levels=(2, 6), generator=gen(0))
    assert torch.equal(again.fields(1), bank.fields(1))
    with pytest.raises(ValueError, match="num_fields"):
        FieldBank.build(model, images(), num_fields=0)
    with pytest.raises(ValueError, match="levels"):
        FieldBank.build(RandomSmoothSampler(), images(), levels=(3,))


def test_lookup_by_key_content_and_errors():
    imgs = images()
    bank = FieldBank.build(RandomSmoothSampler(), {"a": imgs[0], "b": imgs[1]}, num_fields=2)
    assert torch.equal(bank.lookup("a"), bank.fields("a"))
    assert torch.equal(bank.lookup(image=imgs[1][None]), bank.fields("b"))  # by content
    with pytest.raises(KeyError, match="no bank entry"):
        bank.lookup(image=imgs[2][None])
    with pytest.raises(KeyError, match="no bank entry 'c'"):
        bank.lookup("c")
    single = FieldBank.build(RandomSmoothSampler(), [imgs[0]], num_fields=2)
    assert torch.equal(single.lookup(image=imgs[2][None]), single.fields(0))  # only entry
    with pytest.raises(InputError, match="grid"):
        single.draw(gen(0), image=torch.zeros(1, 20, 24))
    assert image_fingerprint(imgs[0]) == image_fingerprint(imgs[0].double())
    assert image_fingerprint(imgs[0]) != image_fingerprint(imgs[1])


def test_deform_draws_every_bank_field_and_warps_once():
    imgs = images()
    bank = FieldBank.build(RandomSmoothSampler(amplitude=2.0), imgs, num_fields=4, generator=gen(1))
    plain = DRDMDeform(bank, stack=None, ddf_key="ddf", seed=0)
    image = imgs[2][None]
    label = torch.from_numpy(label_map())[None]
    seen = set()
    for _ in range(24):
        out = plain({"image": image, "label": label})
        matches = [k for k, f in enumerate(bank.fields(2)) if torch.equal(out["ddf"], f)]
        assert len(matches) == 1  # always one of THIS image's fields
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}
    assert bank.expected_distinct(16) == pytest.approx(4 * (1 - 0.75**16))
    # with the default stack (BigAug geometry) the returned field is the composed one
    stacked = DRDMDeform(bank, ddf_key="ddf", seed=1)
    assert stacked.stack == "bigaug" and stacked.intensity is None
    moved = 0
    for k in range(6):
        out = stacked({"image": image, "label": label}, generator=gen(k))
        ddf = out["ddf"][None]
        torch.testing.assert_close(out["image"], warp(image[None], ddf)[0], atol=1e-5, rtol=0)
        assert torch.equal(out["label"], warp_labels(label[None], ddf)[0])
        moved += min(float((ddf[0] - f).abs().max()) for f in bank.fields(2)) > 1.0
    assert moved >= 2
    # explicit keys (dict entry or key=); layouts follow the bank's shapes
    keyed = DRDMDeform(bank, stack=None, bank_key="id", ddf_key="ddf")
    out = keyed({"image": torch.zeros(24, 24), "id": 1}, generator=gen(0))
    assert any(torch.equal(out["ddf"], f) for f in bank.fields(1))
    assert keyed.resolve_layout(torch.zeros(24, 24)) == "spatial"
    assert keyed.resolve_layout(torch.zeros(1, 24, 24)) == "channel_first"
    with pytest.raises(ValueError, match="level"):
        DRDMDeform(bank, level=3)


def test_slicewise_bank_on_stacks_and_batches():
    vol = smooth_image((10, 12, 4), gen(5)).float()[0, 0]
    bank = FieldBank.build(RandomSmoothSampler(), [vol], num_fields=2, spacing=(1.0, 1.0, 8.0))
    assert bank.ndim == 2 and bank.fields(0).shape == (2, 3, 10, 12, 4)
    assert not bank.fields(0)[:, 2].any()  # slice-wise along the 8 mm axis
    deform = DRDMDeform(bank, layout="batch", ddf_key="ddf", seed=2)
    out = deform({"image": vol.expand(3, 1, 10, 12, 4), "label": (vol > 0).expand(3, 10, 12, 4)})
    assert out["ddf"].shape == (3, 3, 10, 12, 4) and not out["ddf"][:, 2].any()
    assert out["label"].shape == (3, 10, 12, 4) and out["label"].dtype == torch.bool


def test_save_load_round_trip(tmp_path):
    imgs = images()
    bank = FieldBank.build(RandomSmoothSampler(), {"a": imgs[0], 7: imgs[1]}, num_fields=2)
    bank.save(tmp_path / "bank.safetensors")
    loaded = FieldBank.load(tmp_path / "bank.safetensors")
    assert loaded.keys() == ["a", 7] and loaded.ndim == 2
    assert torch.equal(loaded.fields(7), bank.fields(7))
    assert torch.equal(loaded.lookup(image=imgs[0][None]), bank.fields("a"))
    assert loaded.build_seconds == pytest.approx(bank.build_seconds)


def test_from_manifest_of_augment_npy_outputs(tmp_path):
    from drdm.cli.main import main

    for name, seed in (("a", 0), ("b", 1)):
        write_nifti(tmp_path / f"{name}.nii.gz", smooth_image((24, 20), gen(seed))[0, 0].numpy())
    out = tmp_path / "aug"
    args = ["augment", "--input", str(tmp_path), "--method", "elastic", "--per-level", "3"]
    args += ["--ddf-format", "npy", "--stack", "none", "--out", str(out), "--no-figure"]
    try:
        code = main([*args, "--quiet"])
    except SystemExit as exc:  # the CLI may exit explicitly
        code = exc.code
    assert code in (0, None)
    bank = FieldBank.from_manifest(out)
    assert len(bank) == 2 and bank.ndim == 2
    source = str(tmp_path / "a.nii.gz")
    fields = bank.fields(source)
    assert fields.shape == (3, 2, 24, 20)
    with (out / "manifest.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["source_image"].endswith("a.nii.gz")]
    np.testing.assert_array_equal(fields[1].numpy(), np.load(out / rows[1]["ddf"]))
    # lookup by another spelling of the same path
    assert torch.equal(bank.fields(str(tmp_path / "." / "a.nii.gz")), fields)


def test_from_manifest_errors_and_stack_warning(tmp_path):
    (tmp_path / "manifest.csv").write_text("ddf,source_image,level\nx_ddf.nii.gz,/a.nii.gz,3\n")
    with pytest.raises(InputError, match="--ddf-format npy"):
        FieldBank.from_manifest(tmp_path)
    np.save(tmp_path / "x_ddf.npy", np.zeros((2, 8, 8), np.float32))
    (tmp_path / "manifest.csv").write_text("ddf,source_image,level\nx_ddf.npy,/a.nii.gz,3\n")
    (tmp_path / "run.json").write_text('{"settings": {"stack": "bigaug"}}')
    with pytest.warns(UserWarning, match="--stack none"):
        bank = FieldBank.from_manifest(tmp_path / "manifest.csv")
    assert bank.levels("/a.nii.gz") == [3]
    with pytest.raises(InputError, match="no such manifest"):
        FieldBank.from_manifest(tmp_path / "missing.csv")


def test_a_2d_bank_serves_images_held_with_a_singleton_axis():
    # TorchIO holds a 2D image as (C, W, H, 1): the bank finds it by content and lifts its 2D
    # fields to that grid with zero displacement along the singleton axis
    imgs = images()
    bank = FieldBank.build(RandomSmoothSampler(), imgs[:2], num_fields=3)
    held = imgs[1][None, :, :, None]  # (1, 24, 24, 1)
    assert torch.equal(bank.lookup(image=held), bank.fields(1))
    lifted = bank.draw(gen(4), image=held)
    flat = bank.draw(gen(4), image=imgs[1][None])
    assert lifted.shape == (3, 24, 24, 1) and flat.shape == (2, 24, 24)
    torch.testing.assert_close(lifted[:2, :, :, 0], flat)
    assert lifted[2].abs().max() == 0
    with pytest.raises(InputError, match="grid"):
        bank.draw(gen(4), key=1, image=torch.zeros(1, 24, 12, 1))
