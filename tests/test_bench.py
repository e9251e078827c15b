"""bench/run.py's interleaved timing: the rows take turns every round, and each row's figure is its own."""

from __future__ import annotations

import time

import numpy as np

from bench.run import interleaved_p50


def test_interleaved_timing_takes_turns_and_keeps_each_row_apart():
    order: list[str] = []

    def runner(name: str, seconds: float):
        def run(batch: np.ndarray) -> np.ndarray:
            order.append(name)
            time.sleep(seconds)
            return batch

        return run

    sample = np.zeros((1, 1, 2, 2), np.float32)
    result = interleaved_p50(
        {"fast": runner("fast", 0.001), "slow": runner("slow", 0.02)}, sample, rounds=3, runs=4, warmup=1
    )
    # Per round and row: 1 warm-up + 4 timed bound-or-plain calls, then 1 + 4 whole calls (measure_latency).
    per_turn = 10
    assert order == (["fast"] * per_turn + ["slow"] * per_turn) * 3
    assert [len(result[name]["round_p50_ms"]) for name in ("fast", "slow")] == [3, 3]
    assert 1.0 <= result["fast"]["p50_ms"] < 20.0 <= result["slow"]["p50_ms"]
