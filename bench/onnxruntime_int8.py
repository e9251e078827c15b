"""ONNX Runtime INT8 on this CPU: our Q/DQ ONNX rewritten by ``ort_int8_from_qdq`` against ORT's quantize_static.

One run, per model, every row in ONNX Runtime's CPU provider (graph optimisation ``all``, the same threads, batch 1,
input bound once through an IO binding as ``ONNXRuntimeRunner`` times it):

* ``onnxruntime-fp32``                the FP32 ONNX
* ``onnxruntime-int8-quantize-static`` the anchor: ``onnxruntime.quantization.quantize_static`` on the same FP32 ONNX
  and the same calibration images (QDQ, QUInt8 activations, QInt8 per-channel weights, MinMax)
* ``onnxruntime-int8-qdq``        our Q/DQ ONNX as it is (``quantize_ptq``: what runs today)
* ``onnxruntime-int8-ours-no-merge``  ``ort_int8_from_qdq(group_channels=1)``: the Q/DQ rewrite alone
* ``onnxruntime-int8-ours``           ``ort_int8_from_qdq`` defaults (plus grouped convolutions merged)

Models: the shipped resnext20_4x8d (28x28, its Fashion-MNIST weights; calibration: 300 class-balanced training
images; accuracy: top-1 on the full test set, 10,000 images) and resnext50_32x4d at 224x224 (random weights with
random BatchNorm affine parameters and statistics from the calibration images, as bench/run.py builds it;
calibration: Fashion-MNIST training images resized to 224 RGB; accuracy: agreement and cosine with FP32 on held-out
test images, since the weights are random). p50 and the ratios come from interleaved rounds (``bench.run``'s
``interleaved_p50``: each round every row takes a turn, in a shuffled order); the ratio is the median over rounds of
the row's p50 over the anchor's p50 in the same round. The load average is recorded before and after the timing.

    .venv/bin/python -m bench.onnxruntime_int8 --out bench/onnxruntime_int8.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench.onnxruntime_int8")

ANCHOR = "onnxruntime-int8-quantize-static"
MODELS = ("shipped", "resnext50_32x4d")


def quantize_static_anchor(fp32_onnx: Path, calib: np.ndarray, out: Path) -> float:
    """ONNX Runtime's own static INT8 (QDQ, QUInt8 activations, QInt8 per-channel weights, MinMax); its seconds."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    began = time.perf_counter()
    quantize_static(
        str(fp32_onnx),
        str(out),
        Images(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return time.perf_counter() - began


def shipped_model(calib_count: int, work: Path):
    """The shipped checkpoint, its preprocessed calibration images and the full test set."""
    from edgeresnext.data import load_dataset
    from edgeresnext.data.calibration import load_calibration_images, write_calibration_set
    from edgeresnext.models import load_checkpoint
    from edgeresnext.models.shipped import resolve_checkpoint

    model = load_checkpoint(resolve_checkpoint("shipped:fashion-mnist"))
    preprocess = model.meta.preprocess
    write_calibration_set(work / "calib", count=calib_count, seed=0)
    calib = load_calibration_images(work / "calib", preprocess, calib_count)
    test = load_dataset("fashion-mnist", split="test")
    images = np.stack([preprocess.image_to_array(image) for image in test.images]).astype(np.float32)
    return model, calib, images, test.labels


def bench_model(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from bench.run import build_model, interleaved_p50, load_images
    from edgeresnext.backends import get_backend
    from edgeresnext.config import QuantSpec
    from edgeresnext.export import onnx_from_torch
    from edgeresnext.quantize.ort_int8 import integer_compute_share, ort_int8_from_qdq
    from edgeresnext.quantize.ptq import quantize_ptq
    from edgeresnext.validate import fidelity_metrics, run_logits

    work.mkdir(parents=True, exist_ok=True)
    if name == "shipped":
        model, calib, eval_images, labels = shipped_model(args.calib, work)
        shape = tuple(int(d) for d in calib.shape[1:])
        description = {
            "arch": model.meta.arch,
            "weights": "shipped:fashion-mnist",
            "calibration": f"fashion-mnist/train, {len(calib)} class-balanced images (seed 0)",
            "evaluation": f"fashion-mnist/test, all {len(eval_images)} images (top-1)",
        }
    else:
        calib = load_images("train", args.calib, args.seed)
        eval_images = load_images("test", args.eval_images, args.seed + 1)
        labels = None
        model = build_model(calib, args.seed, bn_images=min(64, len(calib)))
        shape = (3, 224, 224)
        description = {
            "arch": name,
            "weights": f"random (seed {args.seed}), BatchNorm weight U(0.5, 1.5), bias U(-0.1, 0.1), statistics from "
            "the calibration images",
            "calibration": f"fashion-mnist/train, {len(calib)} images resized to 224 RGB",
            "evaluation": f"fashion-mnist/test, {len(eval_images)} images (agreement/cosine vs FP32)",
        }
    fp32 = onnx_from_torch(model, work / "fp32.onnx", input_shape=shape)
    files: dict[str, Path] = {"onnxruntime-fp32": fp32}
    seconds: dict[str, float] = {}
    files[ANCHOR] = work / "int8_quantize_static.onnx"
    seconds[ANCHOR] = quantize_static_anchor(fp32, calib, files[ANCHOR])
    qdq = files["onnxruntime-int8-qdq"] = work / "int8_qdq.onnx"
    began = time.perf_counter()
    quantize_ptq(model, calib, QuantSpec(subset_size=len(calib)), qdq, fp32_onnx=fp32, lint=False)
    seconds["onnxruntime-int8-qdq"] = time.perf_counter() - began
    rewrite: dict[str, Any] = {}
    for row, group_channels in (("onnxruntime-int8-ours-no-merge", 1), ("onnxruntime-int8-ours", None)):
        files[row] = work / f"{row.removeprefix('onnxruntime-')}.onnx"
        began = time.perf_counter()
        extra = {} if group_channels is None else {"group_channels": group_channels}
        rewrite[row] = ort_int8_from_qdq(qdq, files[row], cpu="x86_64", calibration=calib, analyze=False, **extra)
        seconds[row] = time.perf_counter() - began

    # The backend's own Runner (the one validation and the device runtime use), ONNX Runtime's level "all".
    onnxruntime = get_backend("onnxruntime")
    options = onnxruntime.run_options(threads=args.threads, graph_optimization="all")
    precision = {row: "fp32" if "fp32" in row else "int8" for row in files}
    runners = {
        row: onnxruntime.load(onnxruntime.artifact_for_file(path, precision[row]), options)
        for row, path in files.items()
    }
    logits = {row: run_logits(runner, eval_images, batch_size=100) for row, runner in runners.items()}
    reference = logits["onnxruntime-fp32"]
    rows: list[dict[str, Any]] = []
    for row, path in files.items():
        runtime = integer_compute_share(path, threads=args.threads)
        entry: dict[str, Any] = {"name": row, "file": path.name, "size_bytes": path.stat().st_size, **runtime}
        if row in seconds:
            entry["make_seconds"] = round(seconds[row], 2)
        if row in rewrite:
            entry["rewrite"] = rewrite[row]
        entry.update({k: round(v, 6) for k, v in fidelity_metrics(logits[row], reference).items()})
        if labels is not None:
            top1 = float(np.mean(logits[row].argmax(1) == labels))
            fp32_top1 = float(np.mean(reference.argmax(1) == labels))
            entry.update(top1=round(top1, 4), top1_drop_pt=round(100 * (fp32_top1 - top1), 2))
        rows.append(entry)
    merged_exact = bool(np.array_equal(logits["onnxruntime-int8-ours"], logits["onnxruntime-int8-ours-no-merge"]))

    load_before = os.getloadavg()
    logger.info("%s: interleaved timing, %d rounds x %d runs per row", name, args.rounds, args.round_runs)
    timing = interleaved_p50(
        runners, eval_images[:1], args.rounds, args.round_runs, warmup=3, anchor=ANCHOR, seed=args.seed
    )
    load_after = os.getloadavg()
    for entry in rows:
        entry.update(
            p50_ms=round(timing[entry["name"]]["p50_ms"], 4),
            p90_ms=round(timing[entry["name"]]["p90_ms"], 4),
            p50_ratio_to_anchor=round(timing[entry["name"]]["ratio_to_anchor"], 3),
            interleaved=timing[entry["name"]],
        )
    for runner in runners.values():
        runner.close()
    return {
        "model": {**description, "input": [1, *shape]},
        "load_average_before_timing": [round(v, 2) for v in load_before],
        "load_average_after_timing": [round(v, 2) for v in load_after],
        "group_merge_exact": merged_exact,
        "results": rows,
    }


def print_table(name: str, result: dict[str, Any]) -> None:
    rows = result["results"]
    width = max(len(r["name"]) for r in rows)
    accuracy = "top-1 (drop pt)" if "top1" in rows[0] else "agreement  cosine"
    print(
        f"\n{name} {result['model']['input']}  load {result['load_average_before_timing']} -> "
        f"{result['load_average_after_timing']}"
    )
    print(f"{'row':{width}s}   p50 ms   p90 ms  x anchor  int convs  {accuracy}")
    for r in rows:
        convs = f"{r['integer_convs']}/{r['convs']}"
        if "top1" in r:
            quality = f"{100 * r['top1']:.2f} % ({r['top1_drop_pt']:+.2f})"
        else:
            quality = f"{100 * r['agreement']:6.1f} %  {r['cosine_mean']:.5f}"
        print(
            f"{r['name']:{width}s}  {r['p50_ms']:7.3f}  {r['p90_ms']:7.3f}  {r['p50_ratio_to_anchor']:8.3f}  "
            f"{convs:>9s}  {quality}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.onnxruntime_int8", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/onnxruntime_int8.json")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--calib", type=int, default=300, help="calibration images (anchor and ours alike)")
    parser.add_argument("--eval-images", type=int, default=64, help="ResNeXt-50: held-out images for agreement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds behind p50 and the ratios")
    parser.add_argument("--round-runs", type=int, default=20, help="timed runs per row and round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="where the ONNX files go (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from edgeresnext.atomic import write_json_atomic
    from edgeresnext.environment import environment

    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-ort-int8-"))
    results = {name: bench_model(name, args, work / name) for name in args.models}
    report = {
        "schema": "edgeresnext.bench.onnxruntime_int8",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python", "-m", "bench.onnxruntime_int8", *(argv if argv is not None else sys.argv[1:])]),
        "anchor": ANCHOR,
        "protocol": {
            "batch": 1,
            "threads": args.threads,
            "graph_optimization": "all",
            "timing": f"{args.rounds} interleaved rounds, {args.round_runs} IO-bound runs per row and round (3 "
            "warm-up); p50/p90 over all of a row's runs; p50_ratio_to_anchor: median over rounds of row p50 / "
            "anchor p50 in that round",
            "integer_convs": "convolutions of ONNX Runtime's optimised graph that run as QLinearConv",
        },
        "environment": environment(args.threads),
        "total_seconds": round(time.perf_counter() - began, 1),
        "models": results,
    }
    write_json_atomic(args.out, report)
    env = report["environment"]
    print(f"CPU {env['cpu_model']}, {args.threads} threads, onnxruntime {env['packages'].get('onnxruntime')}")
    for name, result in results.items():
        print_table(name, result)
    print(f"\nwritten to {args.out} ({report['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
