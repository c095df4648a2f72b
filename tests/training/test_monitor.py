"""U per band during training (``monitor``): logged, plotted, and without effect on the run."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from drdm.checkpoint import load_pretrained
from drdm.errors import InputError
from drdm.training import TrainConfig, train
from drdm.training.monitor import recovery_bands

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMOKE = CONFIGS / "smoke.yaml"


def _config(**monitor):
    data = yaml.safe_load(SMOKE.read_text())
    data["optim"]["steps"] = 4
    data["output"]["checkpoint_every"] = 2
    data["monitor"] = monitor
    return TrainConfig.from_dict(data)


def test_recovery_bands_cover_every_timestep_once():
    for steps in (4, 10, 80):
        bands = recovery_bands(steps)
        covered = [t for lo, hi in bands for t in range(lo, hi + 1)]
        assert covered == list(range(1, steps + 1))


def test_monitor_logs_u_per_band_and_leaves_training_unchanged(tmp_path):
    phantoms = {"kind": "cardiac2d", "count": 2, "seed": 7}
    with_monitor = _config(every=2, phantoms=phantoms, draws=1)
    without = _config()
    a = train(with_monitor, base_dir=CONFIGS, out_dir=tmp_path / "a", quiet=True, device="cpu")
    b = train(without, base_dir=CONFIGS, out_dir=tmp_path / "b", quiet=True, device="cpu")
    assert a.tensors_sha256 == b.tensors_sha256  # the monitor draws from its own generator
    with open(tmp_path / "a" / "recovery.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert list(rows[0]) == ["step", "U_1-5", "U_6-10", "U_11-15", "U_16-20", "cpu_seconds"]
    assert all(0.0 < float(r[k]) < 10.0 for r in rows for k in r if k.startswith("U_"))
    assert 0 < float(rows[0]["cpu_seconds"]) < float(rows[1]["cpu_seconds"])
    assert (tmp_path / "a" / "recovery.png").stat().st_size > 1000
    assert not (tmp_path / "b" / "recovery.csv").exists()
    m1 = load_pretrained(tmp_path / "a" / "model").state_dict()
    m2 = load_pretrained(tmp_path / "b" / "model").state_dict()
    assert all(torch.equal(m1[k], m2[k]) for k in m1)


def test_monitor_resumes_its_log(tmp_path):
    phantoms = {"kind": "cardiac2d", "count": 1, "seed": 7}
    config = _config(every=1, phantoms=phantoms, draws=1)
    train(config, base_dir=CONFIGS, out_dir=tmp_path, quiet=True, device="cpu", stop_after=3)
    with open(tmp_path / "recovery.csv", newline="") as f:
        first = list(csv.DictReader(f))
    assert [int(r["step"]) for r in first] == [1, 2, 3]
    train(config, base_dir=CONFIGS, out_dir=tmp_path, quiet=True, device="cpu", resume=True)
    with open(tmp_path / "recovery.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[:3] == first
    assert float(rows[3]["cpu_seconds"]) > float(rows[2]["cpu_seconds"])  # accumulated


def test_monitor_without_images_is_refused(tmp_path):
    with pytest.raises(InputError, match="monitor"):
        train(_config(every=2), base_dir=CONFIGS, out_dir=tmp_path, quiet=True, device="cpu")
    with pytest.raises(ValueError, match="every"):
        _config(every=-1)
