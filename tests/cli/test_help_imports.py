"""``drdm --help`` (and every command's ``--help``) does not load torch or the other heavy
libraries: the command line's option lists come from :mod:`drdm.choices`, and each command
imports the library when it runs. Checked in a fresh interpreter, since this one has long
imported torch."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "numpy", "scipy", "nibabel", "SimpleITK", "matplotlib", "safetensors")

SCRIPT = f"""
import contextlib, io, sys
from drdm.cli.main import COMMANDS, main
for argv in (["--help"], *([name, "--help"] for name in COMMANDS)):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
    assert "usage: drdm" in out.getvalue(), argv
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
print(",".join(loaded))
"""


def test_help_loads_no_heavy_library():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"drdm --help imported {result.stdout.strip()}"


def test_the_choices_are_the_ones_the_library_checks():
    from drdm import choices
    from drdm.batch import method
    from drdm.nn import engine
    from drdm.pipelines import registry

    assert engine.ENGINES is choices.ENGINES
    assert registry.METHODS is choices.METHODS and registry.STACKS is choices.STACKS
    assert method.BATCH_METHODS is choices.BATCH_METHODS
