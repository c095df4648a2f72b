"""Tests of drdm.training: config files, data preprocessing, augmentation, the training loop,
checkpoints and bit-identical resumption."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from drdm.checkpoint import load_pretrained
from drdm.cli.main import main as cli_main
from drdm.config import to_dict
from drdm.errors import InputError
from drdm.training import (
    AugmentConfig,
    OptimConfig,
    TrainConfig,
    augment_batch,
    build_training_data,
    load_train_config,
    save_train_config,
    tensors_sha256,
    train,
)
from drdm.training.config import learning_rate
from drdm.training.data import auto_slice_axis, fit_to_size, normalise_intensity
from drdm.training.state import list_checkpoints, load_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMOKE = CONFIGS / "smoke.yaml"


def _smoke(**changes) -> TrainConfig:
    """The smoke config with dotted-key overrides, e.g. ``optim__steps=4``."""
    data = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return TrainConfig.from_dict(data)


def _write_nifti(path: Path, array: np.ndarray, spacing) -> Path:
    affine = np.diag([*spacing, *([1.0] * (4 - len(spacing)))])
    nib.save(nib.Nifti1Image(array.astype(np.float32), affine), str(path))
    return path


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "name",
    ["smoke.yaml", "default-2d.yaml", "default-3d.yaml"]
    + sorted(f"training/{p.name}" for p in (CONFIGS / "training").glob("*.yaml")),
)
def test_shipped_configs_load(name):
    config = load_train_config(CONFIGS / name)
    assert isinstance(config, TrainConfig)
    assert config.network.ndim == config.forward.ndim == len(config.data.image_size)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_round_trip(tmp_path, suffix):
    config = load_train_config(SMOKE)
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, threshold=0.1, file_fraction=0.5, files=("a",)),
    )
    path = tmp_path / f"cfg{suffix}"
    save_train_config(config, path)
    again = load_train_config(path)
    assert again == config
    assert to_dict(again) == to_dict(config)


def test_implied_fields_follow_image_size():
    config = TrainConfig.from_dict(
        {"data": {"image_size": [16, 16, 16], "phantoms": {"kind": "thorax3d"}}}
    )
    assert config.network.ndim == config.forward.ndim == 3
    config = TrainConfig.from_dict({"forward": {"num_steps": 12}, "data": {"phantoms": {}}})
    assert config.network.num_steps == 12


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optim: {stpes: 3}", "optim.stpes: unknown key"),
        ("data: {phantoms: {count: many}}", "data.phantoms.count: expected an integer"),
        ("network: {widths: [4, 8], nrom: all}", "network.nrom: unknown key"),
        ("data: {image_size: [30, 32], phantoms: {}}", "multiple of 8"),
        ("data: {image_size: [32, 32]}", "no training data"),
        ("data: {phantoms: {kind: thorax3d}}", "does not fit a 2D model"),
        ("forward: {ndim: 3}\ndata: {phantoms: {}}", "forward.ndim (3)"),
        ("data: {phantoms: {}}\nbogus: 1", "bogus: unknown key"),
        ("data: [1, 2", "cannot parse config"),
    ],
)
def test_bad_config_one_line_error(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_train_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


def test_cli_reports_bad_config_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {stpes: 3}\ndata: {phantoms: {}}\n")
    assert cli_main(["train", "--config", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optim.stpes" in err and str(bad) in err

    missing = tmp_path / "missing.yaml"
    missing.write_text("data: {image_size: [32, 32], files: [nowhere/scan.nii.gz]}\n")
    out = tmp_path / "run"
    assert cli_main(["train", "--config", str(missing), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere/scan.nii.gz" in err
    assert not (out / "checkpoints").exists()


# --------------------------------------------------------------------------- data


def test_normalise_intensity_threshold_and_percentiles():
    array = np.array([-1000.0, -500.0, 0.0, 50.0, 100.0])
    out = normalise_intensity(array, threshold=-100.0, percentiles=(0, 100))
    np.testing.assert_allclose(out, [0, 0, 0.5, 0.75, 1.0], atol=1e-6)
    assert normalise_intensity(np.full(5, 3.0), None, (0, 100)).max() == 0


def test_fit_to_size_keeps_aspect_and_pads():
    # 10 x 40 voxels of 2 x 1 mm: a 20 x 40 mm rectangle, fitted into 32 x 32 -> 16 x 32
    out = fit_to_size(np.ones((10, 40)), (2.0, 1.0), (32, 32))
    assert out.shape == (32, 32)
    inside = out > 0.5
    assert inside.sum(0).tolist() == [16] * 32
    assert inside[:8].sum() == 0 and inside[24:].sum() == 0


def test_auto_slice_axis():
    assert auto_slice_axis((200, 180, 10), (1.25, 1.25, 8.0)) == 2  # coarsest spacing
    assert auto_slice_axis((64, 12, 64), (1.0, 1.0, 1.0)) == 1  # isotropic: fewest voxels
    assert auto_slice_axis((40, 40, 40), (3.0, 1.0, 1.0)) == 0


def test_stack_is_cut_into_slices(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.random((20, 24, 6)) * 100.0
    stack[:, :, 5] = 7.0  # a blank slice, dropped
    path = _write_nifti(tmp_path / "stack.nii.gz", stack, (1.5, 1.5, 8.0))
    config = TrainConfig.from_dict({"data": {"image_size": [16, 16], "files": [path.name]}})
    data = build_training_data(config.data, tmp_path)
    assert data.images.shape == (5, 1, 16, 16)
    assert bool(data.from_file.all())
    assert float(data.images.min()) >= 0 and float(data.images.max()) <= 1
    assert "5 of 6 slices along axis 2" in data.description
    # an explicit axis and a folder entry
    config = TrainConfig.from_dict(
        {"data": {"image_size": [16, 16], "files": ["."], "slice_axis": 0}}
    )
    data = build_training_data(config.data, tmp_path)
    assert data.images.shape == (20, 1, 16, 16)
    # a 3D model keeps the volume whole
    config = TrainConfig.from_dict({"data": {"image_size": [8, 16, 16], "files": [str(path)]}})
    data = build_training_data(config.data, tmp_path)
    assert data.images.shape == (1, 1, 8, 16, 16)


def test_missing_files_warn_or_error(tmp_path, capsys):
    config = TrainConfig.from_dict(
        {"data": {"image_size": [16, 16], "files": ["gone.nii"], "phantoms": {"count": 2}}}
    )
    with pytest.raises(InputError, match="gone.nii"):
        build_training_data(config.data, tmp_path)
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, missing_files="warn")
    )
    data = build_training_data(config.data, tmp_path)
    assert len(data) == 2 and "gone.nii" in capsys.readouterr().err


# --------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("size", [(24, 32), (8, 12, 16)])
def test_augmentation_shapes_range_and_seed(size):
    images = torch.rand(3, 1, *size, generator=torch.Generator().manual_seed(0))
    config = AugmentConfig()
    a = augment_batch(images, config, torch.Generator().manual_seed(1))
    b = augment_batch(images, config, torch.Generator().manual_seed(1))
    c = augment_batch(images, config, torch.Generator().manual_seed(2))
    assert a.shape == images.shape and a.dtype == images.dtype
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, images)


def test_augmentation_geometry():
    images = torch.rand(2, 1, 12, 16, generator=torch.Generator().manual_seed(0))
    none = AugmentConfig(rotation_deg=0, translation=0, flip_prob=0, crop_min=1, crop_max=1)
    out = augment_batch(images, none, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)
    flip = dataclasses.replace(none, flip_prob=1.0)
    out = augment_batch(images, flip, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, images.flip(2, 3), atol=1e-5, rtol=0)
    assert augment_batch(images, AugmentConfig(enabled=False), None) is images


# --------------------------------------------------------------------------- training


def test_few_steps_checkpoints_and_export(tmp_path):
    config = _smoke(optim__steps=4, output__checkpoint_every=2)
    result = train(config, base_dir=CONFIGS, out_dir=tmp_path / "run", quiet=True, device="cpu")
    assert result.finished and result.step == 4
    losses = [row["total"] for row in result.losses]
    assert len(losses) == 4 and all(np.isfinite(losses)) and max(losses) < 100
    run = tmp_path / "run"
    for name in ("config.yaml", "loss.csv", "loss.png", "summary.json", "model/config.json"):
        assert (run / name).is_file(), name
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [
        "step-00000002",
        "step-00000004",
    ]
    ckpt = load_checkpoint(run / "checkpoints" / "step-00000004")
    assert ckpt.step == 4 and ckpt.world_size == 1
    assert {"rank0.data", "rank0.diffusion", "rank0.torch_cpu"} <= set(ckpt.rng)
    assert all(isinstance(v, torch.Tensor) for v in ckpt.optimizer_state["state"][0].values())

    model = load_pretrained(run / "model")
    assert tensors_sha256(model) == result.tensors_sha256[0]
    extra = model.checkpoint_info.extra
    assert extra["preset"] == "drdm"
    assert extra["image_size"] == [32, 32]
    assert extra["forward"] == to_dict(config.forward)
    training = extra["training"]
    assert training["steps"] == 4 and training["batch_size"] == 2
    assert training["lr"] == config.optim.lr and training["seed"] == config.seed
    assert "cardiac2d phantoms" in training["data"]
    header = (run / "loss.csv").read_text().splitlines()
    assert header[0].startswith("step,total,distance,angle,regularisation") and len(header) == 5
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_is_bit_identical(tmp_path, schedule):
    config = _smoke(
        optim__steps=6, optim__lr_schedule=schedule, optim__lr_min=0.0, output__checkpoint_every=3
    )
    full = train(config, base_dir=CONFIGS, out_dir=tmp_path / "full", quiet=True, device="cpu")

    part = train(
        config,
        base_dir=CONFIGS,
        out_dir=tmp_path / "part",
        quiet=True,
        device="cpu",
        stop_after=3,
    )
    assert not part.finished and part.step == 3 and part.model_dir is None
    assert not (tmp_path / "part" / "model").exists()
    with pytest.raises(InputError, match="resume=True continues it"):
        train(config, base_dir=CONFIGS, out_dir=tmp_path / "part", quiet=True, device="cpu")
    rest = train(
        config,
        base_dir=CONFIGS,
        out_dir=tmp_path / "part",
        quiet=True,
        device="cpu",
        resume=True,
    )
    assert rest.finished and rest.step == 6 and len(rest.losses) == 3
    assert rest.tensors_sha256 == full.tensors_sha256
    a = load_pretrained(tmp_path / "full" / "model").state_dict()
    b = load_pretrained(tmp_path / "part" / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows_full = [r.split(",")[:6] for r in (tmp_path / "full" / "loss.csv").read_text().split()]
    rows_part = [r.split(",")[:6] for r in (tmp_path / "part" / "loss.csv").read_text().split()]
    assert rows_full == rows_part

    changed = _smoke(optim__steps=6, optim__lr_schedule=schedule, optim__lr=1e-3)
    with pytest.raises(InputError, match="optim.lr"):
        train(changed, base_dir=CONFIGS, out_dir=tmp_path / "part", resume=True, quiet=True)
    # the checkpoint's optimiser holds the rate of its last step under the schedule
    state = json.loads(
        (list_checkpoints(tmp_path / "part" / "checkpoints")[-1] / "state.json").read_text()
    )
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        learning_rate(config.optim, 6)
    )
    # the exported model's card records a schedule that is not the paper's constant rate
    extra = json.loads((tmp_path / "part" / "model" / "config.json").read_text())["extra"]
    assert ("lr_schedule" in extra["training"]) == (schedule == "cosine")


def test_cosine_learning_rate():
    optim = OptimConfig(steps=101, lr=3e-4, lr_schedule="cosine", lr_min=1e-5)
    rates = [learning_rate(optim, s) for s in range(1, 111)]
    assert rates[0] == pytest.approx(3e-4) and rates[100] == pytest.approx(1e-5)
    assert rates[50] == pytest.approx((3e-4 + 1e-5) / 2)  # half way down at half the run
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] == pytest.approx(1e-5)  # past the end: lr_min
    constant = OptimConfig(steps=10, lr=3e-4)
    assert {learning_rate(constant, s) for s in range(1, 20)} == {3e-4}
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        OptimConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="lr_min must be in"):
        OptimConfig(lr=1e-4, lr_schedule="cosine", lr_min=1e-3)
    with pytest.raises(ValueError, match="step must be >= 1"):
        learning_rate(optim, 0)


def test_file_fraction_sampling():
    from drdm.training.data import TrainingData, draw_indices

    data = TrainingData(
        torch.zeros(5, 1, 8, 8), torch.tensor([0, 0, 0, 1, 1], dtype=torch.bool), ""
    )
    gen = torch.Generator().manual_seed(0)
    assert set(draw_indices(data, 64, 1.0, gen).tolist()) == {3, 4}
    assert set(draw_indices(data, 64, 0.0, gen).tolist()) == {0, 1, 2}
    assert set(draw_indices(data, 256, None, gen).tolist()) == {0, 1, 2, 3, 4}


def test_3d_training_step(tmp_path):
    config = TrainConfig.from_dict(
        {
            "network": {"widths": [4, 8, 8], "bottleneck_width": 4, "embed_dim": 16},
            "forward": {"num_steps": 10, "grid_size": 8},
            "data": {"image_size": [16, 16, 16], "phantoms": {"kind": "thorax3d", "count": 2}},
            "optim": {"steps": 2, "batch_size": 2},
            "output": {"checkpoint_every": 2, "plot": False},
        }
    )
    result = train(config, out_dir=tmp_path / "run3d", quiet=True, device="cpu")
    assert result.finished and all(np.isfinite([r["total"] for r in result.losses]))
    model = load_pretrained(tmp_path / "run3d" / "model")
    assert model.config.ndim == 3
    assert model.checkpoint_info.extra["image_size"] == [16, 16, 16]


# --------------------------------------------------------------------------- the parts of _train
def test_the_parts_of_a_training_step():
    from drdm.diffusion import ForwardDiffusion
    from drdm.training import history, trainer
    from drdm.training.distributed import setup, teardown

    config = _smoke(optim__steps=2)
    batch = config.optim.batch_size
    ctx = setup("cpu")
    try:
        assert trainer._local_batch(config, ctx, None) == batch
        with pytest.raises(InputError, match="stop_after must be >= 1, got 0"):
            trainer._local_batch(config, ctx, 0)
        a = trainer._initial_state(config, ctx, None)
        b = trainer._initial_state(config, ctx, None)
        assert trainer.tensors_sha256(a.model) == trainer.tensors_sha256(b.model)  # seeded
        data = trainer.build_training_data(config.data, ".")
        process = ForwardDiffusion(config.forward)
        total, values = trainer._step_losses(
            a.model, process, data, data.images, config, batch, ctx, a
        )
        assert values.shape == (6,) and values.dtype == torch.float64
        assert float(values[4]) == 0.0  # no teacher: no distillation term
        assert float(values[0]) == pytest.approx(float(total))
        assert 1 <= float(values[5]) <= config.forward.num_steps  # mean timestep
        trainer._check_finite(values, 1, None)
        with pytest.raises(trainer.TrainingDivergedError, match="step 3"):
            trainer._check_finite(values * float("nan"), 3, None)
        before = trainer.tensors_sha256(a.model)
        trainer._apply_gradients(total, a, None)
        assert trainer.tensors_sha256(a.model) != before
        row = history.loss_row(1, 0.5, values)
        assert row["step"] == 1.0 and set(history.LOSS_TERMS) <= set(row)
    finally:
        teardown(ctx)


def test_the_loss_history_round_trips(tmp_path):
    from drdm.training.history import LOSS_COLUMNS, read_history, write_history

    rows = [
        {k: float(step) + i / 8 if k != "step" else float(step) for i, k in enumerate(LOSS_COLUMNS)}
        for step in (1, 2, 3)
    ]
    path = tmp_path / "loss.csv"
    write_history(path, rows)
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(LOSS_COLUMNS)
    assert read_history(path) == rows
    assert read_history(path, up_to=2) == rows[:2]
    assert read_history(tmp_path / "missing.csv") == []
