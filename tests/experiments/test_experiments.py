"""Tests of the downstream experiments (drdm.experiments, ``drdm experiment``)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from drdm import DRDM, spatial
from drdm.cli.main import main
from drdm.config import load_config
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.errors import InputError
from drdm.experiments import (
    RegistrationConfig,
    SegmentationConfig,
    run_registration,
    run_segmentation,
)
from drdm.experiments.augment import Augmenter, parse_method
from drdm.experiments.datasets import (
    LabelledImage,
    choose_subjects,
    read_acdc,
    read_lung_folder,
    resample_item,
    split_subjects,
)
from drdm.experiments.losses import (
    gradient_penalty,
    local_ncc,
    registration_loss,
    segmentation_bce,
)
from drdm.experiments.unet import registration_unet, segmentation_unet
from drdm.nn import NetworkConfig, RecursiveUNet


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random 2D DRDM model (T = 10, 32 x 32 grid) saved as a checkpoint folder."""
    config = NetworkConfig(ndim=2, widths=(4, 8, 8), bottleneck_width=4, num_steps=10, embed_dim=8)
    network = RecursiveUNet(config, generator=torch.Generator().manual_seed(0))
    process = ForwardDiffusion(ForwardDiffusionConfig(ndim=2, num_steps=10))
    model = DRDM(network, process, [32, 32], training={"note": "unit test"})
    path = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(path)
    return path


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ losses
def test_segmentation_bce_is_eq17_by_hand():
    # one image, C = 2 classes, 2 pixels
    logits = torch.tensor([[[[0.0, 2.0]], [[-1.0, 3.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    s = torch.sigmoid(logits)
    by_hand = 0.0
    for x in range(2):
        for i in range(2):
            lab, p = float(target[0, i, 0, x]), float(s[0, i, 0, x])
            by_hand -= lab * math.log(p) + (1 - lab) * math.log(1 - p)
    by_hand /= 2  # E_x over the 2 pixels, sum over classes
    assert float(segmentation_bce(logits, target)) == pytest.approx(by_hand, rel=1e-6)


def test_registration_loss_is_eq20_by_hand():
    target = torch.zeros(1, 2, 8, 8)
    pred = target.clone()
    pred[:, 0] = 0.5  # constant error of 0.5 voxel in one component, no gradient
    assert float(registration_loss(pred, target)) == pytest.approx(0.25)
    # a ramp u_1 = 0.3 * x_0 (forward differences 0.3 along axis 0): grad term |0.3|
    ramp = torch.zeros(1, 2, 8, 8)
    ramp[:, 1] = 0.3 * torch.arange(8.0)[:, None]
    assert float(registration_loss(ramp, ramp)) == pytest.approx(0.3)
    assert float(registration_loss(ramp, ramp, lambda_grad=2.0)) == pytest.approx(0.6)
    assert float(gradient_penalty(ramp, "l2")) == pytest.approx(0.09)
    both = registration_loss(pred + ramp, ramp, lambda_mse=1.0, lambda_grad=1.0)
    assert float(both) == pytest.approx(0.25 + 0.3)


def test_local_ncc_of_identical_and_scaled_images_is_one():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 1, 16, 16, generator=g)
    assert float(local_ncc(a, a)) == pytest.approx(1.0, abs=5e-3)
    assert float(local_ncc(a, 2 * a + 1)) == pytest.approx(1.0, abs=5e-3)
    assert float(local_ncc(a, torch.rand(1, 1, 16, 16, generator=g))) < 0.5


# ------------------------------------------------------------------------------ networks
def test_unets_shapes_and_seeded_init():
    g = torch.Generator
    seg = segmentation_unet(3, (4, 8, 8), generator=g().manual_seed(1))
    assert seg(torch.zeros(2, 1, 16, 16)).shape == (2, 3, 16, 16)
    seg2 = segmentation_unet(3, (4, 8, 8), generator=g().manual_seed(1))
    for a, b in zip(seg.parameters(), seg2.parameters(), strict=True):
        assert torch.equal(a, b)
    reg = registration_unet(3, (4, 8), generator=g().manual_seed(0))
    out = reg(torch.rand(1, 2, 8, 8, 8))
    assert out.shape == (1, 3, 8, 8, 8)
    assert float(out.detach().abs().max()) < 1e-2  # starts near the identity
    with pytest.raises(ValueError, match="multiples of 4"):
        seg(torch.zeros(1, 1, 18, 18))


# ------------------------------------------------------------------------------ methods
def test_parse_method():
    spec = parse_method("drdm@10/20+flip+intensity")
    assert (spec.base, spec.levels, spec.flip, spec.intensity) == ("drdm", (10, 20), True, True)
    assert parse_method("drdm", (7,)).levels == (7,)
    assert not parse_method("none").augments
    assert parse_method("none+flip").augments
    stacked = parse_method("elastic+bigaug")
    assert (stacked.bigaug, stacked.affine, stacked.intensity) == (True, False, False)
    assert parse_method("none+affine").augments
    for bad in (
        "foo",
        "drdm+mirror",
        "elastic@3",
        "drdm@x",
        "drdm+affine+bigaug",
        "drdm+flip+flip",
    ):
        with pytest.raises(InputError):
            parse_method(bad, (5,))


def test_augmenter_copies_share_fields_and_flip_labels(tiny_model_dir):
    model = DRDM.from_pretrained(tiny_model_dir)
    cache: dict = {}
    plain = Augmenter(parse_method("drdm@3"), 2, model=model, field_cache=cache)
    flipped = Augmenter(parse_method("drdm@3+flip"), 2, model=model, field_cache=cache)
    image = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    label = (image > 0.5).long()
    a_img, a_lab = plain.copy(image, label, seed=0, index=0, copy=0)
    assert len(cache) == 1
    b_img, b_lab = flipped.copy(image, label, seed=0, index=0, copy=0)
    assert len(cache) == 1  # the DRDM field was reused
    assert a_img.shape == (16, 16) and a_lab.dtype == torch.int64
    assert set(torch.unique(b_lab).tolist()) <= {0, 1}
    again = Augmenter(parse_method("drdm@3+flip"), 2, model=model).copy(image, label, 0, 0, 0)
    assert torch.equal(again[0], b_img)  # seeded by (seed, image, copy), not by call order


def test_augmenter_stacks_bigaug_spatial_after_the_base_field():
    """``elastic+affine``: ONE warp by compose(affine, elastic) equals warping the ``elastic``
    copy by the affine field (the base deformation acts first), up to interpolation error;
    the other order would not match (the fields are large enough not to commute)."""
    from drdm.baselines import BigAug
    from drdm.seeding import key_generator

    options = {"sigma": 0.15, "alpha": 0.06}  # smooth, about 3 voxels std on 48 voxels
    cache: dict = {}
    plain = Augmenter(parse_method("elastic"), 2, field_cache=cache, options=options)
    stacked = Augmenter(parse_method("elastic+affine"), 2, field_cache=cache, options=options)
    grid = torch.stack(torch.meshgrid(*[torch.arange(48.0)] * 2, indexing="ij"))
    image = torch.exp(-((grid - torch.tensor([20.0, 26.0]).view(2, 1, 1)) ** 2).sum(0) / 60.0)
    image = image + 0.5 * torch.exp(-((grid - 30.0) ** 2).sum(0) / 20.0)
    label = (image > 0.4).long() + (image > 0.8).long()
    affine = BigAug(2, probabilities={"deformation": 0.0}).field_sampler()
    inside = slice(10, 38)  # away from the border, where the two-step warp lost content
    checked = 0
    for copy in range(8):
        key = (
            "extra",
            0,
            0,
            copy,
            "elastic",
            (),
            False,
            False,
            ("affine", True),
            ("bigaug", False),
        )
        post = affine.sample_ddf(image[None, None], key_generator(*key))
        if float(post.abs().max()) < 2.0:
            continue  # neither rotated nor scaled noticeably
        base_img, _ = plain.copy(image, label, seed=0, index=0, copy=copy)
        base_ddf = cache[(0, 0, copy, "elastic", None)][None]
        one_step, one_label = stacked.copy(image, label, seed=0, index=0, copy=copy)
        assert set(torch.unique(one_label).tolist()) <= {0, 1, 2}
        two_step = spatial.warp(base_img[None, None], post)[0, 0]
        error = float((one_step - two_step)[inside, inside].abs().max())
        wrong_order = spatial.warp(image[None, None], spatial.compose(base_ddf, post))[0, 0]
        wrong = float((wrong_order - two_step)[inside, inside].abs().max())
        assert error < 0.05 < wrong, (error, wrong)
        checked += 1
    assert checked >= 2


# ------------------------------------------------------------------------------ datasets
def _save(path, array, spacing):
    nib.save(nib.Nifti1Image(np.asarray(array), np.diag([*spacing, 1.0])), str(path))


def make_acdc(root, patients=3, shape=(20, 24, 3)):
    g = np.random.default_rng(0)
    for p in range(1, patients + 1):
        folder = root / f"patient{p:03d}"
        folder.mkdir(parents=True)
        _save(folder / f"patient{p:03d}_4d.nii.gz", g.random((*shape, 2)), (1.5, 1.5, 8.0))
        for frame in (1, 12):
            name = f"patient{p:03d}_frame{frame:02d}"
            image = g.random(shape) * 300
            label = np.zeros(shape, dtype=np.uint8)
            label[5:12, 6:14, 1:] = 2  # slice 0 unlabelled: dropped
            label[7:10, 8:12, 1:] = 3
            label[12:15, 4:9, 1:] = 1
            _save(folder / f"{name}.nii.gz", image, (1.5, 1.5, 8.0))
            _save(folder / f"{name}_gt.nii.gz", label, (1.5, 1.5, 8.0))
    (root / "patient001" / "Info.cfg").write_text("ED: 1\nES: 12\n")
    return root


def test_read_acdc_slices_along_coarse_axis(tmp_path):
    root = make_acdc(tmp_path / "acdc")
    items = read_acdc(root, 16)
    assert len(items) == 3 * 2 * 2  # patients x frames x labelled slices
    assert {it.subject for it in items} == {"patient001", "patient002", "patient003"}
    first = items[0]
    assert first.image.shape == (16, 16) and first.label.dtype == np.int64
    assert first.spacing == pytest.approx((1.5 * 24 / 16, 1.5 * 24 / 16))
    assert 0.0 <= first.image.min() and first.image.max() <= 1.0
    assert set(np.unique(first.label)) <= {0, 1, 2, 3}
    assert len(read_acdc(root, 16, max_subjects=1)) == 4
    with pytest.raises(InputError, match="no labelled frames"):
        read_acdc(tmp_path, 16)


@pytest.mark.parametrize(
    ("value", "match"), [(1.5, "non-integer values"), (-1.0, "negative values")]
)
def test_label_maps_are_read_as_labels(tmp_path, value, match):
    root = make_acdc(tmp_path / "acdc", patients=1)
    gt = root / "patient001" / "patient001_frame01_gt.nii.gz"
    label = np.asarray(nib.load(str(gt)).dataobj).astype(np.float32)
    label[0, 0, 1] = value
    _save(gt, label, (1.5, 1.5, 8.0))
    with pytest.raises(InputError, match=f"{gt.name}: label map has {match}"):
        read_acdc(root, 16)
    label[0, 0, 1] = 2.0  # integer values stored as floats are labels
    _save(gt, label, (1.5, 1.5, 8.0))
    assert len(read_acdc(root, 16)) == 4


def test_read_lung_folder_groups_subjects(tmp_path):
    root = tmp_path / "lung"
    (root / "imagesTr").mkdir(parents=True)
    (root / "masksTr").mkdir()
    g = np.random.default_rng(1)
    for subject in (1, 2, 3):
        for phase in (0, 1):
            name = f"LungCT_{subject:04d}_{phase:04d}.nii.gz"
            _save(root / "imagesTr" / name, g.random((12, 10, 8)) * 1000 - 1000, (2, 2, 3))
            mask = np.zeros((12, 10, 8), np.uint8)
            mask[2:8, 2:8, 2:6] = 1
            _save(root / "masksTr" / name, mask, (2, 2, 3))
    _save(root / "imagesTr" / "nomask_0000.nii.gz", g.random((12, 10, 8)), (2, 2, 3))
    items = read_lung_folder(root, 8)
    assert len(items) == 6
    assert sorted({it.subject for it in items}) == ["LungCT_0001", "LungCT_0002", "LungCT_0003"]
    assert items[0].image.shape == (8, 8, 8)
    assert items[0].spacing == pytest.approx((2 * 12 / 8, 2 * 12 / 8, 3 * 12 / 8))
    _save(root / "masksTr" / "LungCT_0001_0000.nii.gz", np.zeros((5, 5, 5)), (1, 1, 1))
    with pytest.raises(InputError, match="differs"):
        read_lung_folder(root, 8)
    with pytest.raises(InputError, match="expected an images folder"):
        read_lung_folder(tmp_path, 8)


def test_resample_and_splits():
    ones = np.ones((6, 4), np.float32)
    item = LabelledImage(ones, ones.astype(np.int64), (1.0, 2.0), "a", "a")
    out = resample_item(item, 12)
    assert out.image.shape == (12, 12) and out.spacing == (0.5, 1.0)
    assert out.label[:, :2].sum() == 0  # padding on both sides of the short axis
    items = [LabelledImage(item.image, item.label, (1, 1), f"s{i}", f"s{i}") for i in range(6)]
    pool, test = split_subjects(items, 2, seed=3)
    assert len(test) == 2 and not set(pool) & set(test) and len(pool) == 4
    assert split_subjects(items, 2, seed=3) == (pool, test)
    assert choose_subjects(pool, 2, 0) == choose_subjects(pool, 2, 0)
    with pytest.raises(InputError):
        split_subjects(items[:1], None, 0)


# ------------------------------------------------------------------------------ end to end
SEG_ARGS = [
    "--size", "16", "--widths", "4,8", "--steps", "4", "--batch-size", "4",
    "--copies", "2", "--test-subjects", "3", "--levels", "2,3", "--quiet",
]  # fmt: skip


def test_segment_cli_end_to_end(tmp_path, tiny_model_dir):
    out = tmp_path / "seg"
    argv = ["experiment", "segment", "--out", str(out), "--model", str(tiny_model_dir)]
    argv += [*SEG_ARGS, "--seeds", "0,1", "--methods", "none,elastic,bigaug,drdm"]
    assert main([*argv, "--mix", "flip"]) == 0
    for name in ("config.yaml", "results.csv", "summary.csv", "table.md", "examples.png"):
        assert (out / name).is_file(), name
    rows = read_rows(out / "results.csv")
    assert len(rows) == 2 * 4 * 3 * 3  # seeds x methods x test images x classes
    assert {r["method"] for r in rows} == {"none", "elastic", "bigaug", "drdm+flip"}
    table = (out / "table.md").read_text()
    for text in ("image size 16 x 16", "3 held-out images", "seeds 0, 1", "4 steps", "LV dsc"):
        assert text in table
    cfg = load_config(SegmentationConfig, out / "config.yaml")
    assert cfg.seeds == (0, 1) and cfg.image_size == 16 and cfg.widths == (4, 8)


@pytest.mark.slow  # two segmentation runs (about 8 s)
def test_segment_is_deterministic(tmp_path, tiny_model_dir):
    cfg = SegmentationConfig(
        image_size=16, widths=(4, 8), steps=3, batch_size=4, copies=1, test_subjects=2,
        methods=("drdm@2+intensity",), seeds=(5,), model=str(tiny_model_dir),
    )  # fmt: skip
    run_segmentation(cfg, tmp_path / "a", log=None)
    run_segmentation(cfg, tmp_path / "b", log=None)
    a, b = ((tmp_path / d / "results.csv").read_text() for d in "ab")
    assert a == b and len(a.splitlines()) == 1 + 2 * 3


def test_segment_on_acdc_folder(tmp_path):
    root = make_acdc(tmp_path / "acdc", patients=4)
    out = tmp_path / "seg"
    argv = ["experiment", "segment", "--out", str(out), "--data", str(root), *SEG_ARGS]
    assert main([*argv, "--test-subjects", "2", "--methods", "none,elastic", "--seeds", "0"]) == 0
    rows = read_rows(out / "results.csv")
    assert {r["image"].split("_")[0] for r in rows} <= {f"patient{p:03d}" for p in range(1, 5)}
    assert len({r["image"] for r in rows}) == 2 * 2 * 2  # test subjects x frames x slices


def test_register_cli_end_to_end(tmp_path, tiny_model_dir):
    out = tmp_path / "reg"
    argv = ["experiment", "register", "--out", str(out), "--model", str(tiny_model_dir)]
    argv += [
        "--size", "16", "--widths", "4,8", "--pretrain-steps", "3", "--finetune-steps", "2",
        "--copies", "1", "--train-subjects", "2", "--test-subjects", "3", "--seeds", "0",
        "--levels-aug", "2", "--levels-syn", "3", "--batch-size", "2", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    for name in ("config.yaml", "results.csv", "table.md", "boxplot.png", "examples.png"):
        assert (out / name).is_file(), name
    rows = read_rows(out / "results.csv")
    assert {(r["method"], r["finetuned"]) for r in rows} == {
        (m, f) for m in ("none", "mrbs", "drdm") for f in ("False", "True")
    }
    identity = [r for r in rows if r["method"] == "none" and r["finetuned"] == "False"]
    assert all(float(r["fold_ratio"]) == 0.0 for r in identity)
    table = (out / "table.md").read_text()
    assert "| DRDM | ✓ |" in table and "image size 16 x 16" in table


def test_register_3d_thorax_mrbs(tmp_path):
    cfg = RegistrationConfig(
        data="thorax", image_size=16, widths=(4, 8), pretrain_steps=2, finetune=False,
        copies=1, train_subjects=1, test_subjects=2, seeds=(0,), methods=("mrbs",),
        batch_size=1,
    )  # fmt: skip
    result = run_registration(cfg, tmp_path / "reg3d", log=None)
    assert {r["class"] for r in result.rows} == {"left lung", "right lung"}
    assert "16 x 16 x 16" in result.table


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("segment-phantoms-cpu", SegmentationConfig),
        ("segment-acdc-gpu", SegmentationConfig),
        ("register-phantoms-cpu", RegistrationConfig),
        ("register-lung-gpu", RegistrationConfig),
    ],
)
def test_shipped_configs_load(name, cls):
    path = Path(__file__).resolve().parents[2] / "configs" / "experiments" / f"{name}.yaml"
    cfg = load_config(cls, path)
    cfg.validate()
    if name.endswith("cpu"):
        assert cfg == cls()  # the CPU configs are the defaults


def test_experiment_bad_input(tmp_path, capsys):
    base = ["experiment", "segment", "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*base, "--data", str(tmp_path / "missing")]) == 2
    assert main([*base, "--methods", "none,warp"]) == 2
    assert main([*base, "--size", "30"]) == 2  # not a multiple of 8
    err = capsys.readouterr().err
    assert "missing: not a directory" in err
    assert "unknown base 'warp'" in err and "multiple of 8" in err


def test_experiment_bad_config_names_the_file_once(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: many\n")
    base = ["experiment", "segment", "--out", str(tmp_path / "o"), "--quiet", "--config"]
    assert main([*base, str(bad)]) == 2
    assert main([*base, str(tmp_path / "none.yaml")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].count(str(bad)) == 1 and "steps: expected an integer" in lines[0]
    assert lines[1].count("none.yaml") == 1 and "no such config file" in lines[1]


def test_per_seed_means_merges_folders_and_skips_empty_masks(tmp_path):
    from drdm.experiments.report import per_seed_means

    header = "seed,method,image,class,dsc,sensitivity,precision,asd_mm,hd95_mm\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "results.csv").write_text(
        header + "0,drdm,x,RV,0.5,1,1,2.0,4\n0,drdm,y,RV,0.7,1,1,inf,inf\n"
    )
    (tmp_path / "b" / "results.csv").write_text(header + "1,drdm,x,RV,0.9,1,1,1.0,3\n")
    dsc = per_seed_means([tmp_path / "a", tmp_path / "b"])
    assert dsc == {("drdm", 0): pytest.approx(0.6), ("drdm", 1): pytest.approx(0.9)}
    assert per_seed_means([tmp_path / "a"], "asd_mm") == {("drdm", 0): 2.0}  # inf left out
    with pytest.raises(ValueError, match="two folders"):
        per_seed_means([tmp_path / "a", tmp_path / "a"])


def test_the_parts_of_run_segmentation():
    from drdm.experiments import segment

    cfg = SegmentationConfig(
        image_size=16, widths=(4, 8), steps=2, batch_size=4, copies=1, test_subjects=2,
        methods=("elastic",), seeds=(0,),
    )  # fmt: skip
    (spec,) = segment._method_specs(cfg)
    with pytest.raises(InputError, match="methods repeat"):
        segment._method_specs(SegmentationConfig(methods=("elastic", "elastic")))
    data = segment._load_data(cfg)
    train = segment._train_items(cfg, data, 0)
    test_images, _ = segment.stack_items(data.test)
    augmenter = segment.Augmenter(spec, 2)
    run = segment._run_method(
        cfg, spec, augmenter, train, 0, data, test_images, torch.device("cpu")
    )
    assert len(run.rows) == len(data.test) * len(data.classes)
    assert {r["method"] for r in run.rows} == {"elastic"} and run.pool_size == 2 * len(train)
    assert run.examples[0][0].shape == (16, 16) and run.seconds >= run.seconds_augment
