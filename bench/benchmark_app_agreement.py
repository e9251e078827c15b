"""Does the latency ``edgeresnext validate`` reports for an OpenVINO IR agree with OpenVINO's ``benchmark_app``?

Both run the same IR on the CPU with the same properties (``PERFORMANCE_HINT=LATENCY``, a fixed
``INFERENCE_NUM_THREADS``, synchronous requests, batch 1). On a shared machine the load changes from one
minute to the next, so the two are interleaved: each round times validate's runner (the OpenVINO backend's
Runner through :func:`edgeresnext.validate.measure_latency`) and then ``benchmark_app``; the figure compared is
the median over rounds of each round's median.

    python -m bench.benchmark_app_agreement build/cpu/compile/model.xml --threads 2 --rounds 9 --runs 1000
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def benchmark_app_median_ms(xml: Path, threads: int, iterations: int, config_dir: Path) -> float:
    """benchmark_app's median latency (ms) with the latency hint and ``threads`` (set through -load_config,
    because benchmark_app refuses -nthreads together with a hint)."""
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    config = config_dir / "ov_config.json"
    config.write_text(json.dumps({"CPU": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads)}}))
    result = subprocess.run(
        [
            exe,
            "-m",
            str(xml),
            "-d",
            "CPU",
            "-hint",
            "none",
            "-load_config",
            str(config),
            "-api",
            "sync",
            "-niter",
            str(iterations),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Median:\s+([\d.]+) (ms|us)", result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"benchmark_app failed ({result.returncode}): {result.stdout[-800:]}{result.stderr[-800:]}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "us" else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("xml", type=Path, help="OpenVINO IR (.xml) with a static batch of 1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=1000, help="timed calls per round, for each tool")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    from edgeresnext.backends import get_backend
    from edgeresnext.validate import measure_latency

    openvino = get_backend("openvino")
    options = openvino.run_options(threads=args.threads, hint="latency")
    runner = openvino.load(openvino.artifact_for_file(args.xml), options)
    sample = np.random.default_rng(0).standard_normal((1, *runner.input_shape)).astype(np.float32)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            ours.append(measure_latency(runner, sample, runs=args.runs, warmup=args.warmup).p50_ms)
            theirs.append(benchmark_app_median_ms(args.xml, args.threads, args.runs, Path(scratch)))
            print(f"round {round_index + 1}: validate p50 {ours[-1]:.4f} ms   benchmark_app median {theirs[-1]:.4f} ms")
    validate_ms, bapp_ms = statistics.median(ours), statistics.median(theirs)
    difference = validate_ms / bapp_ms - 1
    verdict = "within" if abs(difference) <= 0.15 else "OUTSIDE"
    print(
        f"validate {validate_ms:.4f} ms vs benchmark_app {bapp_ms:.4f} ms: {difference * 100:+.1f} % ({verdict} ±15 %)"
    )
    if args.out:
        from edgeresnext.atomic import write_json_atomic

        write_json_atomic(
            args.out,
            {
                "xml": str(args.xml),
                "threads": args.threads,
                "rounds": args.rounds,
                "runs": args.runs,
                "validate_p50_ms": ours,
                "benchmark_app_median_ms": theirs,
                "validate_ms": validate_ms,
                "benchmark_app_ms": bapp_ms,
                "difference": difference,
                "command": " ".join(sys.argv),
            },
        )
    return 0 if abs(difference) <= 0.15 else 1


if __name__ == "__main__":
    sys.exit(main())
