"""Tests of drdm.checkpoint: safetensors + JSON directories, atomic, never unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from drdm.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    load_pretrained,
    read_checkpoint_config,
    save_pretrained,
)
from drdm.nn import NetworkConfig, RecursiveUNet

_CFG = NetworkConfig(widths=(4, 8, 8), bottleneck_width=4, output_init_std=None, norm="encoder")


def _model(seed: int = 0) -> RecursiveUNet:
    return RecursiveUNet(_CFG, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_pretrained(_model(), tmp_path / "ckpt", extra_config={"note": "unit test"})


def test_round_trip_identical_outputs(tmp_path: Path) -> None:
    model = _model().eval()
    extra = {"forward": {"num_steps": 80, "sigma": 4e-4}, "data": {"name": "toy", "n": 3}}
    directory = save_pretrained(model, tmp_path / "out", extra_config=extra)
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = load_pretrained(directory)
    assert isinstance(loaded, RecursiveUNet)
    assert loaded.config == model.config
    assert not loaded.training
    assert loaded.checkpoint_info.extra == extra
    x = torch.rand(2, 1, 16, 24, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1, 33])
    with torch.no_grad():
        assert torch.equal(model(x, t), loaded(x, t))
    config = json.loads((directory / CONFIG_NAME).read_text())
    assert config["model_class"] == "RecursiveUNet"
    assert config["network"] == model.config.to_dict()


def test_overwrite_replaces_files(saved: Path) -> None:
    other = _model(seed=5)
    save_pretrained(other, saved)
    loaded = load_pretrained(saved)
    for (name, a), b in zip(other.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert read_checkpoint_config(saved).extra == {}
    assert not [p for p in saved.iterdir() if p.name.startswith(".")]


def test_missing_files(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_pretrained(tmp_path / "nowhere")
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        load_pretrained(saved)


def test_corrupt_config(saved: Path) -> None:
    (saved / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        load_pretrained(saved)
    (saved / CONFIG_NAME).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        load_pretrained(saved)


def test_invalid_network_config(saved: Path) -> None:
    data = json.loads((saved / CONFIG_NAME).read_text())
    data["network"]["ndim"] = 7
    (saved / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="network"):
        load_pretrained(saved)


def test_corrupt_weights(saved: Path) -> None:
    weights = saved / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        load_pretrained(saved)
    # Without the recorded checksum the safetensors parser itself must reject the file.
    config = json.loads((saved / CONFIG_NAME).read_text())
    del config["weights_sha256"]
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        load_pretrained(saved)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        load_pretrained(saved)


def test_weights_not_matching_config(saved: Path) -> None:
    config = json.loads((saved / CONFIG_NAME).read_text())
    del config["weights_sha256"]
    config["network"]["widths"] = [4, 8, 16]
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        load_pretrained(saved)


def test_rejects_unserialisable_extra_and_other_models(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON"):
        save_pretrained(_model(), tmp_path / "a", extra_config={"bad": object()})
    assert not (tmp_path / "a" / CONFIG_NAME).exists()
    with pytest.raises(TypeError, match="RecursiveUNet"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path / "b")  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["meta", *(["cuda"] if torch.cuda.is_available() else [])])
def test_load_to_device(saved: Path, device: str) -> None:
    # "meta" (no data) shows on a CPU-only machine that the device argument is honoured
    model = load_pretrained(saved, device=device)
    tensors = [*model.parameters(), *model.buffers()]
    assert {t.device.type for t in tensors} == {device}
    assert not model.training
    default = load_pretrained(saved)  # no device: the CPU
    assert {t.device.type for t in [*default.parameters(), *default.buffers()]} == {"cpu"}


def test_saving_the_same_weights_twice_gives_the_same_bytes(tmp_path):
    from drdm.checkpoint import save_pretrained
    from drdm.nn import NetworkConfig, RecursiveUNet

    net = RecursiveUNet(NetworkConfig(widths=(4, 8), bottleneck_width=4, embed_dim=8))
    digests = set()
    for i in range(6):  # the metadata map's order used to vary between writes
        folder = save_pretrained(net, tmp_path / f"m{i}")
        digests.add((folder / "model.safetensors").read_bytes())
    assert len(digests) == 1
