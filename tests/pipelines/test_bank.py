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
from drdm.pipelines.bank import DEFAULT_JITTER, FieldBank, ImageKey, image_fingerprint
from drdm.spatial import compose, magnitude_stats, warp, warp_labels
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
    # ... but an only entry keyed by a file path serves no image that does not name it
    by_path = FieldBank(2)
    by_path.add("/data/case.nii.gz", single.fields(0))
    with pytest.raises(KeyError, match="keyed by the file '/data/case.nii.gz'"):
        by_path.lookup(image=imgs[2][None])
    with pytest.raises(KeyError, match="keyed by the file"):
        DRDMDeform(by_path, stack=None)(imgs[2])
    assert torch.equal(by_path.lookup("/data/./case.nii.gz"), single.fields(0))
    with pytest.raises(InputError, match="grid"):
        single.draw(gen(0), image=torch.zeros(1, 20, 24))
    assert image_fingerprint(imgs[0]) == image_fingerprint(imgs[0].double())
    assert image_fingerprint(imgs[0]) != image_fingerprint(imgs[1])


def test_deform_draws_every_bank_field_and_warps_once():
    imgs = images()
    bank = FieldBank.build(
        RandomSmoothSampler(amplitude=2.0), imgs, num_fields=4, generator=gen(1), jitter=0.0
    )
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
    # with BigAug's geometry stacked the returned field is the composed one
    stacked = DRDMDeform(bank, stack="bigaug", ddf_key="ddf", seed=1)
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


def test_draws_never_repeat_a_geometry():
    # before issue 19 a draw was one of the K stored fields: with K = 2, 40 draws gave 2
    imgs = [smooth_image((64, 56), gen(s)).float()[0, 0] for s in (1, 2)]
    bank = FieldBank.build(RandomSmoothSampler(amplitude=3.0), imgs, num_fields=2, generator=gen(0))
    assert bank.jitter == DEFAULT_JITTER == 0.005
    deform = DRDMDeform(bank, stack=None, ddf_key="ddf", seed=0)
    image = imgs[1][None]
    drawn = torch.stack([deform({"image": image})["ddf"] for _ in range(40)])
    flat = drawn.reshape(40, -1)
    gaps = torch.cdist(flat.double(), flat.double()) / flat.shape[1] ** 0.5  # RMS distance
    gaps += torch.eye(40, dtype=torch.float64) * 1e9
    assert gaps.min() > 0.1  # voxels: no two draws share their geometry
    # each draw is still one of this image's fields, composed with a small fresh one
    nearest = [min(float((d - f).pow(2).mean().sqrt()) for f in bank.fields(1)) for d in drawn]
    others = [min(float((d - f).pow(2).mean().sqrt()) for f in bank.fields(0)) for d in drawn]
    assert max(nearest) < 2.0 and min(others) > max(nearest)
    # Table-1 magnitudes move little: the fresh field is 0.5 % of the size (std per axis)
    bare = magnitude_stats(bank.fields(1)).mean_percent.mean()
    assert magnitude_stats(drawn).mean_percent.mean() == pytest.approx(float(bare), rel=0.1)


def test_the_fresh_field_is_composed_after_the_bank_field():
    image = torch.zeros(1, 48, 40)
    zero = FieldBank(2)
    zero.add("z", torch.zeros(1, 2, 48, 40))
    psi = zero.draw(gen(3), key="z")  # compose(ψ, 0) = ψ
    assert psi.abs().max() > 0
    spread = psi.std(dim=(1, 2)) / torch.tensor([48.0, 40.0])
    assert float(spread.min()) > 0.002 and float(spread.max()) < 0.02  # ~ jitter of the size
    assert magnitude_stats(psi[None]).mean_percent < 2.5
    phi = smooth_image((48, 40), gen(4)).float()[0].expand(2, 48, 40) * 3.0
    bank = FieldBank(2)
    bank.add("p", phi[None].contiguous())
    drawn = bank.draw(gen(3), key="p", image=image)
    torch.testing.assert_close(drawn, compose(psi[None], phi[None])[0], atol=1e-5, rtol=0)
    bank.jitter = 0.0  # the bare bank field
    assert torch.equal(bank.draw(gen(3), key="p"), phi)
    with pytest.raises(ValueError, match="jitter"):
        FieldBank(2, jitter=0.5)


def test_slicewise_bank_draws_one_in_plane_fresh_field_for_all_slices():
    bank = FieldBank(2)
    bank.add("stack", torch.zeros(2, 3, 30, 28, 5), slice_axis=2)
    drawn = bank.draw(gen(1), key="stack", image=torch.zeros(1, 30, 28, 5))
    assert not drawn[2].any() and drawn[:2].abs().max() > 0
    for k in range(1, 5):
        assert torch.equal(drawn[..., k], drawn[..., 0])


def test_a_bank_keyed_by_path_refuses_an_image_of_another_geometry(tmp_path):
    imgs = images()
    affine = torch.diag(torch.tensor([1.5, 1.5, 8.0, 1.0]))
    path = str(tmp_path / "case.nii.gz")
    bank = FieldBank.build(
        RandomSmoothSampler(), {path: imgs[0]}, num_fields=2, affines={path: affine}
    )
    same = bank.key_for(str(tmp_path / "." / "case.nii.gz"), affine.numpy())
    assert isinstance(same, ImageKey) and bank.key_for("/elsewhere.nii.gz", affine) is None
    assert bank.draw(gen(0), key=same, image=imgs[0][None]).shape == (2, 24, 24)
    flipped = affine.clone()
    flipped[0, 0] = -1.5
    flipped[0, 3] = 34.5  # the same grid, reoriented (a flip of the first axis)
    with pytest.raises(InputError, match="grid or orientation") as err:
        bank.draw(gen(0), key=bank.key_for(path, flipped), image=imgs[0][None])
    assert "\n" not in str(err.value) and "case.nii.gz" in str(err.value)
    # without a recorded affine the first one drawn with is the entry's geometry
    learned = FieldBank.build(RandomSmoothSampler(), {path: imgs[0]}, num_fields=2)
    assert learned.affine(path) is None
    learned.draw(gen(0), key=learned.key_for(path, affine), image=imgs[0][None])
    assert learned.affine(path) == tuple(float(v) for v in affine.flatten())
    with pytest.raises(InputError, match="grid or orientation"):
        learned.draw(gen(0), key=learned.key_for(path, flipped), image=imgs[0][None])
    # the geometry travels with the file
    bank.save(tmp_path / "bank.safetensors")
    loaded = FieldBank.load(tmp_path / "bank.safetensors")
    assert loaded.affine(path) == bank.affine(path) and loaded.jitter == bank.jitter
    with pytest.raises(InputError, match="grid or orientation"):
        loaded.draw(gen(0), key=loaded.key_for(path, flipped), image=imgs[0][None])


def test_monai_refuses_a_path_keyed_bank_field_after_a_reorientation(tmp_path):
    pytest.importorskip("monai")
    from monai.data import MetaTensor
    from monai.transforms import Compose, Flipd

    from drdm.adapters.monai import DRDMDeformd

    image = smooth_image((24, 24), gen(1)).float()[0]  # (1, 24, 24)
    path = str(tmp_path / "case.nii.gz")
    affine = torch.diag(torch.tensor([1.5, 1.5, 1.0, 1.0], dtype=torch.float64))
    bank = FieldBank.build(
        RandomSmoothSampler(), {path: image[0]}, num_fields=2, affines={path: affine}
    )

    def sample():
        value = MetaTensor(image.clone(), affine=affine.clone())
        value.meta["filename_or_obj"] = path
        return {"image": value}

    deform = DRDMDeformd(["image"], bank, stack=None, seed=0)
    assert deform(sample())["image"].shape == (1, 24, 24)
    flipped = Flipd(["image"], spatial_axis=0)(sample())  # MONAI updates the affine
    with pytest.raises(InputError, match="grid or orientation"):
        deform(flipped)
    with pytest.raises(RuntimeError) as err:  # inside Compose, MONAI wraps the error
        Compose([Flipd(["image"], spatial_axis=0), deform])(sample())
    assert "grid or orientation" in str(err.value.__cause__)


def test_save_into_an_unwritable_folder_is_one_line_naming_it(tmp_path, monkeypatch):
    bank = FieldBank.build(RandomSmoothSampler(), images()[:1], num_fields=2)
    missing = tmp_path / "missing"
    with pytest.raises(InputError, match="missing: cannot save the field bank") as err:
        bank.save(missing / "bank.safetensors")
    assert "\n" not in str(err.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        bank.save(tmp_path / "file" / "bank.safetensors")
    # a write that fails half-way (a full disk) leaves the previous file and no temporary
    target = tmp_path / "bank.safetensors"
    bank.save(target)
    before = target.read_bytes()

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError(28, "No space left on device")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(InputError, match=f"{tmp_path}: .*No space left on device"):
        bank.save(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.safetensors", "file"]


def _manifest_of(folder, fields, settings=None, axis_column=None):
    """A hand-written augment manifest of ``.npy`` fields of one source (and a run.json)."""
    rows = ["ddf,source_image,level" + (",slice_axis" if axis_column is not None else "")]
    for i, field in enumerate(fields):
        np.save(folder / f"f{i}_ddf.npy", field.numpy())
        cell = "" if axis_column is None else f",{'' if axis_column == '' else axis_column}"
        rows.append(f"f{i}_ddf.npy,/data/case.nii.gz,30{cell}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    if settings is not None:
        import json

        (folder / "run.json").write_text(json.dumps({"settings": settings}))


def test_from_manifest_never_reads_the_slice_axis_from_the_values(tmp_path):
    # a genuinely 3D field (a 3D model's) with no displacement along axis 2: before issue 18
    # from_manifest called it a 2D model's slice-wise field (one component exactly zero)
    # and made a 2D bank: the jitter and the stacked BigAug then acted in-plane only
    field = torch.zeros(3, 20, 18, 6)
    field[:2] = smooth_image((20, 18, 6), gen(1)).float()[0, 0] * 2.0
    _manifest_of(tmp_path, [field, field * 0.5], {"method": "elastic", "ndim": 3, "stack": "none"})
    bank = FieldBank.from_manifest(tmp_path)
    assert bank.ndim == 3 and bank.slice_axis("/data/case.nii.gz") is None
    drawn, axis = bank.draw_with_axis(gen(0), key="/data/case.nii.gz")
    assert axis is None and drawn[2].abs().max() > 0  # a 3D fresh field, also along axis 2
    deform = DRDMDeform(bank, stack="bigaug", bank_key="id", ddf_key="ddf", seed=0)
    assert deform.ndim == 3 and deform.then.ndim == 3  # BigAug's 3D geometry is stacked
    image = smooth_image((20, 18, 6), gen(2)).float()[0]
    out = deform({"image": image, "id": "/data/case.nii.gz"})
    assert out["ddf"][2].abs().max() > 0
    # the same fields declared slice-wise (the caller's word) give a 2D bank
    flat = FieldBank.from_manifest(tmp_path, slice_axis=2)
    assert flat.ndim == 2 and flat.slice_axis("/data/case.nii.gz") == 2
    drawn, axis = flat.draw_with_axis(gen(0), key="/data/case.nii.gz")
    assert axis == 2 and not drawn[2].any()  # one in-plane fresh field for all slices
    with pytest.raises(InputError, match="not slice-wise along axis 0"):
        FieldBank.from_manifest(tmp_path, slice_axis=0)


def test_from_manifest_takes_the_axis_from_the_run_or_asks(tmp_path):
    field = torch.zeros(3, 12, 10, 4)
    field[:2] = 1.0
    _manifest_of(tmp_path, [field], {"method": "drdm", "slice_axis": "auto", "stack": "none"})
    with pytest.raises(InputError, match="pass slice_axis"):  # a DRDM run records no ndim
        FieldBank.from_manifest(tmp_path)
    assert FieldBank.from_manifest(tmp_path, slice_axis=None).ndim == 3
    _manifest_of(tmp_path, [field], {"method": "bigaug", "ndim": 2, "slice_axis": 2})
    assert FieldBank.from_manifest(tmp_path).slice_axis("/data/case.nii.gz") == 2
    _manifest_of(tmp_path, [field], {"method": "drdm", "slice_axis": "auto"}, axis_column=2)
    assert FieldBank.from_manifest(tmp_path).slice_axis("/data/case.nii.gz") == 2
    _manifest_of(tmp_path, [field], {"method": "drdm", "slice_axis": "auto"}, axis_column="")
    assert FieldBank.from_manifest(tmp_path).ndim == 3  # an empty cell: not slice-wise


def test_entries_carry_their_slice_axis(tmp_path):
    bank = FieldBank(2)
    stack = torch.zeros(2, 3, 12, 10, 4)
    stack[:, 1:] = 0.5  # slice-wise along axis 0
    with pytest.raises(InputError, match="give their slice_axis"):
        bank.add("s", stack)
    with pytest.raises(InputError, match="not slice-wise along axis 2"):
        bank.add("s", stack, slice_axis=2)
    bank.add("s", stack, slice_axis=0)
    with pytest.raises(InputError, match="no slice axis"):
        bank.add("t", torch.zeros(1, 2, 12, 10), slice_axis=0)
    bank.save(tmp_path / "bank.safetensors")
    assert FieldBank.load(tmp_path / "bank.safetensors").slice_axis("s") == 0
    drawn, axis = bank.draw_with_axis(gen(1), key="s", image=torch.zeros(1, 12, 10, 4))
    assert axis == 0 and not drawn[0].any()
    for k in range(1, 12):  # one in-plane fresh field shared by the slices along axis 0
        assert torch.equal(drawn[1:, k] - stack[0, 1:, k], drawn[1:, 0] - stack[0, 1:, 0])
