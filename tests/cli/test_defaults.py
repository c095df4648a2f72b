"""The command line's defaults are the library's: every value in :mod:`drdm.cli._defaults`
equals the library default it stands for, and every default of every command's options
comes from that module (or is listed here as the command line's own)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import typing
from typing import Any

import pytest

from drdm.cli import _defaults as D
from drdm.cli.main import build_parser

#: each value of drdm.cli._defaults -> the library names (``module:object[.parameter]``)
#: whose default it repeats
LIBRARY: dict[str, tuple[str, ...]] = {
    "SEED": (
        "drdm.batch:BatchOptions.seed",
        "drdm.batch:generate_file.seed",
        "drdm.batch:diffuse_file.seed",
        "drdm.training.adapt:AdaptConfig.seed",
    ),
    "MODEL": (
        "drdm.batch:BatchOptions.model",
        "drdm.batch:generate_file.model",
        "drdm.training.adapt:AdaptConfig.init",
    ),
    "DEVICE": (
        "drdm.batch:BatchOptions.device",
        "drdm.batch:generate_file.device",
        "drdm.batch:diffuse_file.device",
        "drdm.training.adapt:adapt.device",
        "drdm.training:train.device",
    ),
    "ENGINE": ("drdm.batch:BatchOptions.engine", "drdm.batch:generate_file.engine"),
    "STRIDE": ("drdm.sampling:DEFAULT_STRIDE",),
    "SLICE_AXIS": (
        "drdm.batch:BatchOptions.slice_axis",
        "drdm.batch:generate_file.slice_axis",
        "drdm.batch:diffuse_file.slice_axis",
    ),
    "DDF_FORMAT": (
        "drdm.batch:BatchOptions.ddf_format",
        "drdm.batch:generate_file.ddf_format",
        "drdm.batch:diffuse_file.ddf_format",
    ),
    "NUM_STEPS": ("drdm.diffusion:ForwardDiffusionConfig.num_steps",),
    "METHOD": ("drdm.batch:BatchOptions.method",),
    "BATCH_NDIM": ("drdm.batch:BatchOptions.ndim",),
    "LABEL_INTERP": ("drdm.batch:BatchOptions.label_interp",),
    "PER_LEVEL": ("drdm.batch:augment_files.per_level",),
    "STACK": ("drdm.batch:augment_files.stack",),
    "LEVEL_FRACTIONS": ("drdm.pipelines.registry:DEFAULT_LEVEL_FRACTIONS",),
    "LEVELS": ("drdm.pipelines.registry:DEFAULT_LEVELS",),
    "PER_PAIR": ("drdm.batch:synthesize_files.per_pair",),
    "N": ("drdm.batch:generate_file.n",),
    "DIFFUSE_NDIM": ("drdm.batch:diffuse_file.ndim",),
    "SIZE_2D": ("drdm.data.phantoms:cardiac_phantom_2d.size",),
    "SIZE_3D": ("drdm.data.phantoms:thorax_phantom_3d.size",),
    "ADAPT_TIME_LIMIT": ("drdm.training.adapt:AdaptConfig.time_limit",),
    "ADAPT_HOLDOUT": ("drdm.training.adapt:AdaptConfig.holdout",),
    "ADAPT_LR": ("drdm.training.adapt:AdaptConfig.lr",),
    "ADAPT_BATCH_SIZE": ("drdm.training.adapt:AdaptConfig.batch_size",),
    "ADAPT_EVAL_DRAWS": ("drdm.training.adapt:AdaptConfig.eval_draws",),
    "OFFICIAL_IMAGE_SIZE": ("drdm.card:OFFICIAL_IMAGE_SIZE",),
    "MAX_ROWS": ("drdm.viz:overview_figure.max_rows",),
}

#: (command, option dest) -> the drdm.cli._defaults value it uses
OPTIONS: dict[tuple[str, str], str] = {
    **{
        (command, dest): name
        for command in ("augment", "synth")
        for dest, name in {
            "seed": "SEED",
            "method": "METHOD",
            "model": "MODEL",
            "engine": "ENGINE",
            "ndim": "BATCH_NDIM",
            "slice_axis": "SLICE_AXIS",
            "label_interp": "LABEL_INTERP",
            "ddf_format": "DDF_FORMAT",
            "device": "DEVICE",
        }.items()
    },
    ("augment", "per_level"): "PER_LEVEL",
    ("augment", "stack"): "STACK",
    ("synth", "per_pair"): "PER_PAIR",
    **{
        ("generate", dest): name
        for dest, name in {
            "n": "N",
            "model": "MODEL",
            "seed": "SEED",
            "slice_axis": "SLICE_AXIS",
            "ddf_format": "DDF_FORMAT",
            "engine": "ENGINE",
            "device": "DEVICE",
        }.items()
    },
    **{
        ("diffuse", dest): name
        for dest, name in {
            "seed": "SEED",
            "ndim": "DIFFUSE_NDIM",
            "slice_axis": "SLICE_AXIS",
            "ddf_format": "DDF_FORMAT",
            "device": "DEVICE",
        }.items()
    },
    ("demo", "seed"): "SEED",
    ("demo", "size_2d"): "SIZE_2D",
    ("demo", "size_3d"): "SIZE_3D",
    ("demo", "model"): "MODEL",
    ("demo", "device"): "DEVICE",
    **{
        ("adapt", dest): name
        for dest, name in {
            "init": "MODEL",
            "time_limit": "ADAPT_TIME_LIMIT",
            "holdout": "ADAPT_HOLDOUT",
            "lr": "ADAPT_LR",
            "batch_size": "ADAPT_BATCH_SIZE",
            "seed": "SEED",
            "eval_draws": "ADAPT_EVAL_DRAWS",
            "device": "DEVICE",
        }.items()
    },
    ("import-official", "image_size"): "OFFICIAL_IMAGE_SIZE",
    ("show", "max_rows"): "MAX_ROWS",
    ("train", "device"): "DEVICE",
}

#: defaults that are the command line's own (no library parameter behind them)
OWN = {("demo", "out"), ("demo", "model_3d")}


def _library_default(name: str) -> Any:
    """The default that ``module:object[.parameter]`` names: a module constant, a dataclass
    field's default or a function parameter's default."""
    module, _, rest = name.partition(":")
    obj_name, _, param = rest.partition(".")
    obj = getattr(importlib.import_module(module), obj_name)
    if not param:
        return obj
    if dataclasses.is_dataclass(obj):
        field = {f.name: f for f in dataclasses.fields(obj)}[param]
        assert field.default is not dataclasses.MISSING, name
        return field.default
    default = inspect.signature(obj).parameters[param].default
    assert default is not inspect.Parameter.empty, name
    return default


@pytest.mark.parametrize("constant", sorted(LIBRARY))
def test_each_cli_default_is_the_library_default(constant):
    value = getattr(D, constant)
    for name in LIBRARY[constant]:
        assert _library_default(name) == value, f"drdm.cli._defaults.{constant} != {name}"


def test_every_value_of_the_defaults_module_is_checked():
    values = {n for n in vars(D) if n.isupper()}
    assert values == set(LIBRARY)


def test_the_vocabularies_are_the_library_ones():
    from drdm.batch import BatchOptions
    from drdm.io import write_displacement

    ddf_formats = typing.get_args(typing.get_type_hints(write_displacement)["format"])
    label_methods = typing.get_args(typing.get_type_hints(BatchOptions)["label_interp"])
    offered = {
        (command, action.dest): action.choices
        for command, parser in _commands(build_parser())
        for action in parser._actions
        if action.dest in ("ddf_format", "label_interp")
    }
    assert offered  # augment, synth, generate, diffuse
    for (command, dest), choices in offered.items():
        expected = ddf_formats if dest == "ddf_format" else label_methods
        assert tuple(choices) == expected, (command, dest)


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    """``(name, parser)`` of every command and subcommand (``"experiment segment"``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + name, sub
                yield from _commands(sub, prefix + name + " ")


def _unset(default: Any) -> bool:
    """No default: ``None``, ``False`` (a flag), an empty list (a repeatable option)."""
    return default is None or default is False or default is argparse.SUPPRESS or default == []


def test_every_option_default_comes_from_the_defaults_module():
    seen = set()
    for command, parser in _commands(build_parser()):
        for action in parser._actions:
            default = action.default
            if _unset(default) or isinstance(action, argparse._SubParsersAction):
                continue
            key = (command, action.dest)
            if key in OWN:
                continue
            assert key in OPTIONS, f"drdm {command} {action.option_strings}: default {default!r}"
            assert default == getattr(D, OPTIONS[key]), key
            seen.add(key)
    assert seen == set(OPTIONS)
