"""drdm.seeding, the package's one seed scheme: golden values (computed once with the rules'
previous homes, so the move changed no seed) and no second copy of a rule elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import drdm
from drdm.seeding import (
    PerProcessGenerator,
    drawn_generator,
    key_generator,
    process_key,
    sample_seed,
    stream_seed,
    worker_generator,
)


def _draw(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def test_golden_seeds():
    assert stream_seed(0, "init") == 8336741271172393109
    assert stream_seed(7, "data", 1) == 7885016466082638110
    assert stream_seed(2**70, "distill", 3) == 5552028070072140085
    assert _draw(worker_generator(5)) == 3993424537834302718  # outside a DataLoader worker
    assert _draw(key_generator("field", 3, 1)) == 38528173742422831
    assert 0 <= sample_seed("synth", -(2**80), "a b", "30:20", 0) < 2**63


def test_without_a_seed_torch_global_generator_decides():
    torch.manual_seed(3)
    a = _draw(worker_generator(None))
    torch.manual_seed(3)
    assert _draw(drawn_generator()) == a


def test_no_other_module_mixes_seeds():
    """The rules live in drdm.seeding only: no other module of the package mixes seeds with
    SeedSequence or turns a digest into a seed."""
    src = Path(drdm.__file__).parent
    pattern = re.compile(r"SeedSequence\(|int\.from_bytes\(digest")
    found = [
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if path.name != "seeding.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert found == []


class Transform(PerProcessGenerator):
    def __init__(self, seed):
        self.seed = seed


def test_per_process_generator_is_made_once_per_process_and_never_pickled():
    import pickle

    seeded = Transform(5)
    first = seeded.generator()
    assert seeded.generator() is first  # one generator per process
    assert _draw(first) == _draw(worker_generator(5))
    assert process_key()[1:] == (None, None)  # not inside a DataLoader worker
    copy = pickle.loads(pickle.dumps(seeded))
    assert copy._generator is None and copy.seed == 5
    torch.manual_seed(3)
    a = _draw(Transform(None).generator())
    torch.manual_seed(3)
    assert _draw(drawn_generator()) == a  # seed=None: torch's global generator decides
