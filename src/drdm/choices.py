"""Vocabularies of choices that the library checks and the command line offers, importable
without torch (``drdm --help`` builds its option lists from them without loading torch).

Each is defined here once; the modules that act on a choice import it from here:
:mod:`drdm.nn.engine` (engines), :mod:`drdm.pipelines.registry` (methods, stacks) and
:mod:`drdm.batch.inputs` (the methods of the batch commands).
"""

from __future__ import annotations

from typing import Literal

__all__ = ["BATCH_METHODS", "ENGINES", "METHODS", "STACKS", "Engine"]

#: how the network runs (:func:`drdm.nn.engine.resolve_engine`)
Engine = Literal["auto", "torch", "onnxruntime"]
ENGINES: tuple[str, ...] = ("auto", "torch", "onnxruntime")

#: method names accepted by :func:`drdm.pipelines.registry.make_method`
METHODS: tuple[str, ...] = ("none", "elastic", "mrbs", "bigaug", "drdm")
#: names accepted by :func:`drdm.pipelines.registry.make_stack`
STACKS: tuple[str, ...] = ("none", "bigaug", "affine")
#: the methods a batch command runs (the registry's names without ``"none"``)
BATCH_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "none")
