"""The old import paths kept for one release: each still gives the same objects as the new
home and warns (DeprecationWarning) naming the new home."""

from __future__ import annotations

import importlib
import sys

import pytest

#: (old module, a name users import from it, the new module)
MOVED = [
    ("drdm.jobs", "write_manifest", "drdm.batch.jobs"),
    ("drdm.deform", "deform_volume", "drdm.pipelines.core"),
    ("drdm.deform", "DRDMSampler", "drdm.pipelines.core"),
    ("drdm.deform", "synthesize_pair", "drdm.pipelines.core"),
    ("drdm.transforms", "DRDMDeform", "drdm.pipelines.transforms"),
    ("drdm.transforms", "BigAugIntensity", "drdm.pipelines.transforms"),
    ("drdm.transforms", "DEFAULT_LEVELS", "drdm.pipelines.transforms"),
    ("drdm.bank", "FieldBank", "drdm.pipelines.bank"),
    ("drdm.baselines.factory", "make_method", "drdm.pipelines.registry"),
    ("drdm.pipeline", "DRDM", "drdm.model"),
    ("drdm.pipeline", "official_extra_config", "drdm.model"),
    ("drdm.official", "import_official", "drdm.official_weights"),
    ("drdm.official", "convert_official_state_dict", "drdm.official_weights"),
    ("drdm.diffusion.official", "OfficialForwardProcess", "drdm.diffusion.official_process"),
    ("drdm.diffusion.official", "OfficialProcessConfig", "drdm.diffusion.official_process"),
    ("drdm.training.checkpoint", "save_checkpoint", "drdm.training.state"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_old_module_reexports_the_new_home_with_a_warning(old, name, new, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
    assert name in module.__all__ or name in vars(importlib.import_module(new))


def test_private_names_are_still_found_through_the_old_module(monkeypatch):
    monkeypatch.delitem(sys.modules, "drdm.deform", raising=False)
    with pytest.warns(DeprecationWarning):
        deform = importlib.import_module("drdm.deform")
    from drdm.pipelines import core

    assert deform._stack_t is core._stack_t
    with pytest.raises(AttributeError, match="drdm.deform"):
        _ = deform.no_such_name


@pytest.mark.parametrize("name", ["METHODS", "STACKS", "make_method", "make_stack"])
def test_baselines_registry_names_warn(name):
    import drdm.baselines
    from drdm.pipelines import registry

    with pytest.warns(DeprecationWarning, match=r"drdm\.pipelines\.registry"):
        value = getattr(drdm.baselines, name)
    assert value is getattr(registry, name)


def test_the_new_homes_do_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for new in sorted({new for _, _, new in MOVED} | {"drdm.pipelines", "drdm.batch"}):
            importlib.import_module(new)


def test_the_documented_names_keep_working():
    import drdm
    from drdm.checkpoint import load_pretrained, save_pretrained  # the model format: not moved
    from drdm.model import DRDM

    assert drdm.DRDM is DRDM
    assert callable(load_pretrained) and callable(save_pretrained)
