"""How long a shipped-model build takes on this machine into an empty build folder (calib_data/ and the dataset as
they are; the first build ever also writes calib_data/): ``edgeresnext build --target T`` into a fresh
folder (what ``make build TARGET=T`` runs after its setup check), ``--repeats`` times, with each stage's time and
each validation row's inference time as the build prints them, the load average before and after (a figure taken
while other work shares the 2 cores is not this machine's), and the CPU.

The goal it is held to: ``make build TARGET=jetson`` of the shipped model within 90 s (issue 32); ``within_goal``
says whether the slowest repeat met it.

    .venv/bin/python -m bench.build_time --out bench/build_time.json [--target jetson] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = {"jetson": 90.0}
STAGE = re.compile(r"^\[\d+/\d+\] (\w+): (?:rerunning: .*; )?(?:done in ([\d.]+) s|unchanged, skipped)$")
ROW = re.compile(r"^(.+?): \d+/\d+ batch in ([\d.]+) s")


def cpu() -> dict[str, object]:
    """The CPU as ``lscpu`` names it, its family/model, the usable cores and the instruction sets kernels choose by."""
    from edgeresnext.environment import cpu_family_model, cpu_flags, cpu_model, usable_cores

    return {"model_name": cpu_model(), "family_model": cpu_family_model(), "cores": usable_cores(), "isa": cpu_flags()}


def timings(output: str) -> tuple[dict[str, float], dict[str, float]]:
    """Each stage's seconds (0 when skipped) and each validation row's inference seconds, from a build's output."""
    stages, rows = {}, {}
    for line in output.splitlines():
        if match := STAGE.match(line):
            stages[match.group(1)] = float(match.group(2)) if match.group(2) else 0.0
        elif match := ROW.match(line):
            rows[match.group(1)] = float(match.group(2))
    return stages, rows


def one_build(target: str, out: Path) -> dict[str, object]:
    load_before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "edgeresnext.cli", "build", "--target", target, "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    stages, rows = timings(done.stdout + done.stderr)
    return {
        "seconds": round(seconds, 1),
        "exit_code": done.returncode,
        "stages_s": stages,
        "validation_rows_s": rows,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="jetson")
    parser.add_argument("--repeats", type=int, default=2, choices=range(1, 11), metavar="1..10")
    parser.add_argument("--out", default="bench/build_time.json")
    args = parser.parse_args(argv)
    runs = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="edgeresnext-build-time-") as folder:
            runs.append(one_build(args.target, Path(folder)))
        print(f"build {args.target} #{repeat + 1}: {runs[-1]['seconds']} s, exit {runs[-1]['exit_code']}", flush=True)
    goal = GOAL_SECONDS.get(args.target)
    slowest = max(run["seconds"] for run in runs)
    result = {
        "command": f"edgeresnext build --target {args.target} --out <fresh folder>",
        "target": args.target,
        "cpu": cpu(),
        "runs": runs,
        "slowest_s": slowest,
        "goal_s": goal,
        "within_goal": None if goal is None else slowest <= goal,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from edgeresnext.atomic import write_text_atomic

    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}: slowest {slowest} s (goal {goal} s)")
    return 0 if all(run["exit_code"] in (0, 3) for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
