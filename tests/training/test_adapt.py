"""``drdm adapt`` and the one-step recovery API it measures with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_nifti
from drdm import DRDM
from drdm.cli.main import main
from drdm.losses import unrecovered_fraction
from drdm.training.adapt import AdaptConfig, split_holdout
from drdm.training.monitor import recovery_table
from helpers import tiny_model


def test_unrecovered_fraction_of_zero_and_exact_inverse():
    psi = torch.zeros(2, 2, 16, 16)
    psi[:, 0] = 1.5  # a translation: its inverse is the opposite translation
    assert float(unrecovered_fraction(psi, torch.zeros_like(psi))) == pytest.approx(1.0)
    assert float(unrecovered_fraction(psi, -psi)) == pytest.approx(0.0, abs=1e-6)
    half = unrecovered_fraction(psi, -0.5 * psi, per_sample=True)
    assert half.shape == (2,) and torch.allclose(half, torch.full((2,), 0.5))


def test_recovery_step_shapes_seed_and_timesteps():
    model = tiny_model(size=32)
    image = torch.rand(3, 1, 40, 36, generator=torch.Generator().manual_seed(0))
    a = model.recovery_step(image, 7, generator=torch.Generator().manual_seed(1))
    b = model.recovery_step(image, 7, generator=torch.Generator().manual_seed(1))
    assert a.images.shape == (3, 1, 32, 32) and a.step.shape == a.estimate.shape == (3, 2, 32, 32)
    assert torch.equal(a.step, b.step) and torch.equal(a.estimate, b.estimate)
    assert a.t.tolist() == [7, 7, 7]
    assert a.step.abs().max() > 0
    with pytest.raises(ValueError, match="1\\.\\."):
        model.recovery_step(image, 0)
    with pytest.raises(ValueError, match="3 timesteps"):
        model.recovery_step(image, torch.tensor([1, 2]))


def test_split_holdout_is_deterministic_and_disjoint(tmp_path):
    files = [tmp_path / f"f{i}.nii.gz" for i in range(10)]
    train, held = split_holdout(files, 0.2, seed=3)
    assert len(held) == 2 and len(train) == 8 and not set(train) & set(held)
    assert split_holdout(files, 0.2, seed=3) == (train, held)
    assert split_holdout(files[:1], 0.5, seed=0) == (files[:1], [])
    assert len(split_holdout(files[:2], 0.01, seed=0)[1]) == 1


def test_adapt_config_round_trip_and_checks():
    cfg = AdaptConfig(init="default-3d", time_limit=60, holdout=0.3, lambda_reg=0.2)
    assert AdaptConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"time_limit": 0}, {"holdout": 1.0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            AdaptConfig(**bad)


def test_recovery_table_pairs_draws_between_models():
    model = tiny_model(size=32)
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = recovery_table(model, images, draws=1, seed=5)
    assert [(r["lo"], r["hi"]) for r in rows] == [(1, 2), (3, 5), (6, 7), (8, 10)]
    assert rows == recovery_table(model, images, draws=1, seed=5)
    # an untrained network recovers nothing (its random output may even add motion: U > 1)
    assert all(0.9 < r["U"] < 10 for r in rows)


def test_adapt_command_writes_a_usable_model(tmp_path):
    base = tmp_path / "base"
    tiny_model(size=32).save_pretrained(base)
    data = tmp_path / "scans"
    data.mkdir()
    gen = np.random.default_rng(0)
    for i in range(3):
        write_nifti(data / f"scan{i}.nii.gz", gen.random((40, 40, 1)).astype(np.float32))
    out = tmp_path / "adapted"
    status = main(
        ["adapt", "--input", str(data), "--out", str(out), "--init", str(base),
         "--time-limit", "1", "--batch-size", "2", "--eval-draws", "1", "--threads", "1", "--quiet"]
    )  # fmt: skip
    assert status == 0
    report = json.loads((out / "adapt.json").read_text())
    assert len(report["holdout_files"]) == 1 and len(report["train_files"]) == 2
    assert report["steps"] >= 1 and len(report["u_before"]) == len(report["u_after"]) == 4
    assert (out / "adapt_u.png").stat().st_size > 1000
    model = DRDM.from_pretrained(out / "model")
    card = model.training["adapt"]
    assert card["base_model"] == str(base)
    assert [f["name"] for f in card["train_files"]] == report_names(report["train_files"])
    assert all(len(f["sha256"]) == 64 for f in card["train_files"] + card["holdout_files"])
    assert model.training["init_from"] == str(base)
    # the adapted model is a model like any other
    out_gen = model.generate(torch.rand(1, 1, 32, 32), level=3, generator=torch.Generator())
    assert torch.isfinite(out_gen.ddf).all()


def report_names(paths: list[str]) -> list[str]:
    return [p.rsplit("/", 1)[-1] for p in paths]


def test_adapt_refuses_the_official_preset_and_missing_input(tmp_path, capsys):
    base = tmp_path / "official"
    tiny_model(size=32, official=True).save_pretrained(base)
    scan = write_nifti(tmp_path / "a.nii.gz", np.ones((32, 32, 1), np.float32))
    args = ["adapt", "--input", str(scan), "--out", str(tmp_path / "o"), "--init", str(base)]
    assert main(args) == 2
    assert "preset 'official'" in capsys.readouterr().err
    missing = ["adapt", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]
    assert main(missing) == 2
    assert "nope" in capsys.readouterr().err


def test_adapt_reads_csv_and_json_lists_with_the_projects_list_reader(tmp_path):
    from drdm.cli.adapt import _inputs

    for name in ("a.nii.gz", "b.nii.gz"):
        write_nifti(tmp_path / name, np.ones((8, 8, 1), np.float32))
    (tmp_path / "list.csv").write_text("image,label\na.nii.gz,\nb.nii.gz,\n")
    (tmp_path / "list.json").write_text('[{"image": "a.nii.gz"}, "b.nii.gz"]')
    expected = [str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]
    assert _inputs([str(tmp_path / "list.csv")]) == expected
    assert _inputs([str(tmp_path / "list.json"), "x.nii.gz"]) == [*expected, "x.nii.gz"]
