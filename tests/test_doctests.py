"""The examples in the docstrings run and print what they say (``doctest``), for the modules
whose examples need no model file or data: the spatial core, the slice-axis rule, the noise
schedules, the sampler's timestep schedule and BigAug's construction. A module listed here
must hold at least one example, so a test cannot pass because the examples went away."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "drdm.spatial._sample",
    "drdm.spatial._field",
    "drdm.spatial._jacobian",
    "drdm.io.geometry",
    "drdm.diffusion.schedule",
    "drdm.sampling",
    "drdm.baselines.bigaug",
    "drdm.seeding",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
