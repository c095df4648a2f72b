"""The package's one seed scheme: every seed and generator the package derives comes from here.

Randomness enters the library as an explicit :class:`torch.Generator`; this module makes those
generators from what the caller knows, each rule written once:

* :func:`sample_seed` / :func:`sample_generator`: one sample of a batch command (``augment``,
  ``synth``, ``generate``, ``diffuse``), a hash of the run's seed, the input's name, the level
  and the sample number, so any sample can be recomputed alone (sharding, resume);
* :func:`stream_seed`: one random stream (``init``, ``data``, ``diffusion``, ``distill``) of one
  training process, mixed by :class:`numpy.random.SeedSequence`;
* :func:`worker_generator`: a transform's generator in this process, mixed with the
  ``DataLoader`` worker's seed so that workers differ (the transforms and the MONAI adapter);
  :class:`PerProcessGenerator` keeps one per process for a transform (:func:`process_key`);
* :func:`key_generator`: a generator named by a tuple of values (the experiments);
* :func:`drawn_generator`: a child of a generator, or of torch's global generator for callers
  that pass no seed (``torch.manual_seed`` reproduces it); :func:`fresh_generator`: OS
  entropy.

All seeds are 63-bit non-negative integers (valid for :meth:`torch.Generator.manual_seed`).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch

__all__ = [
    "STREAMS",
    "PerProcessGenerator",
    "drawn_generator",
    "fresh_generator",
    "key_generator",
    "process_key",
    "sample_generator",
    "sample_seed",
    "stream_seed",
    "worker_generator",
]

#: the random streams of a training process and their SeedSequence spawn keys
STREAMS = {"init": 0, "data": 1, "diffusion": 2, "distill": 3}

_MASK_63 = 2**63 - 1


def sample_seed(command: str, seed: int, name: str, level: str | int, sample: int) -> int:
    """The seed of one sample of a batch command: the first 8 bytes of
    ``sha256("drdm/<command>/<seed>/<name>/<level>/<sample>")`` as a big-endian integer, masked
    to 63 bits (valid for :meth:`torch.Generator.manual_seed`).

    ``level`` is the level (``55``) for ``augment`` and ``"30:20"`` for ``synth``.

    >>> sample_seed("augment", 0, "img", 55, 3) == sample_seed("augment", 0, "img", 55, 3)
    True
    """
    text = f"drdm/{command}/{int(seed)}/{name}/{level}/{int(sample)}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & _MASK_63


def sample_generator(
    command: str, seed: int, name: str, level: str | int, sample: int
) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with :func:`sample_seed` (any integer ``seed``,
    e.g. ``2**70``, works)."""
    return torch.Generator().manual_seed(sample_seed(command, seed, name, level, sample))


def stream_seed(seed: int, stream: str, rank: int = 0) -> int:
    """A 63-bit seed for the generator ``stream`` (``"init"``, ``"data"``, ``"diffusion"``,
    ``"distill"``: :data:`STREAMS`) of training process ``rank``, mixed from the run's
    ``seed`` by :class:`numpy.random.SeedSequence` (well separated streams for neighbouring
    seeds and ranks)."""
    sequence = np.random.SeedSequence(entropy=int(seed) % 2**64, spawn_key=(STREAMS[stream], rank))
    hi, lo = (int(v) for v in sequence.generate_state(2, np.uint32))
    return ((hi << 32) | lo) & _MASK_63


def worker_generator(seed: int | None) -> torch.Generator:
    """A ``torch.Generator`` for the current process, seeded from ``seed`` and (inside a
    ``DataLoader`` worker) the worker's seed and id, mixed by
    :class:`numpy.random.SeedSequence`. ``seed=None``: :func:`drawn_generator` (in a worker
    PyTorch has seeded torch's generator per worker)."""
    if seed is None:
        return drawn_generator()
    info = torch.utils.data.get_worker_info()
    entropy = [int(seed) % 2**63]
    if info is not None:
        entropy += [int(info.seed) % 2**63, int(info.id)]
    value = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(value)


def process_key() -> tuple[int, int | None, int | None]:
    """``(pid, worker id, worker seed)`` of the calling process (``(pid, None, None)`` outside a
    ``DataLoader`` worker): a generator made for one key belongs to that process and epoch."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return os.getpid(), None, None
    return os.getpid(), int(info.id), int(info.seed)


class PerProcessGenerator:
    """Mixin of the transforms: :meth:`generator` from the instance's ``seed``, one generator
    per process (the main process and every ``DataLoader`` worker, each epoch), created lazily
    by :func:`worker_generator`; with ``seed=None`` a new one per call from torch's global
    generator. Pickling (spawned workers) never ships a generator."""

    seed: int | None
    _generator: torch.Generator | None = None
    _generator_key: tuple[int, int | None, int | None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_generator"] = None
        state["_generator_key"] = None
        return state

    def generator(self) -> torch.Generator:
        """The generator for the next call: with ``seed`` set, this process's generator
        (created lazily); with ``seed=None`` a new one seeded from torch's global generator."""
        if self.seed is None:
            return worker_generator(None)
        key = process_key()
        if self._generator is None or self._generator_key != key:
            self._generator = worker_generator(self.seed)
            self._generator_key = key
        return self._generator


def key_generator(*key: object) -> torch.Generator:
    """A CPU generator seeded by a stable hash of ``key`` (its ``repr``; independent of the
    process): the first 8 bytes of its SHA-256 as a little-endian integer, halved."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def drawn_generator(source: torch.Generator | None = None) -> torch.Generator:
    """A CPU generator seeded by one draw (``0 <= seed < 2**62``) from ``source``: a child of
    an explicit generator, or, with ``None``, of torch's global generator (so
    ``torch.manual_seed`` reproduces it)."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=source)))


def fresh_generator() -> torch.Generator:
    """A CPU generator seeded from OS entropy (for callers that pass no generator)."""
    seed = int(np.random.SeedSequence().generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
    return torch.Generator().manual_seed(seed)
