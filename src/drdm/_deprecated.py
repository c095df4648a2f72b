"""Old import paths kept for one release: each is a thin module that re-exports its new home
and warns once, on import (:func:`moved`)."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any


def moved(old: str, new: str, namespace: dict[str, Any]) -> None:
    """Make module ``old`` (its globals: ``namespace``) an alias of module ``new``: its public
    names (``__all__``) are copied, any other attribute is looked up in ``new`` on use, and a
    :class:`DeprecationWarning` names the new home."""
    module: ModuleType = importlib.import_module(new)
    public = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
    namespace.update({name: getattr(module, name) for name in public})
    namespace["__all__"] = list(public)

    def __getattr__(name: str) -> Any:
        try:
            return getattr(module, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} has no attribute {name!r}") from None

    namespace["__getattr__"] = __getattr__
    warnings.warn(
        f"{old} moved to {new}; the old name will be removed in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
