"""bench/run.py's interleaved timing: the rows take turns every round (shuffled), and each row's figure is its own;
bench/build_time.py reads a build's stage and row times from what the build prints."""

from __future__ import annotations

import time

import numpy as np

from bench.build_time import timings
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
        {"fast": runner("fast", 0.001), "slow": runner("slow", 0.02)},
        sample,
        rounds=6,
        runs=4,
        warmup=1,
        anchor="slow",
        seed=3,
    )
    # Per round and row: 1 warm-up + 4 timed bound-or-plain calls, then 1 + 4 whole calls (measure_latency).
    per_turn = 10
    turns = [order[i] for i in range(0, len(order), per_turn)]
    assert all(order[i : i + per_turn] == [order[i]] * per_turn for i in range(0, len(order), per_turn))
    assert all(sorted(turns[i : i + 2]) == ["fast", "slow"] for i in range(0, 12, 2))
    assert {tuple(turns[i : i + 2]) for i in range(0, 12, 2)} == {("fast", "slow"), ("slow", "fast")}  # shuffled
    assert [len(result[name]["round_p50_ms"]) for name in ("fast", "slow")] == [6, 6]
    assert 1.0 <= result["fast"]["p50_ms"] <= result["fast"]["p90_ms"] < 20.0 <= result["slow"]["p50_ms"]
    assert result["slow"]["ratio_to_anchor"] == 1.0
    assert 0.04 < result["fast"]["ratio_to_anchor"] < 0.5


def test_build_time_reads_each_stage_and_row_from_a_real_builds_output(capsys):
    """The lines the build prints (the pipeline's progress lines and the validation's progress bars, the same
    formats a terminal shows), from a run of the toy pipeline's own printing code paths."""
    from edgeresnext.progress import progress_bar

    for _ in progress_bar(range(3), desc="qdq-int8-fp16 (onnxruntime)", unit="batch", leave=False):
        pass
    printed = capsys.readouterr()
    output = "\n".join(
        [
            "[1/7] model: done in 0.0 s",
            "[3/7] quantize: done in 10.6 s",
            "[5/7] compile: unchanged, skipped",
            "[6/7] validate: rerunning: compile/kit.json changed; done in 66.3 s",
            printed.out + printed.err,
        ]
    )
    stages, rows = timings(output)
    assert stages == {"model": 0.0, "quantize": 10.6, "compile": 0.0, "validate": 66.3}
    assert list(rows) == ["qdq-int8-fp16 (onnxruntime)"] and rows["qdq-int8-fp16 (onnxruntime)"] >= 0
