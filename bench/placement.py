"""Q/DQ placement on OpenVINO's CPU plugin: which INT8 ONNX runs fastest, side by side in one process.

Variants of one FP32 model (default ResNeXt-50 32x4d at 224x224, batch 1), all compiled by OpenVINO:

* ``fp32``                 the FP32 ONNX
* ``ov_native_nncf``       ``nncf.quantize`` with defaults on the FP32 OpenVINO model (OpenVINO's own INT8)
* ``qdq_nncf_default_u8``  NNCF's ONNX PTQ as it comes (UINT8 after ReLU: TensorRT rejects it)
* ``qdq_nncf_default``     the same, made signed INT8 / zero point 0 (lint clean)
* ``qdq_residual``         signed, plus our residual placement (the default of ``quantize_ptq``)

Latency rounds are interleaved (each round times every variant, in a shuffled order) so a noisy shared CPU
slows all of them alike; the figure per variant is the median over all its runs. Weights are the arch's random
init with random BatchNorm affine parameters (latency does not depend on weight values); calibration uses real
Fashion-MNIST images resized to 224.

    .venv/bin/python -m bench.placement --out bench/placement.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def calibration_images(count: int, size: int) -> np.ndarray:
    from edgeresnext.data import load_dataset
    from edgeresnext.data.preprocess import Preprocess

    data = load_dataset("fashion-mnist", split="train")
    preprocess = Preprocess(channels="RGB", resize=size)
    return np.stack([preprocess.image_to_array(image) for image in data.images[:count]])


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnext50_32x4d")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calib", type=int, default=300, help="calibration images for our PTQ")
    parser.add_argument("--native-calib", type=int, default=100, help="calibration images for OpenVINO-native NNCF")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per variant per round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="bench/placement.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import nncf
    import onnx
    import openvino as ov
    import torch

    from bench.run import randomize_batchnorm
    from edgeresnext.atomic import write_json_atomic
    from edgeresnext.backends.openvino import ir_from_onnx
    from edgeresnext.config import QuantSpec
    from edgeresnext.export import onnx_from_torch
    from edgeresnext.lint import lint_onnx
    from edgeresnext.models.registry import create
    from edgeresnext.quantize import qdq
    from edgeresnext.quantize.ptq import calibration_dataset, quantize_onnx

    result: dict = {
        "arch": args.arch,
        "input": [1, 3, args.size, args.size],
        "command": " ".join(sys.argv),
        "versions": {"openvino": ov.__version__, "nncf": nncf.__version__},
    }
    scratch = Path(tempfile.mkdtemp(prefix="placement-"))
    model = create(args.arch).eval()
    torch.manual_seed(0)
    # The zero-init residual BN would also make folded weights identical (shared by the exporter).
    randomize_batchnorm(model)
    fp32 = onnx_from_torch(model, scratch / "fp32.onnx", input_shape=(3, args.size, args.size))
    calib = calibration_images(max(args.calib, args.native_calib), args.size)

    began = time.perf_counter()
    raw = quantize_onnx(
        fp32,
        calib[: args.calib],
        QuantSpec(subset_size=args.calib, placement="nncf_default", symmetric_activations=True),
        scratch / "qdq_nncf_default.onnx",
    )
    result["ptq_seconds"] = round(time.perf_counter() - began, 1)
    result["ptq_peak_rss_gb"] = round(peak_rss_gb(), 2)
    residual = copy.deepcopy(raw)
    result["residual_adds_rewritten"] = qdq.apply_residual_placement(residual)
    onnx.save(residual, scratch / "qdq_residual.onnx")
    unsigned = quantize_onnx(
        fp32,
        calib[:20],
        QuantSpec(subset_size=20, placement="nncf_default", symmetric_activations=False),
        scratch / "u8.onnx",
        lint=False,
    )
    del unsigned  # only the file is used: NNCF's MIXED preset output, UINT8 after ReLU
    result["lint_errors"] = {
        name: sum(v.severity == "error" for v in lint_onnx(scratch / f"{name}.onnx"))
        for name in ("qdq_nncf_default", "qdq_residual", "u8")
    }

    core = ov.Core()
    # f32 for the float parts of every variant, as the OpenVINO backend compiles: without it the CPU plugin runs
    # "FP32" (and the float layers of INT8 models) in bf16 on AVX512-BF16/AMX CPUs.
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if args.threads:
        config["INFERENCE_NUM_THREADS"] = args.threads
    # The anchor quantizes the FP32 IR as the OpenVINO backend writes it (ovc conversion, constants folded).
    # Quantizing core.read_model(onnx) directly instead left all 16 grouped convolutions in FP32 (NNCF found no
    # constant weights behind them), an anchor 30 % slower than the real one.
    native_model = core.read_model(str(ir_from_onnx(fp32, scratch / "fp32.xml", batch=(1, 1))))
    native_model.reshape([1, 3, args.size, args.size])
    began = time.perf_counter()
    native = nncf.quantize(
        native_model, calibration_dataset(calib[: args.native_calib], 1), subset_size=args.native_calib
    )
    result["ov_native_nncf_seconds"] = round(time.perf_counter() - began, 1)

    def compiled(source):
        graph = core.read_model(str(source)) if isinstance(source, Path) else source
        graph.reshape([1, 3, args.size, args.size])
        return core.compile_model(graph, "CPU", config)

    variants = {
        "fp32": compiled(fp32),
        "ov_native_nncf": compiled(native),
        "qdq_nncf_default_u8": compiled(scratch / "u8.onnx"),
        "qdq_nncf_default": compiled(scratch / "qdq_nncf_default.onnx"),
        "qdq_residual": compiled(scratch / "qdq_residual.onnx"),
    }
    image = calib[:1]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for net in variants.values():
        for _ in range(3):
            net(image)
    order = random.Random(0)  # noqa: S311 - a reproducible order, not a secret
    for _ in range(args.rounds):
        names = list(variants)
        order.shuffle(names)  # no variant always runs right after the same neighbour
        for name in names:
            net = variants[name]
            for _ in range(args.runs):
                start = time.perf_counter()
                net(image)
                times[name].append((time.perf_counter() - start) * 1000)
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    result["latency_ms_median"] = medians
    result["runs_per_variant"] = args.rounds * args.runs
    result["ratio_vs_fp32"] = {name: round(value / medians["fp32"], 3) for name, value in medians.items()}
    result["ratio_vs_ov_native_nncf"] = {
        name: round(value / medians["ov_native_nncf"], 3) for name, value in medians.items()
    }
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
