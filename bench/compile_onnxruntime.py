"""ONNX Runtime compile path: FP32 vs the Q/DQ INT8 ONNX as-is vs the ``unsigned_after_relu`` variant.

All three go through ``edgeresnext.backends.onnxruntime`` (graph optimisation ``all``, batch 1) for one FP32
model (default ResNeXt-50 32x4d at 224x224, random init; calibration on real Fashion-MNIST images resized to
224). Rounds are interleaved so a noisy shared CPU slows all alike; figures are medians over all runs.

    .venv/bin/python -m bench.compile_onnxruntime --out bench/compile_onnxruntime.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnext50_32x4d")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calib", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--out", default="bench/compile_onnxruntime.json")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from bench.compile_openvino import calibration_images
    from edgeresnext.atomic import write_json_atomic
    from edgeresnext.backends import get_backend
    from edgeresnext.config import QuantSpec, target_from_dict
    from edgeresnext.export import onnx_from_torch
    from edgeresnext.models.registry import create
    from edgeresnext.quantize.ptq import quantize_ptq

    scratch = Path(tempfile.mkdtemp(prefix="compile-onnxruntime-"))
    model = create(args.arch).eval()
    shape = (3, args.size, args.size)
    fp32_onnx = onnx_from_torch(model, scratch / "fp32.onnx", input_shape=shape)
    calib = calibration_images(args.calib, args.size)
    qdq_onnx = quantize_ptq(
        model, calib, QuantSpec(subset_size=args.calib), scratch / "qdq.onnx", fp32_onnx=fp32_onnx, lint=False
    )
    backend = get_backend("onnxruntime")
    variants = {
        "fp32": (fp32_onnx, {"precision": "fp32", "quant": {"method": "none"}}),
        "qdq_int8": (qdq_onnx, {"precision": "int8"}),
        "qdq_int8_unsigned_after_relu": (
            qdq_onnx,
            {"precision": "int8", "backend_options": {"onnxruntime": {"unsigned_after_relu": True}}},
        ),
    }
    runners, precision = {}, {}
    for name, (source, section) in variants.items():
        target = target_from_dict({"name": name, "backend": "onnxruntime", **section})
        runners[name] = backend.load(backend.compile(source, target, scratch / name), target)
        report = runners[name].precision_report()
        precision[name] = {k: report[k] for k in ("int8_ops", "float_ops", "int8_fraction")}
    image = calib[:1]
    times: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():
        runner(image)
    for _ in range(args.rounds):
        for name, runner in runners.items():
            for _ in range(args.runs):
                start = time.perf_counter()
                runner(image)
                times[name].append((time.perf_counter() - start) * 1000)
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    result = {
        "arch": args.arch,
        "input": [1, *shape],
        "command": " ".join(["python -m bench.compile_onnxruntime", *sys.argv[1:]]),
        "versions": {"onnxruntime": ort.__version__},
        "runtime_precision": precision,
        "runs_per_variant": args.rounds * args.runs,
        "latency_ms_median": medians,
        "latency_ms_min": {name: round(min(values), 2) for name, values in times.items()},
        "vs_fp32": {name: round(value / medians["fp32"], 3) for name, value in medians.items()},
    }
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
