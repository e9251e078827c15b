"""``make bench``: ResNeXt-50 32x4d at 224x224 on this CPU, every runtime in one run, into bench/results.json.

Rows: PyTorch FP32, ONNX Runtime FP32, OpenVINO FP32, OpenVINO INT8 made with ``nncf.quantize`` defaults
on the OpenVINO model (the anchor every ratio is taken against), our INT8 Q/DQ ONNX
(:func:`edgeresnext.quantize.ptq.quantize_ptq`, residual placement) in ONNX Runtime and in OpenVINO, and the
same PTQ with NNCF's placement (``placement: nncf_default``, what targets/cpu.yaml uses) in OpenVINO.

The weights are random (no hub downloads here), with random BatchNorm affine parameters (the model's own init
zeroes each bottleneck's last BN) and statistics re-estimated on the calibration images, so activations have
realistic ranges; accuracy is therefore measured as agreement and logit cosine
with PyTorch FP32 on held-out images, not as ImageNet top-1. Calibration and evaluation images are
Fashion-MNIST (train and test split), resized to 224 and replicated to RGB.

Every runtime runs with the same thread count, batch 1, warm-up, and run count; latency is wall-clock per
inference (perf_counter; OpenVINO rows with the input set once, as benchmark_app does). The p50 and the ratios
to the anchor come from a last, interleaved phase in which the rows take turns, ``--rounds`` times.
Peak RSS is the process's peak resident memory during each row's work (model load,
quantization, evaluation, timing), reset per row through /proc/self/clear_refs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench.run")

ANCHOR = "openvino-int8-nncf-default"
SCHEMA_VERSION = 1


def imagenet_preprocess():
    from edgeresnext.data.preprocess import Preprocess

    return Preprocess(channels="RGB", resize=224, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def load_images(split: str, count: int, seed: int) -> np.ndarray:
    """``count`` Fashion-MNIST images of ``split`` as ImageNet-style 3x224x224 inputs."""
    from edgeresnext.data import load_dataset

    dataset = load_dataset("fashion-mnist", split=split)
    order = np.random.default_rng(seed).permutation(len(dataset))[:count]
    preprocess = imagenet_preprocess()
    return np.stack([preprocess.image_to_array(dataset.images[i]) for i in order]).astype(np.float32)


def randomize_batchnorm(model) -> None:
    """Trained-looking BatchNorm affine parameters: weight U(0.5, 1.5), bias U(-0.1, 0.1), from torch's RNG.

    The model's own init zeroes each bottleneck's last BN weight (zero-init residual), which makes every branch
    output exactly 0: the network would be its skip paths only, and where the branch quantizers sit would not
    change a single output.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.1, 0.1)


def build_model(calib: np.ndarray, seed: int, bn_images: int):
    """ResNeXt-50 32x4d with seeded random weights and BatchNorm statistics from ``bn_images`` real images."""
    import torch

    from edgeresnext.models import create

    torch.manual_seed(seed)
    model = create("resnext50_32x4d", num_classes=1000)
    randomize_batchnorm(model)
    # Cumulative BN averages over the calibration images: without this, random-init running stats (0 mean,
    # unit variance) let activations grow block after block and every quantizer would see garbage ranges.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for start in range(0, bn_images, 16):
            model(torch.from_numpy(calib[start : min(start + 16, bn_images)]))
    return model.eval()


def ov_compile(xml: str | Path, threads: int):
    """The OpenVINO backend's own Runner, the one validation times and the device runtime runs: the latency hint,
    ``threads``, f32 for float layers (without it the CPU plugin runs "FP32" models, and the float layers of INT8
    ones, in bf16 on AVX512-BF16/AMX CPUs). Any batch size; bound inference as benchmark_app -api sync."""
    from edgeresnext.backends import get_backend

    openvino = get_backend("openvino")
    return openvino.load(openvino.artifact_for_file(xml), openvino.run_options(threads=threads, hint="latency"))


def ort_session(path: Path, threads: int):
    """The ONNX Runtime backend's own Runner (graph optimisation "all", ``threads``)."""
    from edgeresnext.backends import get_backend

    onnxruntime = get_backend("onnxruntime")
    return onnxruntime.load(onnxruntime.artifact_for_file(path), onnxruntime.run_options(threads=threads))


def file_size(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def interleaved_p50(
    runners: dict[str, Any], sample: np.ndarray, rounds: int, runs: int, warmup: int, anchor: str, seed: int = 0
) -> dict[str, Any]:
    """Each runner's latency with the runners taking turns: ``rounds`` rounds, a fresh random order each round.

    Rows measured one after the other see whatever the machine does at that minute; taking turns puts every
    runner under the same conditions, and shuffling the order keeps any one row from always running after the
    same neighbour (whose weights have just filled the caches). Per row: p50/p90 over all its interleaved runs,
    and the median over rounds of (row p50 / anchor p50 in that round), the figure the ratios report.
    """
    import random

    from edgeresnext.validate import measure_latency

    order = random.Random(seed)  # noqa: S311 - a reproducible row order, not a secret
    samples: dict[str, list[float]] = {name: [] for name in runners}
    per_round: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        names = list(runners)
        order.shuffle(names)
        for name in names:
            stats = measure_latency(runners[name], sample, runs=runs, warmup=warmup)
            samples[name].extend(stats.samples_ms)
            per_round[name].append(stats.p50_ms)
    result = {}
    for name, values in per_round.items():
        ratios = [value / base for value, base in zip(values, per_round[anchor], strict=True)]
        result[name] = {
            "p50_ms": float(np.percentile(samples[name], 50)),
            "p90_ms": float(np.percentile(samples[name], 90)),
            "round_p50_ms": [round(v, 3) for v in values],
            "ratio_to_anchor": float(np.median(ratios)),
            "round_ratio_to_anchor": [round(r, 3) for r in ratios],
        }
    return result


def measure(
    name: str,
    runner,
    eval_inputs: np.ndarray,
    reference: np.ndarray | None,
    runs: int,
    warmup: int,
    extra: dict[str, Any],
) -> tuple[dict[str, Any], np.ndarray]:
    from edgeresnext.validate import fidelity_metrics, measure_latency, run_logits

    logits = run_logits(runner, eval_inputs, batch_size=8)
    latency = measure_latency(runner, eval_inputs[:1], runs=runs, warmup=warmup).to_dict()
    row: dict[str, Any] = {"name": name, **extra, "latency": latency}
    if reference is not None:
        row.update(fidelity_metrics(logits, reference))
    logger.info("%-28s p50 %8.2f ms  p90 %8.2f ms", name, latency["p50_ms"], latency["p90_ms"])
    return row, logits


def timed_ptq(model, calib: np.ndarray, spec, out: Path, fp32_onnx: Path) -> tuple[Path, float, str]:
    """Our PTQ (:func:`quantize_ptq`) into ``out``: the Q/DQ ONNX, its seconds, and its TensorRT lint summary.

    Linted apart from PTQ so a violation is reported without losing the speed figures.
    """
    from edgeresnext.lint import lint_onnx
    from edgeresnext.quantize.ptq import quantize_ptq

    start = time.perf_counter()
    onnx_path = quantize_ptq(model, calib, spec, out, input_shape=(3, 224, 224), fp32_onnx=fp32_onnx, lint=False)
    seconds = time.perf_counter() - start
    errors = [v for v in lint_onnx(onnx_path) if v.severity == "error"]
    return onnx_path, seconds, f"{len(errors)} error(s), first: {errors[0]}" if errors else "clean"


def openvino_extra(xml: Path, runner, precision: str, **fields: Any) -> dict[str, Any]:
    """The fields every OpenVINO row reports, plus ``fields``."""
    return {
        "backend": "openvino",
        "precision": precision,
        **fields,
        "inference_precision": str(runner.compiled.get_property("INFERENCE_PRECISION_HINT")),
        "size_bytes": file_size(xml, xml.with_suffix(".bin")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--calib", type=int, default=300, help="calibration images (nncf.quantize default: 300)")
    parser.add_argument("--eval-images", type=int, default=64, help="held-out images for agreement/cosine")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per row (batch 1)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: usable cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="rounds of the interleaved timing behind p50 and the ratios (rows take turns)",
    )
    parser.add_argument("--round-runs", type=int, default=20, help="timed runs per row and round")
    parser.add_argument("--work", default="build/bench", help="where the ONNX/IR files go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import nncf
    import openvino as ov
    import torch

    from edgeresnext.atomic import write_json_atomic
    from edgeresnext.backends.openvino import ir_from_onnx
    from edgeresnext.config import QuantSpec
    from edgeresnext.environment import environment
    from edgeresnext.export import onnx_from_torch
    from edgeresnext.validate import PeakMemory, TorchRunner

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    calib = load_images("train", args.calib, args.seed)
    eval_inputs = load_images("test", args.eval_images, args.seed + 1)
    rows: list[dict[str, Any]] = []
    runners: dict[str, Any] = {}
    common = {"runs": args.runs, "warmup": args.warmup}

    with PeakMemory() as memory:
        model = build_model(calib, args.seed, bn_images=min(64, len(calib)))
        runners["pytorch-fp32"] = TorchRunner(model)
        row, reference = measure(
            "pytorch-fp32",
            runners["pytorch-fp32"],
            eval_inputs,
            None,
            **common,
            extra={"backend": "pytorch", "precision": "fp32"},
        )
    row.update(
        agreement=1.0,
        cosine_mean=1.0,
        cosine_min=1.0,
        max_abs_error=0.0,
        mean_abs_error=0.0,
        size_bytes=sum(p.numel() * p.element_size() for p in model.state_dict().values()),
    )
    rows.append({**row, "peak_rss_mb": memory.peak_mb})

    @contextlib.contextmanager
    def timed_row(name: str):
        """One row: the block fills ``row["runner"]`` and ``row["extra"]``; its work counts in the row's peak RSS."""
        filled: dict[str, Any] = {}
        with PeakMemory() as memory:
            yield filled
            runners[name] = filled["runner"]
            row, _ = measure(name, filled["runner"], eval_inputs, reference, **common, extra=filled["extra"])
        rows.append({**row, "peak_rss_mb": memory.peak_mb})

    fp32_onnx = onnx_from_torch(model, work / "resnext50_32x4d_fp32.onnx", input_shape=(3, 224, 224))
    with timed_row("onnxruntime-fp32") as row:
        row["runner"] = ort_session(fp32_onnx, threads)
        row["extra"] = {"backend": "onnxruntime", "precision": "fp32", "size_bytes": file_size(fp32_onnx)}

    fp32_xml = ir_from_onnx(fp32_onnx, work / "resnext50_32x4d_fp32.xml", batch=(1, 1))
    with timed_row("openvino-fp32") as row:
        row["runner"] = ov_compile(str(fp32_xml), threads)
        row["extra"] = openvino_extra(fp32_xml, row["runner"], "fp32")

    # The anchor: nncf.quantize with its defaults on the OpenVINO model, one image per sample.
    with timed_row(ANCHOR) as row:
        ov_model = ov.Core().read_model(str(fp32_xml))
        start = time.perf_counter()
        anchor_model = nncf.quantize(
            ov_model, nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]), subset_size=len(calib)
        )
        anchor_seconds = time.perf_counter() - start
        anchor_xml = work / "resnext50_32x4d_int8_nncf_default.xml"
        ov.save_model(anchor_model, str(anchor_xml), compress_to_fp16=False)
        row["runner"] = ov_compile(str(anchor_xml), threads)
        row["extra"] = openvino_extra(
            anchor_xml,
            row["runner"],
            "int8",
            ptq_seconds=round(anchor_seconds, 2),
            ptq=f"nncf.quantize defaults on the OpenVINO model, subset_size={len(calib)}",
        )

    # Ours: the Q/DQ ONNX every backend receives (TensorRT-ready placement), in ONNX Runtime and OpenVINO.
    with timed_row("onnxruntime-int8-qdq") as row:
        qdq_onnx, ptq_seconds, lint = timed_ptq(
            model, calib, QuantSpec(subset_size=len(calib)), work / "resnext50_32x4d_int8_qdq.onnx", fp32_onnx
        )
        row["runner"] = ort_session(qdq_onnx, threads)
        row["extra"] = {
            "backend": "onnxruntime",
            "precision": "int8",
            "ptq_seconds": round(ptq_seconds, 2),
            "ptq": "edgeresnext quantize_ptq (NNCF ONNX, signed symmetric, residual placement), the Q/DQ ONNX "
            "as it is (ONNX Runtime's own INT8 form: bench/onnxruntime_int8.py)",
            "tensorrt_lint": lint,
            "size_bytes": file_size(qdq_onnx),
        }
    qdq_xml = ir_from_onnx(qdq_onnx, work / "resnext50_32x4d_int8_qdq.xml", batch=(1, 1))
    with timed_row("openvino-int8-qdq") as row:
        row["runner"] = ov_compile(str(qdq_xml), threads)
        read = "the same Q/DQ ONNX as onnxruntime-int8-qdq, read by OpenVINO"
        row["extra"] = openvino_extra(qdq_xml, row["runner"], "int8", ptq_seconds=round(ptq_seconds, 2), ptq=read)

    # The same PTQ with NNCF's own placement (both residual Add inputs through Q/DQ): still signed and lint
    # clean, but TensorRT cannot fuse the add into the convolution; targets/cpu.yaml uses it for OpenVINO.
    with timed_row("openvino-int8-qdq-nncf-placement") as row:
        spec = QuantSpec(subset_size=len(calib), placement="nncf_default")
        placed_onnx = work / "resnext50_32x4d_int8_qdq_nncf_placement.onnx"
        placed, placed_seconds, lint = timed_ptq(model, calib, spec, placed_onnx, fp32_onnx)
        placed_xml = ir_from_onnx(placed, work / "resnext50_32x4d_int8_qdq_nncf_placement.xml", batch=(1, 1))
        row["runner"] = ov_compile(str(placed_xml), threads)
        made = "edgeresnext quantize_ptq, placement nncf_default (targets/cpu.yaml)"
        seconds = round(placed_seconds, 2)
        row["extra"] = openvino_extra(
            placed_xml, row["runner"], "int8", ptq_seconds=seconds, ptq=made, tensorrt_lint=lint
        )

    # The ratios come from the interleaved timing: every row takes a turn in each round.
    logger.info("interleaved timing: %d rounds x %d runs per row", args.rounds, args.round_runs)
    interleaved = interleaved_p50(
        runners, eval_inputs[:1], args.rounds, args.round_runs, warmup=3, anchor=ANCHOR, seed=args.seed
    )
    for row in rows:
        row["peak_rss_mb"] = round(row["peak_rss_mb"], 1)
        row["interleaved"] = interleaved[row["name"]]
        row["p50_ms"] = interleaved[row["name"]]["p50_ms"]
        row["p90_ms"] = interleaved[row["name"]]["p90_ms"]
        row["p50_ratio_to_anchor"] = round(interleaved[row["name"]]["ratio_to_anchor"], 3)  # > 1: slower
    results = {
        "schema": "edgeresnext.bench",
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "model": {
            "arch": "resnext50_32x4d",
            "input": [1, 3, 224, 224],
            "weights": f"random (seed {args.seed}), "
            "BatchNorm weight U(0.5, 1.5) and bias U(-0.1, 0.1), statistics from the calibration images",
        },
        "data": {
            "calibration": f"fashion-mnist/train, {len(calib)} images resized to 224 RGB",
            "evaluation": f"fashion-mnist/test, {len(eval_inputs)} images (agreement/cosine vs pytorch-fp32)",
        },
        "protocol": {
            "batch": 1,
            "threads": threads,
            **common,
            "statistic": "median (p50) of per-call wall-clock",
            "ratios": f"p50_ms/p90_ms: over all of the row's runs in {args.rounds} interleaved rounds "
            f"(every row takes a turn per round, in a shuffled order, {args.round_runs} runs "
            "each); p50_ratio_to_anchor: median over rounds of the row's p50 / the anchor's p50 "
            "in that round; latency: the row's own sequential measurement",
            "memory": "process peak RSS during the row's load/quantize/evaluate/time, reset per row",
        },
        "anchor": ANCHOR,
        "environment": environment(threads),
        "total_seconds": round(time.perf_counter() - began, 1),
        "results": rows,
    }
    write_json_atomic(args.out, results)
    width = max(len(r["name"]) for r in rows)
    print(f"{'row':{width}s}  p50 ms   p90 ms   x anchor  agreement  cosine    PTQ s   peak RSS MB")
    for r in rows:
        print(
            f"{r['name']:{width}s}  {r['p50_ms']:7.2f}  {r['p90_ms']:7.2f}  "
            f"{r['p50_ratio_to_anchor']:8.2f}  "
            f"{r['agreement'] * 100:8.1f} %  {r['cosine_mean']:.5f}  {r.get('ptq_seconds', 0):6.1f}  "
            f"{r['peak_rss_mb']:8.0f}"
        )
    print(f"written to {args.out} ({results['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
