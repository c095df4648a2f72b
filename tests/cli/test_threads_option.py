"""``--threads``: one definition and one handler (``drdm.cli._options``) for every command
that has it; a number below 1 is refused with the same one-line message before any work."""

from __future__ import annotations

import pytest

from drdm.cli import _options
from drdm.cli.main import build_parser, main

COMMANDS = {
    "augment": ["augment", "--image", "x.nii"],
    "synth": ["synth", "--image", "x.nii", "--level-pairs", "3:5"],
    "adapt": ["adapt", "--input", "x.nii"],
    "train": ["train", "--config", "none.yaml"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_threads_below_one_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    code = main([*COMMANDS[command], "--out", str(tmp_path / "out"), "--threads", "0"])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"drdm {command}: error: --threads 0: must be >= 1"
    assert list(tmp_path.iterdir()) == []


def _parsers(parser):
    """``parser`` and every (sub)command parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action.choices, dict):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_threads_option_is_the_shared_one(monkeypatch):
    import drdm.cli._batch
    import drdm.cli.adapt
    import drdm.cli.experiment
    import drdm.cli.train

    calls = []
    real = _options.add_threads_argument

    def spy(p, *args, **kwargs):
        calls.append(p)
        return real(p, *args, **kwargs)

    for module in (drdm.cli._batch, drdm.cli.adapt, drdm.cli.experiment, drdm.cli.train):
        monkeypatch.setattr(module, "add_threads_argument", spy)
    having = [
        p.prog
        for p in _parsers(build_parser())
        if any("--threads" in a.option_strings for a in p._actions)
    ]
    assert {name.split()[1] for name in having} == {
        "adapt",
        "augment",
        "experiment",
        "synth",
        "train",
    }
    assert len(calls) == len(having)  # every --threads came from the shared definition
