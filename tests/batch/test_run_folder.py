"""Tests of drdm.batch.run_folder: the run settings of a folder."""

from __future__ import annotations

import pytest

from drdm.batch.run_folder import check_run_settings, write_run_settings
from drdm.errors import InputError


def test_run_settings(tmp_path):
    settings = {"seed": 0, "model": "default", "levels_axis": (0, 1)}
    check_run_settings(tmp_path / "run", "augment", settings)  # nothing there yet
    assert not (tmp_path / "run").exists()
    write_run_settings(tmp_path / "run", "augment", settings)
    check_run_settings(tmp_path / "run", "augment", settings)
    with pytest.raises(InputError, match="seed: 0 there, 1 now"):
        check_run_settings(tmp_path / "run", "augment", {**settings, "seed": 1})
    with pytest.raises(InputError, match="drdm augment"):
        check_run_settings(tmp_path / "run", "synth", settings)
