"""OpenVINO compile path: does the IR our backend makes from the Q/DQ ONNX keep INT8 speed?

Three artifacts of one FP32 model (default ResNeXt-50 32x4d, 224x224, batch 1), every one made and run
through ``edgeresnext.backends.openvino`` exactly as ``edgeresnext compile`` does (IR written and read back,
static batch 1, latency hint, float layers in FP32):

* ``fp32``            the FP32 ONNX -> IR (target cpu-fp32)
* ``ov_native_nncf``  ``nncf.quantize`` with its defaults on the FP32 OpenVINO model (``native_int8: true``)
* ``qdq_int8``        the Q/DQ INT8 ONNX from ``quantize_ptq`` (QuantSpec defaults: signed symmetric,
                      per-channel, residual placement) -> IR (target cpu)
* ``qdq_onnx_direct_control``  the same Q/DQ ONNX compiled straight by OpenVINO with its defaults: shows
                      whether our compile path (IR, FP32 float layers) costs speed

Rounds are interleaved (each round times every artifact) so a noisy shared CPU slows all alike; the figure
is the median over all runs. Weights are the arch's random init (latency does not depend on their values);
calibration uses real Fashion-MNIST training images resized to 224 (same images for both INT8 paths).

    .venv/bin/python -m bench.compile_openvino --out bench/compile_openvino.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def calibration_images(count: int, size: int) -> np.ndarray:
    from edgeresnext.data import load_dataset
    from edgeresnext.data.preprocess import Preprocess

    data = load_dataset("fashion-mnist", split="train")
    preprocess = Preprocess(channels="RGB", resize=size)
    return np.stack([preprocess.image_to_array(image) for image in data.images[:count]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnext50_32x4d")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calib", type=int, default=100, help="calibration images (both INT8 paths)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per artifact per round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="bench/compile_openvino.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import nncf
    import openvino as ov

    from edgeresnext.atomic import write_json_atomic
    from edgeresnext.backends import get_backend
    from edgeresnext.config import QuantSpec, target_from_dict
    from edgeresnext.export import onnx_from_torch
    from edgeresnext.models.registry import create
    from edgeresnext.quantize.ptq import quantize_ptq

    scratch = Path(tempfile.mkdtemp(prefix="compile-openvino-"))
    model = create(args.arch).eval()
    shape = (3, args.size, args.size)
    fp32_onnx = onnx_from_torch(model, scratch / "fp32.onnx", input_shape=shape)
    calib = calibration_images(args.calib, args.size)
    began = time.perf_counter()
    qdq_onnx = quantize_ptq(
        model, calib, QuantSpec(subset_size=args.calib), scratch / "qdq.onnx", fp32_onnx=fp32_onnx, lint=False
    )
    ptq_seconds = time.perf_counter() - began

    options = {"openvino": {"hint": "latency", **({"threads": args.threads} if args.threads else {})}}
    backend = get_backend("openvino")
    targets = {
        "fp32": target_from_dict(
            {
                "name": "fp32",
                "backend": "openvino",
                "precision": "fp32",
                "quant": {"method": "none"},
                "backend_options": options,
            }
        ),
        "ov_native_nncf": target_from_dict(
            {
                "name": "native",
                "backend": "openvino",
                "precision": "int8",
                "quant": {"subset_size": args.calib},
                "backend_options": {"openvino": {**options["openvino"], "native_int8": True}},
            }
        ),
        "qdq_int8": target_from_dict(
            {"name": "qdq", "backend": "openvino", "precision": "int8", "backend_options": options}
        ),
    }
    sources = {"fp32": fp32_onnx, "ov_native_nncf": fp32_onnx, "qdq_int8": qdq_onnx}
    runners, compile_seconds, precision = {}, {}, {}
    for name, target in targets.items():
        began = time.perf_counter()
        artifact = backend.compile(sources[name], target, scratch / name, calibration=calib)
        compile_seconds[name] = round(time.perf_counter() - began, 1)
        runners[name] = backend.load(artifact, target)
        report = runners[name].precision_report()
        precision[name] = {k: report[k] for k in ("compute_layers", "int8_layers", "by_precision")}

    # Control for the compile path itself: the same Q/DQ ONNX handed straight to OpenVINO with its default
    # CPU config (no IR round trip, BF16 allowed where the CPU has it). Not an edgeresnext artifact.
    direct_model = ov.Core().read_model(str(qdq_onnx))
    direct_model.reshape([1, *shape])
    direct = ov.Core().compile_model(direct_model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    runners["qdq_onnx_direct_control"] = lambda batch: direct(batch)[0]

    image = calib[:1]
    times: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():
        for _ in range(3):
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
        "command": " ".join(["python -m bench.compile_openvino", *sys.argv[1:]]),
        "versions": {"openvino": ov.__version__, "nncf": nncf.__version__},
        "ptq_seconds": round(ptq_seconds, 1),
        "compile_seconds": compile_seconds,
        "runtime_precision": precision,
        "runs_per_artifact": args.rounds * args.runs,
        "latency_ms_median": medians,
        "latency_ms_min": {name: round(min(values), 2) for name, values in times.items()},
        "qdq_int8_vs_ov_native_nncf": round(medians["qdq_int8"] / medians["ov_native_nncf"], 3),
        "qdq_int8_vs_fp32": round(medians["qdq_int8"] / medians["fp32"], 3),
        "ov_native_nncf_vs_fp32": round(medians["ov_native_nncf"] / medians["fp32"], 3),
        "qdq_int8_vs_direct_control": round(medians["qdq_int8"] / medians["qdq_onnx_direct_control"], 3),
    }
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
