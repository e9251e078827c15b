"""The small build the pipeline tests and the docs tests share: the shipped model, 200 validation images, 60
calibration images (``tests/conftest.py``'s session fixture ``first_build`` makes it once)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def write_small_target(folder: Path, calib: Path, checkpoint: Path, **overrides: object) -> Path:
    data = {
        "extends": str(REPO / "targets" / "cpu.yaml"),
        "name": "cpu-small",
        "model": {"checkpoint": str(checkpoint)},
        "data": {"limit": 200},
        "quant": {"calib_dir": str(calib), "subset_size": 60},
        "validate": {"latency_runs": 5, "warmup_runs": 1},
        "gates": {"max_top1_drop": 0.05},
    }
    for dotted, value in overrides.items():
        cursor = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            cursor = cursor.setdefault(part, {})
        cursor[leaf] = value
    path = folder / "cpu-small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
