"""The one timing loop: validation, the quantize stage's sensitivity pass and the benchmarks all time with it,
so their milliseconds mean the same thing."""

from __future__ import annotations

import time
from collections.abc import Callable


def time_calls(call: Callable[[], object], runs: int, warmup: int = 0) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``call`` (``time.perf_counter``), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1e3)
    return samples
