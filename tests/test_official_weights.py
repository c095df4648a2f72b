"""Tests of the importer for the DRDM authors' checkpoint (drdm.official_weights).

The checkpoint and the authors' reference outputs live outside the repository, in
``../shared/data/official_drdm``; the tests that need them skip cleanly when it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drdm.checkpoint import CONFIG_NAME, load_pretrained
from drdm.nn import RecursiveUNet, sinusoidal_table
from drdm.official_weights import (
    _rename,
    convert_official_state_dict,
    import_official,
    load_official_state_dict,
    official_network_config,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OFFICIAL = SHARED / "data" / "official_drdm"
PTH = OFFICIAL / "cmr_recresacnet_000000.pth"
GOLDEN = OFFICIAL / "golden_network_outputs.npz"
TIMES = (0, 20, 54, 79)  # 0-based indices as fed to the authors' network
TOLERANCE = 1e-4  # in units of the image size


def _official_keys() -> list[str]:
    keys = ["time_embed.weight"]
    for stage in ("b1", "b2", "b3", "b_mid", "b4", "b5", "b_out"):
        parts = ["conv0", "convs.0", "convs.1"]
        if stage in ("b1", "b2", "b3", "b_mid"):
            parts.insert(0, "ln")
        keys += [
            f"{stage}.{i}.{p}.{leaf}"
            for i in range(3)
            for p in parts
            for leaf in ("weight", "bias")
        ]
    for te in ("te1", "te2", "te3", "te_mid", "te4", "te5", "te_out"):
        keys += [f"{te}.{i}.{leaf}" for i in (0, 2) for leaf in ("weight", "bias")]
    for name in ("down1", "down2", "down3", "up1", "up2", "up3", "conv_out"):
        keys += [f"{name}.weight", f"{name}.bias"]
    return keys


def _synthetic_official() -> tuple[RecursiveUNet, dict[str, torch.Tensor]]:
    """An authors'-layout state_dict built from a randomly initialised model of that shape."""
    model = RecursiveUNet(official_network_config(), generator=torch.Generator().manual_seed(3))
    ours = model.state_dict()
    official = {}
    for key in _official_keys():
        name = _rename(key)
        if name is None:
            official[key] = sinusoidal_table(80, 100, 1e8)
        else:
            official[key] = ours[name].clone()
    return model, official


def test_official_config_parameter_count() -> None:
    model = RecursiveUNet(official_network_config())
    trainable = sum(p.numel() for p in model.parameters())
    assert trainable == 435_435
    assert trainable + 80 * 100 == 443_435  # + the frozen embedding table of the .pth
    assert len(_official_keys()) == 193


def test_convert_synthetic_state_dict() -> None:
    model, official = _synthetic_official()
    config, converted = convert_official_state_dict(official)
    assert config == official_network_config()
    assert converted.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(converted[name], value), name


def test_convert_rejects_foreign_state_dicts() -> None:
    _, official = _synthetic_official()
    with pytest.raises(KeyError, match="unexpected key"):
        convert_official_state_dict({**official, "extra.weight": torch.zeros(1)})
    broken = dict(official)
    broken["time_embed.weight"] = broken["time_embed.weight"] + 0.01
    with pytest.raises(ValueError, match="sinusoidal"):
        convert_official_state_dict(broken)
    missing = {k: v for k, v in official.items() if k != "b1.0.conv0.weight"}
    with pytest.raises(KeyError, match="missing"):
        convert_official_state_dict(missing)
    partial = {k: v for k, v in official.items() if not k.startswith("conv_out")}
    with pytest.raises(ValueError, match="missing"):
        convert_official_state_dict(partial)


requires_shared = pytest.mark.skipif(
    not (PTH.is_file() and GOLDEN.is_file()), reason=f"shared data not found under {OFFICIAL}"
)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    if not GOLDEN.is_file():
        pytest.skip(f"shared data not found: {GOLDEN}")
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def converted() -> RecursiveUNet:
    if not PTH.is_file():
        pytest.skip(f"shared data not found: {PTH}")
    state = load_official_state_dict(PTH)
    assert len(state) == 193
    assert sum(v.numel() for v in state.values()) == 443_435
    config, weights = convert_official_state_dict(state)
    model = RecursiveUNet(config)
    model.load_state_dict(weights, strict=True)
    return model.eval()


@requires_shared
def test_reproduces_golden_outputs(converted: RecursiveUNet, golden: dict[str, np.ndarray]) -> None:
    """Every golden output, rec1 and rec2, within 1e-4 of the image size.

    Our model returns voxels; the authors' outputs are fractions of the image size S = 256
    (voxels = S x fraction); our timestep is 1-based (authors' index + 1).
    """
    image = torch.from_numpy(golden["image"])[None, None]
    size = image.shape[-1]
    batch = image.expand(len(TIMES), 1, size, size)
    t = torch.tensor(TIMES) + 1
    with torch.no_grad():
        rec1 = converted.single_pass(batch, t) / size
        rec2 = converted(batch, t, recursions=2) / size
    for i, idx in enumerate(TIMES):
        for k, out in ((1, rec1), (2, rec2)):
            expected = torch.from_numpy(golden[f"t{idx}_rec{k}"])
            err = (out[i : i + 1] - expected).abs().max().item()
            assert err <= TOLERANCE, f"t{idx}_rec{k}: max abs error {err:.3g} image sizes"


@requires_shared
def test_import_official_writes_checkpoint(tmp_path: Path, golden: dict[str, np.ndarray]) -> None:
    out = import_official(PTH, tmp_path / "official")
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["extra"]["source"]["imported_from"] == "official"
    assert config["extra"]["source"]["license"] == "Apache-2.0"
    model = load_pretrained(out)
    assert model.config == official_network_config()
    image = torch.from_numpy(golden["image"])[None, None]
    with torch.no_grad():
        out_t79 = model(image, torch.tensor([80])) / 256
    err = (out_t79 - torch.from_numpy(golden["t79_rec2"])).abs().max().item()
    assert err <= TOLERANCE
