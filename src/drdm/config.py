"""The one config mechanism of the package: typed, frozen config dataclasses that round-trip
through plain dicts, YAML and JSON.

Every config class derives from :class:`Config`, which gives it :meth:`Config.to_dict` and
:meth:`Config.from_dict`; :func:`save_config` and :func:`load_config` write and read files.
Reading checks every key and value against the type hints and reports the first problem on
one line naming the dotted key::

    optim.lr: expected a number, got "fast"
    network.nrom: unknown key (known: ndim, in_channels, ...)

Values outside a field's range are refused by the dataclass' own ``__post_init__`` and
reported with the key of the section (``data.augment: flip_prob must lie in [0, 1], got 2``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import yaml

from .errors import InputError
from .io.files import atomic_write

__all__ = ["Config", "check_fields", "from_dict", "load_config", "save_config", "to_dict"]

T = TypeVar("T")

_MAPPINGS = (dict, collections.abc.Mapping)


class Config:
    """Base of the config dataclasses: dict round trips (``from_dict(c.to_dict()) == c``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-serialisable nested dict (tuples become lists)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`: missing keys default; an unknown key or a wrongly
        typed value raises ``ValueError`` naming the dotted key."""
        return from_dict(cls, data)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-serialisable dict of a (nested) config dataclass."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, collections.abc.Mapping):
            value = dict(value)
        out[field.name] = value
    return out


# --------------------------------------------------------------------------- checking

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(value: Any) -> str:
    if isinstance(value, str | int | float | bool | None):
        return json.dumps(value)
    return type(value).__name__


def _expected(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return "one of " + str(list(typing.get_args(tp)))
    if typing.get_origin(tp) is tuple:
        return "a list"
    if dataclasses.is_dataclass(tp) or _is_mapping(tp):
        return "a mapping"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _is_mapping(tp: Any) -> bool:
    return tp in _MAPPINGS or typing.get_origin(tp) in _MAPPINGS


def _check_value(tp: Any, value: Any, key: str) -> None:
    """Raise ``ValueError`` (``"key: expected ..."``) unless ``value`` fits the hint ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(
                f"{key}: expected a mapping of {tp.__name__} fields, got {_describe(value)}"
            )
        check_fields(tp, value, key)  # type: ignore[arg-type]
    elif origin in (typing.Union, types.UnionType):
        for arg in args:  # a mapping or a list goes to the one branch that takes it
            if (isinstance(value, dict) and dataclasses.is_dataclass(arg)) or (
                isinstance(value, list | tuple) and typing.get_origin(arg) is tuple
            ):
                _check_value(arg, value, key)
                return
        for arg in args:
            try:
                _check_value(arg, value, key)
                return
            except ValueError:
                pass
        options = " or ".join(_expected(a) for a in args)
        raise ValueError(f"{key}: expected {options}, got {_describe(value)}")
    elif origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise ValueError(f"{key}: expected one of {list(args)}, got {_describe(value)}")
    elif tp is type(None):
        if value is not None:
            raise ValueError(f"{key}: expected null, got {_describe(value)}")
    elif origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{key}: expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            for i, item in enumerate(value):
                _check_value(args[0], item, f"{key}[{i}]")
        else:
            if len(value) != len(args):
                raise ValueError(f"{key}: expected a list of {len(args)} items, got {len(value)}")
            for i, (arg, item) in enumerate(zip(args, value, strict=True)):
                _check_value(arg, item, f"{key}[{i}]")
    elif _is_mapping(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {_describe(value)}")
    elif tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {_describe(value)}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {_describe(value)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: expected a number, got {_describe(value)}")
    elif tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {_describe(value)}")
    # anything else is left to the dataclass' own validation


def check_fields(cls: type, data: Any, key: str = "") -> None:
    """Check the mapping ``data`` against the fields and type hints of dataclass ``cls``
    (recursively); raise ``ValueError`` naming the first bad dotted key below ``key``."""
    if not isinstance(data, dict):
        where = f"{key}: " if key else ""
        raise ValueError(
            f"{where}expected a mapping of {cls.__name__} fields, got {_describe(data)}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    prefix = f"{key}." if key else ""
    for name, value in data.items():
        if name not in names:
            raise ValueError(f"{prefix}{name}: unknown key (known: {', '.join(names)})")
        _check_value(hints[name], value, prefix + str(name))


# --------------------------------------------------------------------------- building


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _build(tp, value, key)  # type: ignore[arg-type]
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _build(arg, value, key)  # type: ignore[arg-type]
            if typing.get_origin(arg) is tuple and isinstance(value, list | tuple):
                return tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if _is_mapping(tp) and isinstance(value, dict):
        return dict(value)
    return value


def _build(cls: type[T], data: dict[str, Any], key: str) -> T:
    hints = typing.get_type_hints(cls)
    prefix = f"{key}." if key else ""
    kwargs = {name: _convert(hints[name], v, prefix + name) for name, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        where = f"{key}: " if key else ""
        raise ValueError(where + _first_line(err)) from None


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build config ``cls`` from a nested mapping (as read from YAML/JSON).

    Missing keys take their defaults. An unknown key or a wrongly typed value raises
    ``ValueError`` naming the dotted key; a value the dataclass refuses raises ``ValueError``
    naming its section."""
    check_fields(cls, data)
    return _build(cls, data, "")


# --------------------------------------------------------------------------- files


def save_config(config: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    path = Path(path)
    data = to_dict(config)
    if path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, text)


def load_config(cls: type[T], path: str | Path) -> T:
    """Read config ``cls`` from a JSON (``.json``) or YAML (anything else) file, through
    ``cls.from_dict`` where the class has one.

    Raises :class:`~drdm.errors.InputError` (one line, naming the file and the dotted key)
    for a missing or unparsable file, an unknown key, a wrongly typed or invalid value.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        raise InputError(f"{path}: cannot parse config ({_first_line(err)})") from None
    build = getattr(cls, "from_dict", None)
    try:
        if build is None:
            return from_dict(cls, data if data is not None else {})
        return build(data if data is not None else {})
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: {_first_line(err)}") from None
