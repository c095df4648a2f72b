"""Data-parallel training: two CPU processes (gloo) launched by torch.distributed.run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from drdm.training.state import list_checkpoints, load_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.slow  # two torchrun processes (about 10 s)
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_train_identical_weights(tmp_path):
    config = tmp_path / "ddp.yaml"
    text = (CONFIGS / "smoke.yaml").read_text()
    text = text.replace("steps: 6", "steps: 2").replace(
        "checkpoint_every: 3", "checkpoint_every: 2"
    )
    config.write_text(text)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "drdm.cli.main", "train", "--config", str(config), "--out", str(out),
        "--device", "cpu", "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    digests = summary["tensors_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]

    (checkpoint,) = list_checkpoints(out / "checkpoints")
    state = load_checkpoint(checkpoint)
    assert state.step == 2 and state.world_size == 2
    # every process has its own data and diffusion generators, all stored
    for name in ("data", "diffusion"):
        assert not (state.rng[f"rank0.{name}"] == state.rng[f"rank1.{name}"]).all()
    assert (out / "model" / "model.safetensors").is_file()
    assert len((out / "loss.csv").read_text().splitlines()) == 3  # header + 2 steps, rank 0 only
