"""The command modules share options through :mod:`drdm.cli._options` and
:mod:`drdm.cli._batch`: no command module imports another, and each shared option is spelled
in one place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import drdm.cli
from drdm.cli.main import COMMANDS

CLI = Path(drdm.cli.__file__).parent
MODULES = {module.__name__.rsplit(".", 1)[1] for module in COMMANDS.values()}


def _imported(path: Path) -> set[str]:
    """The ``drdm.cli`` modules that ``path`` imports (``from . import x``, ``from .x import``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                names.update(alias.name for alias in node.names)
            else:
                names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("drdm.cli."):
            names.add(node.module.split(".")[2])
    return names


@pytest.mark.parametrize("name", sorted(MODULES - {"main"}))
def test_no_command_module_imports_another(name):
    assert _imported(CLI / f"{name}.py") & MODULES == set()


SHARED = (
    "--seed",
    "--model",
    "--ndim",
    "--stride",
    "--engine",
    "--slice-axis",
    "--label-interp",
    "--ddf-format",
    "--no-figure",
    "--quiet",
    "--keep-going",
    "--shards",
    "--shard-index",
    "--frame",
    "--label",
    "--resample-label",
    "--method-option",
    "--device",
    "--threads",
)

#: modules with an option of the same name and another meaning (demo's --model is a 2D model
#: that may be missing; experiment's --model overrides a config; diffuse's --ndim has auto)
OTHER_MEANING = {("--model", "demo.py"), ("--model", "experiment.py"), ("--ndim", "diffuse.py")}


@pytest.mark.parametrize("option", SHARED)
def test_each_shared_option_is_defined_once(option):
    pattern = re.compile(rf"add_argument\(\s*\"{re.escape(option)}\"")
    where = [
        path.name
        for path in sorted(CLI.glob("*.py"))
        for _ in pattern.finditer(path.read_text())
        if (option, path.name) not in OTHER_MEANING
    ]
    assert len(where) == 1, f"{option} is defined in {where}"
