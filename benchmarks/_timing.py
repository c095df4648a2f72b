"""Timing in turns and the machine description, shared by the benchmarks.

Variants are timed one after another, one run each per turn, after one untimed warm-up turn,
so that a change of machine load affects all of them alike; the ratio of two variants is the
median of their per-turn ratios.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping


def turns(variants: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each variant in each of ``repeats`` turns (after one warm-up turn)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for turn in range(repeats + 1):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            if turn:
                times[name].append(time.perf_counter() - start)
    return times


def median_ratio(values: list[float], base: list[float]) -> float:
    """Median of the per-turn ratios ``values[i] / base[i]``."""
    return statistics.median(v / b for v, b in zip(values, base, strict=True))


def machine() -> str:
    """CPU model, logical CPU count and operating system, for a benchmark's header."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"
