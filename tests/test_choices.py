"""The choice vocabularies are defined once, in :mod:`drdm.choices`: each tuple is derived from
its ``Literal`` alias, the library's type hints use the aliases, and no other module spells a
vocabulary by hand (a copy would drift)."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

import drdm
from drdm import choices
from drdm.choices import check_choice
from drdm.errors import InputError

SRC = Path(drdm.__file__).resolve().parent

#: every vocabulary: (Literal alias, derived tuple)
VOCABULARIES = {
    "Engine": ("ENGINES",),
    "Method": ("METHODS",),
    "Stack": ("STACKS",),
    "InterpMode": ("INTERP_MODES",),
    "ImageMode": ("IMAGE_MODES",),
    "FieldImageMode": ("FIELD_IMAGE_MODES",),
    "Padding": ("PADDINGS",),
    "ComposePadding": ("COMPOSE_PADDINGS",),
    "LabelMethod": ("LABEL_METHODS",),
    "LrSchedule": ("LR_SCHEDULES",),
    "DdfFormat": ("DDF_FORMATS",),
}


@pytest.mark.parametrize("alias", sorted(VOCABULARIES))
def test_each_tuple_is_its_literal(alias):
    (values,) = VOCABULARIES[alias]
    literal = getattr(choices, alias)
    assert typing.get_origin(literal) is typing.Literal
    assert getattr(choices, values) == typing.get_args(literal)
    assert alias in choices.__all__ and values in choices.__all__


def test_every_literal_of_the_module_is_listed():
    literals = {
        name for name, value in vars(choices).items() if typing.get_origin(value) is typing.Literal
    }
    assert literals == set(VOCABULARIES)


def test_the_subsets_lie_in_their_vocabularies():
    assert set(choices.COMPOSE_PADDINGS) < set(choices.PADDINGS)
    assert set(choices.FIELD_IMAGE_MODES) < set(choices.IMAGE_MODES) < set(choices.INTERP_MODES)
    assert choices.BATCH_METHODS == tuple(m for m in choices.METHODS if m != "none")


def test_the_library_hints_and_exports_are_the_aliases():
    from drdm import spatial
    from drdm.batch import BatchOptions
    from drdm.io import write_displacement
    from drdm.nn import NetworkConfig
    from drdm.pipelines.core import warp_tensors
    from drdm.sampling import SamplerConfig

    assert spatial.Padding is choices.Padding and spatial.PADDINGS is choices.PADDINGS
    assert spatial.InterpMode is choices.InterpMode
    assert spatial.INTERP_MODES is choices.INTERP_MODES
    hints = typing.get_type_hints
    assert hints(write_displacement)["format"] == choices.DdfFormat
    assert hints(BatchOptions)["label_interp"] == choices.LabelMethod
    assert hints(BatchOptions)["ddf_format"] == choices.DdfFormat
    assert hints(warp_tensors)["padding"] == choices.Padding
    assert hints(warp_tensors)["interpolation"] == choices.ImageMode
    assert hints(NetworkConfig)["compose_padding"] == choices.ComposePadding
    assert hints(SamplerConfig)["image_mode"] == choices.FieldImageMode


def _spelled_vocabularies(tree: ast.AST) -> list[tuple[int, tuple[str, ...]]]:
    """``(line, values)`` of every tuple, list or set display (``Literal[...]`` included) of
    two or more strings that are the values of a vocabulary of :mod:`drdm.choices`, in any
    order (a subset, such as the kernels of one code path, is no copy)."""
    names = [v for (v,) in VOCABULARIES.values()] + ["BATCH_METHODS"]
    vocabularies = [set(getattr(choices, name)) for name in names]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Tuple | ast.List | ast.Set) or len(node.elts) < 2:
            continue
        values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
        if len(values) != len(node.elts) or not all(isinstance(v, str) for v in values):
            continue
        if set(values) in vocabularies:
            found.append((node.lineno, tuple(values)))
    return found


def test_no_module_spells_a_vocabulary_by_hand():
    spelled = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "choices.py" and path.parent == SRC:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        spelled += [
            f"{path.relative_to(SRC)}:{line}: {values}"
            for line, values in _spelled_vocabularies(tree)
        ]
    assert not spelled, "use drdm.choices instead:\n" + "\n".join(spelled)


@pytest.mark.parametrize(
    "source",
    [
        'DDF_FORMATS = ("nifti", "npy")',
        'ok = fmt in ["onehot", "nearest"]',
        'Pad = Literal["zeros", "border"]',
        'if mode not in {"cubic", "linear"}: pass',
        'bad = [m for m in methods if m not in ("drdm", "mrbs", "elastic", "bigaug")]',
    ],
)
def test_the_scan_finds_a_copy(source):
    assert _spelled_vocabularies(ast.parse(source))


def test_check_choice():
    assert check_choice("padding", "border", choices.PADDINGS) == "border"
    with pytest.raises(InputError) as info:
        check_choice("padding", "mirror", choices.PADDINGS)
    assert str(info.value) == "padding must be one of zeros, border, reflection, got 'mirror'"
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="ddf_format must be one of nifti, npy, got None"):
        check_choice("ddf_format", None, choices.DDF_FORMATS)  # type: ignore[arg-type]
