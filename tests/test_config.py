"""Every config dataclass of the package round-trips through dicts, JSON and YAML text and
files (``drdm.config``), and reading reports the dotted key of a bad value."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from drdm.baselines.bigaug import BigAugConfig
from drdm.config import Config, from_dict, load_config, save_config, to_dict
from drdm.diffusion import ForwardDiffusionConfig
from drdm.diffusion.official_process import OfficialProcessConfig
from drdm.errors import InputError
from drdm.experiments.config import RegistrationConfig, SegmentationConfig
from drdm.nn import NetworkConfig
from drdm.sampling import SamplerConfig
from drdm.training.adapt import AdaptConfig
from drdm.training.config import (
    AugmentConfig,
    DataConfig,
    DistillConfig,
    MonitorConfig,
    OptimConfig,
    OutputConfig,
    PhantomConfig,
    TrainConfig,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "drdm"

_TRAIN = TrainConfig(
    seed=3,
    network=NetworkConfig(widths=(4, 8), norm="encoder", output_init_std=None, num_steps=12),
    forward=ForwardDiffusionConfig(num_steps=12, grid_size=None, cumulative="theoretical"),
    data=DataConfig(
        image_size=(16, 16),
        files=("a.nii.gz",),
        slice_axis=1,
        phantoms=PhantomConfig(count=3, seed=7),
        file_fraction=0.25,
        threshold=-900.0,
        augment=AugmentConfig(enabled=False, flip_prob=0.0),
    ),
    optim=OptimConfig(steps=5, lr=1.0, betas=(0.5, 0.9), grad_clip=2.0),
    output=OutputConfig(dir="x", plot=False),
    distill=DistillConfig(teacher="t.pth", teacher_size=(32, 32), pool_size=4),
    monitor=MonitorConfig(every=2, files=("m.nii",), phantoms=PhantomConfig(seed=9)),
    init_from="default",
)

# one non-default instance of every config class (defaults are added below)
EXAMPLES: dict[type, Any] = {
    NetworkConfig: NetworkConfig(ndim=3, widths=(8, 16, 32), input_stride=2, stem_width=4),
    ForwardDiffusionConfig: ForwardDiffusionConfig(ndim=3, grid_size=None, image_mode="cubic"),
    OfficialProcessConfig: OfficialProcessConfig(ndim=3, resolutions=(32, 16), v_scale=1e-4),
    SamplerConfig: SamplerConfig(schedule=(40, 20, 5), skip="compose", recursions=1),
    PhantomConfig: PhantomConfig(kind="thorax3d", count=2),
    AugmentConfig: AugmentConfig(rotation_deg=90.0, crop_min=0.8),
    DataConfig: _TRAIN.data,
    OptimConfig: _TRAIN.optim,
    OutputConfig: _TRAIN.output,
    DistillConfig: _TRAIN.distill,
    MonitorConfig: _TRAIN.monitor,
    TrainConfig: _TRAIN,
    AdaptConfig: AdaptConfig(lambda_reg=0.5, slice_axis=2, intensity_percentiles=(1.0, 99.0)),
    SegmentationConfig: SegmentationConfig(test_data="t", train_fraction=0.5, threads=1),
    RegistrationConfig: RegistrationConfig(slice_axis=0, method_options={"mrbs": {"a": 1}}),
    BigAugConfig: BigAugConfig(probabilities={"rotation": 1.0}, gamma=(0.7, 1.5)),
}
CASES = [(cls, c) for cls, c in EXAMPLES.items()] + [(cls, cls()) for cls in EXAMPLES]


def _parse(cls: type, data: Any) -> Any:
    return cls.from_dict(data) if hasattr(cls, "from_dict") else from_dict(cls, data)


def _config_classes_in_source() -> set[str]:
    """Names of the dataclasses called ``*Config`` defined anywhere in ``src/drdm``."""
    names = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                if any(d.startswith("dataclass") for d in decorators):
                    names.add(node.name)
    return names


def test_every_config_class_is_covered():
    assert _config_classes_in_source() == {cls.__name__ for cls in EXAMPLES}


@pytest.mark.parametrize(
    ("cls", "config"),
    CASES,
    ids=[f"{c.__name__}-{i < len(EXAMPLES)}" for i, (c, _) in enumerate(CASES)],
)
def test_config_round_trips(cls, config, tmp_path):
    assert dataclasses.is_dataclass(config) and cls.__dataclass_params__.frozen
    data = to_dict(config)
    assert _parse(cls, data) == config
    if hasattr(config, "to_dict"):
        assert config.to_dict() == data
    assert _parse(cls, json.loads(json.dumps(data))) == config
    text = yaml.safe_dump(data, sort_keys=False)
    assert _parse(cls, yaml.safe_load(text)) == config
    assert _parse(cls, yaml.safe_load(text)).__repr__() == config.__repr__()  # tuples stay tuples
    for name in ("c.yaml", "c.json"):
        save_config(config, tmp_path / name)
        assert load_config(cls, tmp_path / name) == config


def test_the_configs_share_one_base():
    for cls in EXAMPLES:
        assert issubclass(cls, Config), cls


@pytest.mark.parametrize(
    ("cls", "data", "expected"),
    [
        (NetworkConfig, {"widths": [4, "x"]}, "widths[1]: expected an integer"),
        (NetworkConfig, {"nrom": "all"}, "nrom: unknown key (known: ndim,"),
        (ForwardDiffusionConfig, {"sigma": "big"}, 'sigma: expected a number, got "big"'),
        (ForwardDiffusionConfig, {"grid_size": 1.5}, "grid_size: expected an integer or null"),
        (SamplerConfig, {"skip": "jump"}, "skip: expected one of"),
        (SegmentationConfig, {"seeds": 1}, "seeds: expected a list, got 1"),
        (RegistrationConfig, {"method_options": [1]}, "method_options: expected a mapping"),
        (TrainConfig, {"data": {"augment": {"flip_prob": "x"}}}, "data.augment.flip_prob:"),
        (TrainConfig, {"data": {"augment": {"flip_prob": 2}}}, "data.augment: flip_prob must"),
        (TrainConfig, {"optim": {"lr": True}}, "optim.lr: expected a number, got true"),
        (TrainConfig, [1], "expected a mapping of TrainConfig fields"),
    ],
)
def test_bad_values_name_the_dotted_key(cls, data, expected):
    with pytest.raises(ValueError) as info:
        _parse(cls, data)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    with pytest.raises(InputError, match="no such config file"):
        load_config(NetworkConfig, path)
    path.write_text("widths: [4, 8\n")
    with pytest.raises(InputError, match="cannot parse config"):
        load_config(NetworkConfig, path)
    path.write_text("norm: some\n")
    with pytest.raises(InputError, match=f"{path}: norm: expected one of"):
        load_config(NetworkConfig, path)
    path.write_text("")
    assert load_config(NetworkConfig, path) == NetworkConfig()
