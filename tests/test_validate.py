"""Validation against FP32: metrics on hand-made logits with known answers, latency and memory probes,
gates passing and failing, and the whole validate step on the shipped model with a real ONNX Runtime artifact."""

from __future__ import annotations

import json
import math
import mmap
import time
from pathlib import Path

import numpy as np
import pytest
from tolerances import FP32_LOGIT_ATOL
from validate_helpers import int8_target, lookup, outcomes, validate_outcomes

from edgeresnext.config import Gates, target_from_dict
from edgeresnext.data import load_dataset
from edgeresnext.data.validation import ValidationData, load_validation_data
from edgeresnext.errors import ConfigError, GateFailed
from edgeresnext.validate import (
    ArtifactResult,
    ArtifactUnderTest,
    PeakMemory,
    ValidationReport,
    classification_metrics,
    compare_outputs,
    evaluate_gates,
    fidelity_metrics,
    measure_latency,
    raise_for_gates,
    run_logits,
    validate,
)
from edgeresnext.validate.artifacts import _guess_precision
from edgeresnext.validate.metrics import cosine_similarity_rows, topk_accuracy
from edgeresnext.validate.results import Latency

# Four images, six classes. Labels 0, 1, 2, 5.
LOGITS = np.array(
    [
        [9, 1, 0, 0, 0, 0],  # label 0: top-1 right
        [5, 4, 3, 2, 1, 0],  # label 1: second -> top-5 right, top-1 wrong
        [0, 1, 2, 3, 4, 5],  # label 2: fourth largest -> top-5 right
        [6, 5, 4, 3, 2, 1],  # label 5: smallest of six -> wrong even at top-5
    ],
    dtype=np.float32,
)
LABELS = np.array([0, 1, 2, 5])


def test_topk_accuracy_known_answers():
    assert topk_accuracy(LOGITS, LABELS, 1) == 0.25
    assert topk_accuracy(LOGITS, LABELS, 5) == 0.75
    assert topk_accuracy(LOGITS, LABELS, 6) == 1.0
    # k larger than the class count means "any class": everything is right.
    assert topk_accuracy(LOGITS[:, :3], np.array([0, 1, 2, 0]), 5) == 1.0


def test_ties_rank_the_lower_class_first_like_argmax():
    tied = np.array([[1.0, 1.0, 0.0]])
    assert topk_accuracy(tied, np.array([0]), 1) == 1.0
    assert topk_accuracy(tied, np.array([1]), 1) == 0.0


def test_per_class_accuracy_and_confusion_matrix():
    metrics = classification_metrics(LOGITS, LABELS)
    assert metrics["top1"] == 0.25 and metrics["top5"] == 0.75
    # Predictions: 0, 0, 5, 0.
    assert metrics["per_class_accuracy"] == [1.0, 0.0, 0.0, None, None, 0.0]
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (6, 6)
    assert confusion[0, 0] == 1 and confusion[1, 0] == 1 and confusion[2, 5] == 1 and confusion[5, 0] == 1
    assert confusion.sum() == 4


def test_confusion_matrix_left_out_above_20_classes():
    logits = np.eye(21, dtype=np.float32)
    metrics = classification_metrics(logits, np.arange(21))
    assert metrics["confusion"] is None and metrics["top1"] == 1.0


def test_fidelity_of_identical_scaled_and_flipped_logits():
    same = fidelity_metrics(LOGITS, LOGITS)
    assert same == pytest.approx(
        {"agreement": 1.0, "cosine_mean": 1.0, "cosine_min": 1.0, "max_abs_error": 0.0, "mean_abs_error": 0.0}
    )
    doubled = fidelity_metrics(LOGITS * 2, LOGITS)
    # Scaling keeps direction and argmax; the largest logit (9) moves by 9.
    assert doubled["agreement"] == 1.0 and doubled["cosine_min"] == pytest.approx(1.0)
    assert doubled["max_abs_error"] == 9.0
    flipped = fidelity_metrics(-LOGITS, LOGITS)
    assert flipped["cosine_mean"] == pytest.approx(-1.0)
    assert flipped["agreement"] == 0.0


def test_cosine_of_zero_rows():
    zero = np.zeros((1, 3))
    assert cosine_similarity_rows(zero, zero)[0] == 1.0
    assert cosine_similarity_rows(zero, np.ones((1, 3)))[0] == 0.0


def test_run_logits_feeds_batches_in_order_and_joins_them():
    # Splitting or padding to an artifact's batch range is the Runner's own job (tests/backends/test_runners.py).
    inputs = np.arange(10 * 2, dtype=np.float32).reshape(10, 1, 2, 1)
    calls = []

    def pixel_sum(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

    logits = run_logits(pixel_sum, inputs, batch_size=4)
    np.testing.assert_array_equal(logits[:, 0], inputs.reshape(10, -1).sum(axis=1))
    assert calls == [4, 4, 2]


def test_measure_latency_times_each_call_after_warmup():
    calls = []

    def slow(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        time.sleep(0.003)
        return batch

    stats = measure_latency(slow, np.zeros((1, 1, 2, 2), np.float32), runs=8, warmup=3)
    # 3 warm-up + 8 timed calls, then 3 + 8 more for the whole-call figure (a plain function has nothing to bind).
    assert len(calls) == 22 and len(stats.samples_ms) == stats.runs == 8 and stats.call_p50_ms >= 3.0
    summary = stats.to_dict()
    assert 3.0 <= summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["timed"] == "runner(batch) call" and summary["call_p50_ms"] >= 3.0
    with pytest.raises(ConfigError, match="runs=0"):
        measure_latency(slow, np.zeros((1, 1, 2, 2), np.float32), runs=0)


def test_measure_latency_times_the_bound_inference_of_a_runner():
    """A runner's bound call (input set once) is what p50 reports; whole calls give call_p50_ms."""

    class Bindable:
        def __init__(self) -> None:
            self.bound_with: list[tuple[int, ...]] = []

        def __call__(self, batch: np.ndarray) -> np.ndarray:
            time.sleep(0.03)  # input checks and conversion of a slow Python wrapper
            return batch

        def bind(self, batch: np.ndarray):
            self.bound_with.append(batch.shape)
            return lambda: time.sleep(0.002)

    runner = Bindable()
    summary = measure_latency(runner, np.zeros((1, 1, 2, 2), np.float32), runs=5, warmup=1).to_dict()
    assert runner.bound_with == [(1, 1, 2, 2)]
    assert summary["timed"] == "inference, input bound once"
    assert 2.0 <= summary["p50_ms"] < 30.0 <= summary["call_p50_ms"]


def test_peak_memory_sees_a_temporary_allocation():
    # A fresh anonymous mapping, every page written, then unmapped. Not np.ones: after a long test run
    # malloc may serve 64 MB from free heap pages that are already resident (CI saw a delta of 0.0),
    # and those pages raise neither VmRSS nor VmHWM. New pages always raise both.
    size = 64 * 1024 * 1024
    with PeakMemory() as memory:
        block = mmap.mmap(-1, size)
        block.write(b"\x01" * size)
        block.close()
    assert memory.delta_mb >= 50, (memory.delta_mb, memory.method)
    assert memory.method


def _result(name: str, top1: float, agreement: float, p50: float, baseline: ArtifactResult | None = None):
    latency = Latency(1, 0, 1, p50, p50, p50, p50, p50, p50, [p50], "inference, input bound once")
    result = ArtifactResult(
        name, "openvino", "int8", [], top1=top1, top1_drop=0.92 - top1, agreement=agreement, latency=latency
    )
    if baseline is not None:
        result.speedup_baseline, result.speedup = baseline.name, baseline.p50_ms / p50
    return result


FP32 = _result("openvino-fp32", 0.92, 1.0, 4.0)
FP32.precision = "fp32"
RESULTS = [_result("pytorch-fp32", 0.92, 1.0, 40.0), FP32, _result("openvino-int8", 0.91, 0.985, 1.0, FP32)]
# Measured values alone: confidence null (the bound-based verdicts have their own tests below).
POINT = {"confidence": None}


def test_gates_pass():
    gates = Gates(max_top1_drop=0.02, min_agreement=0.98, max_latency_ms=2.0, min_speedup=3.0, **POINT)
    checks = evaluate_gates(gates, RESULTS, primary="openvino-int8")
    assert [c.gate for c in checks] == ["max_top1_drop", "min_agreement", "max_latency_ms", "min_speedup"]
    assert all(c.passed for c in checks)
    # Against OpenVINO FP32 (4 ms / 1 ms), not PyTorch eager (40 ms / 1 ms).
    assert checks[3].value == pytest.approx(4.0) and "over OpenVINO FP32" in checks[3].message
    assert [c.basis for c in checks] == ["point", "point", "value", "value"]


def test_gates_fail_and_say_by_how_much():
    gates = Gates(max_top1_drop=0.003, min_agreement=0.99, max_latency_ms=0.5, min_speedup=5.0, **POINT)
    checks = {c.gate: c for c in evaluate_gates(gates, RESULTS, primary="openvino-int8")}
    assert not any(c.passed for c in checks.values())
    assert "+1.00 pt > 0.3 pt, over by 0.70 pt" in checks["max_top1_drop"].message
    assert "short by 0.50 pt" in checks["min_agreement"].message
    assert "over by 0.5 ms" in checks["max_latency_ms"].message
    assert "4x < 5x, short by 1x" in checks["min_speedup"].message
    with pytest.raises(GateFailed, match="max_latency_ms"):
        failing = ValidationReport(
            "", "", {}, {}, None, {}, "pytorch-fp32", "openvino-int8", RESULTS, [*checks.values()]
        )
        raise_for_gates(failing)


def test_unset_gates_check_nothing_and_unknown_primary_is_an_error():
    assert evaluate_gates(Gates(), RESULTS, primary="openvino-int8") == []
    with pytest.raises(ConfigError, match="tensorrt-int8"):
        evaluate_gates(Gates(max_top1_drop=0.01), RESULTS, primary="tensorrt-int8")


def test_a_speedup_gate_without_a_same_runtime_float_build_fails_and_says_so():
    """No fallback to PyTorch eager: an artifact whose runtime has no float build timed has no speed-up."""
    alone = _result("openvino-int8", 0.91, 0.985, 1.0)
    (check,) = evaluate_gates(Gates(min_speedup=2.0), [RESULTS[0], alone], primary="openvino-int8")
    assert not check.passed and check.value is None
    assert "no OpenVINO float build was timed here" in check.message and "PyTorch eager is not" in check.message


def test_accuracy_gates_need_the_per_image_outcomes_to_bound():
    checks = evaluate_gates(Gates(max_top1_drop=0.02, min_agreement=0.9), RESULTS, primary="openvino-int8")
    assert [c.passed for c in checks] == [False, False]
    assert all("no per-image outcomes" in c.message and c.basis == "bound" for c in checks)


# --------------------------------------------------------------------------------------------- how sure
Z95 = 1.6448536269514722  # one-sided 95 %: the standard normal's 0.95 quantile


def test_the_bound_decides_a_drop_the_point_would_pass():
    """2,000 images, 8 only FP32 gets right and 4 only INT8: drop +0.2 pt <= 0.3 pt, but not proven."""
    from edgeresnext import stats

    report = validate_outcomes(1792, 8, 4, 196, max_top1_drop=0.003)
    (gate,) = report.gates
    counts = stats.PairedCounts(1792, 8, 4, 196)
    assert gate.measured == pytest.approx(0.002) and gate.measured <= gate.limit  # passes on the point
    assert gate.value == pytest.approx(stats.drop_upper_bound(counts, 0.95)) and gate.value > 0.003
    assert not gate.passed and gate.basis == "bound" and gate.provable and gate.min_images < 2000
    assert "upper bound 0.56 pt > 0.3 pt, over by 0.26 pt" in gate.message
    assert "the measured drop alone would pass" in gate.message
    # The same outcomes decided on the measured drop (confidence: null) pass: the bound is what failed it.
    assert validate_outcomes(1792, 8, 4, 196, max_top1_drop=0.003, confidence=None).passed


def test_the_intervals_come_from_the_paired_counts_and_land_in_report_json_and_md(tmp_path):
    """The wiring: the counts built here reach stats, and its intervals reach report.json and report.md."""
    from edgeresnext import stats
    from edgeresnext.report import render_markdown, write_report

    report = validate_outcomes(1792, 8, 4, 196, disagree=10, min_agreement=0.99)
    u = report.result("openvino-int8").uncertainty
    assert (u.a, u.b, u.c, u.d, u.n, u.confidence) == (1792, 8, 4, 196, 2000, 0.95)
    assert u.agree == 1792 + 196 - 10  # both right, plus both wrong on the same class
    # Exact McNemar by hand: 2 P(X <= 4), X ~ Binomial(12, 1/2) = 2 (1 + 12 + 66 + 220 + 495) / 4096.
    assert u.mcnemar_p == 2 * 794 / 4096
    drop = stats.drop_interval(stats.PairedCounts(1792, 8, 4, 196), 0.95)
    assert u.drop == 0.002 and u.drop_interval == pytest.approx((drop.lower, drop.upper))
    # Exact (Clopper-Pearson) for 1978 of 2000: at each limit the binomial tail beyond 1978 holds the error share
    from scipy.stats import binom

    low, high = u.agreement_interval
    assert binom.sf(1977, 2000, low) == pytest.approx(0.025, rel=1e-6)
    assert binom.cdf(1978, 2000, high) == pytest.approx(0.025, rel=1e-6)
    assert binom.sf(1977, 2000, u.agreement_lower_bound) == pytest.approx(0.05, rel=1e-6)
    record = json.loads(write_report(report, tmp_path, html_report=False)["json"].read_text())
    recorded = record["artifacts"][1]["uncertainty"]
    assert recorded["paired"] == {"a": 1792, "b": 8, "c": 4, "d": 196} and recorded["discordant"] == 12
    assert recorded["drop"]["interval"] == pytest.approx([drop.lower, drop.upper])
    assert record["artifacts"][0]["uncertainty"] is None  # the reference is not compared with itself
    row = (
        f"| openvino-int8 | 2,000 | 8 | 4 | +0.20 pt | [{drop.lower * 100:+.2f}, {drop.upper * 100:+.2f}] pt | "
        f"{u.drop_upper_bound * 100:.2f} pt | 0.388 | 98.90 % | "
    )
    assert row in render_markdown(report)
    assert record["gates"][0]["value"] == pytest.approx(u.agreement_lower_bound)


@pytest.mark.parametrize("unproven", ["warn", "fail"])
def test_121_images_cannot_prove_a_03_pt_drop(unproven):
    """FP32 right on all 121 images and INT8 identical: +0.00 pt, yet the one-sided 95 % bound is 2.94 pt (where
    n U - 1/2 = z sqrt(n U (1 - U))), and a result equal to FP32 passes 0.3 pt from n = 1,210.
    ``gates.unproven: warn`` (the default) decides on the measured value and says NOT PROVEN; ``fail`` fails."""
    report = validate_outcomes(121, 0, 0, 0, max_top1_drop=0.003, min_agreement=0.99, unproven=unproven)
    drop, agreement = report.gates
    assert not drop.provable and drop.min_images == 1210 and drop.measured == 0.0
    bound = drop.value
    assert 121 * bound - 0.5 == pytest.approx(Z95 * math.sqrt(121 * bound * (1 - bound)))
    assert "121 images cannot prove a 0.3 pt drop at 95 %: at least 1,210 images needed" in drop.message
    # Agreement (exact): the lower bound at full agreement is 0.05^(1/n), so 99 % needs n >= ln 0.05 / ln 0.99 = 298.1
    assert not agreement.provable and agreement.min_images == 299
    assert agreement.value == pytest.approx(0.05 ** (1 / 121))
    assert "121 images cannot prove 99.00 % agreement at 95 %: at least 299 images needed" in agreement.message
    from edgeresnext.errors import exit_code

    if unproven == "warn":
        assert drop.passed and agreement.passed and report.passed
        assert drop.verdict == agreement.verdict == "NOT PROVEN" and drop.message.startswith(
            "max_top1_drop: NOT PROVEN"
        )
        assert exit_code(report.gates) == 3  # passed, but not proven: not exit 0
    else:
        assert not drop.passed and not agreement.passed and not report.passed
        assert drop.verdict == "FAIL" and exit_code(report.gates) == 1


def test_a_measured_drop_over_the_limit_fails_even_on_a_set_too_small_to_prove_anything():
    report = validate_outcomes(100, 2, 0, 19, max_top1_drop=0.003)  # 2 of 121 lost: +1.65 pt measured
    (drop,) = report.gates
    assert not drop.provable and not drop.passed and drop.verdict == "FAIL"


def test_speedup_is_against_the_same_runtime_float_build():
    """A cpu-like target: the INT8 IR's speed-up is the OpenVINO FP32 IR's p50 over its own, never PyTorch's."""
    from edgeresnext.report import render_markdown, speed_findings

    data, fp32, int8 = outcomes(60, 2, 1, 1)
    artifacts = [
        ArtifactUnderTest("onnx-fp32 (onnxruntime)", lookup(fp32, 0.003), [], "onnxruntime", "fp32"),
        ArtifactUnderTest("openvino-fp32", lookup(fp32, 0.004), [], "openvino", "fp32"),
        ArtifactUnderTest("tensorrt-fp16", lookup(fp32, 0.001), [], "tensorrt", "fp16"),
        ArtifactUnderTest("tensorrt-int8", lookup(int8, 0.004), [], "tensorrt", "int8"),
        ArtifactUnderTest("openvino-int8", lookup(int8, 0.001), [], "openvino", "int8"),
        ArtifactUnderTest.skipped("tensorrt-kit", "an on-device build kit", backend="tensorrt", precision="int8"),
    ]
    target = int8_target(min_speedup=1.5)
    report = validate(target, artifacts, lookup(fp32, 0.008), data, primary="openvino-int8", threads=1, progress=False)
    rows = {r.name: r for r in report.artifacts}
    ov8, ov32, torch32 = rows["openvino-int8"], rows["openvino-fp32"], rows["pytorch-fp32"]
    assert ov8.speedup_baseline == "openvino-fp32"
    assert ov8.speedup == ov32.p50_ms / ov8.p50_ms
    assert ov8.speedup < torch32.p50_ms / ov8.p50_ms  # what the old PyTorch baseline would have said
    assert (ov32.speedup_baseline, ov32.speedup) == ("openvino-fp32", 1.0)
    assert rows["tensorrt-int8"].speedup_baseline == "tensorrt-fp16"  # TensorRT: the FP16 engine beside it
    assert rows["tensorrt-fp16"].speedup is None and rows["tensorrt-kit"].speedup is None
    (gate,) = report.gates
    assert gate.value == ov8.speedup and "p50 speed-up over OpenVINO FP32" in gate.message
    text = render_markdown(report)
    assert f"| {ov8.speedup:.2f}x vs OpenVINO FP32 |" in text and "| float baseline |" in text
    # Which TensorRT build is faster is said outright; the kit's speed-up is unknown, not borrowed.
    assert speed_findings(report) == [
        "TensorRT: FP16 (tensorrt-fp16) is faster than INT8 (tensorrt-int8) on this host, p50 "
        f"{rows['tensorrt-fp16'].p50_ms:.3f} ms against {rows['tensorrt-int8'].p50_ms:.3f} ms"
    ]
    assert "- TensorRT: FP16 (tensorrt-fp16) is faster than INT8 (tensorrt-int8)" in text
    assert any(n.startswith("tensorrt-kit: not timed here") for n in report.notes)


def test_compare_outputs_tolerances_and_worst_images():
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    candidate = reference + np.array([[0.0005, 0.0], [0.0, 0.5], [-1.5, 0.0]])
    result = compare_outputs(candidate, reference, labels=np.array([0, 1, 0]), atol=1e-3, rtol=0.0, worst=2)
    assert not result["passed"]
    assert result["max_abs_error"] == pytest.approx(1.5)
    assert result["images_within_tolerance"] == pytest.approx(1 / 3)
    assert result["agreement"] == pytest.approx(2 / 3)  # image 2 flips from class 0 to class 1
    assert [w["index"] for w in result["worst"]] == [2, 1]
    assert result["worst"][0]["pred_a"] == 1 and result["worst"][0]["pred_b"] == 0
    assert compare_outputs(reference, reference)["passed"]


def test_validation_data_uses_the_model_preprocessing(fmnist_test):
    from edgeresnext.config import DataSpec

    data = load_validation_data(DataSpec(limit=16), fmnist_test.preprocess, fmnist_test.class_names)
    assert data.inputs.shape == (16, 1, 28, 28) and data.inputs.dtype == np.float32
    # data.limit takes a class-stratified sample of the test split (every class, 1 or 2 images each), in that order
    full = load_dataset("fashion-mnist", split="test")
    index = [int(i.rsplit("#", 1)[1]) for i in data.ids]
    assert (
        data.ids[0].startswith("fashion-mnist/test#")
        and sorted(np.bincount(data.labels, minlength=10)) == [1] * 4 + [2] * 6
    )
    np.testing.assert_array_equal(data.inputs[3], full.preprocess.image_to_array(full.images[index[3]]))
    np.testing.assert_array_equal(data.labels, full.labels[index])
    assert data.name == "fashion-mnist/test (class-stratified sample of 16 of 10,000, seed 0)"


# --------------------------------------------------------------------------------------------- real artifacts
@pytest.fixture(scope="module")
def fp32_onnx(shipped_model, tmp_path_factory) -> Path:
    from edgeresnext.export import onnx_from_torch

    return onnx_from_torch(shipped_model, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def small_data(fmnist_test) -> ValidationData:
    from edgeresnext.data.loaders import normalize_array

    return ValidationData(
        inputs=normalize_array(fmnist_test.images[:128], fmnist_test.preprocess).numpy(),
        labels=fmnist_test.labels[:128],
        class_names=fmnist_test.class_names,
        name="fashion-mnist/test[:128]",
    )


def _target(**gates):
    return target_from_dict(
        {
            "name": "cpu-test",
            "backend": "onnxruntime",
            "precision": "fp32",
            "quant": {"method": "none"},
            "gates": gates,
            "validate": {"latency_runs": 5, "warmup_runs": 1},
        }
    )


def test_validate_onnx_runtime_artifact_against_fp32(shipped_model, fp32_onnx, small_data):
    from edgeresnext.validate import runner_from_file

    # What 128 images can prove for an export identical to FP32 (the one-sided 95 % bounds are ~2.1 pt and 97.9 %).
    target = _target(max_top1_drop=0.03, min_agreement=0.97)
    artifacts = [
        ArtifactUnderTest("onnx-fp32", runner_from_file(fp32_onnx, target), [fp32_onnx], "onnxruntime", "fp32"),
        ArtifactUnderTest.skipped("tensorrt-int8", "no NVIDIA GPU here", backend="tensorrt", precision="int8"),
    ]
    report = validate(target, artifacts, shipped_model, small_data, primary="onnx-fp32", threads=1, progress=False)
    reference, onnx, skipped = report.artifacts
    assert reference.name == "pytorch-fp32" and reference.top1_drop == 0.0
    # The FP32 export only reorders sums: logits within FP32_LOGIT_ATOL (8.6e-6 here), and with the smallest top-2 gap
    # of these 128 images at 0.085 no prediction can change. 1 - cosine ~ (error / |logits|)^2 / 2: ~1e-12 here.
    assert onnx.max_abs_error < FP32_LOGIT_ATOL
    assert onnx.agreement == 1.0 and onnx.top1 == reference.top1
    assert onnx.cosine_min > 0.99999
    assert onnx.latency.runs == 5 and len(onnx.latency.samples_ms) == 5
    assert onnx.size_bytes == fp32_onnx.stat().st_size
    assert reference.top1 > 0.6  # a trained model, not noise (0.94 on all 10,000 images)
    assert skipped.status == "skipped" and "GPU" in skipped.skip_reason
    assert report.passed and len(report.gates) == 2
    assert report.environment["cpu_cores"] >= 1 and report.protocol["threads"] == 1
    # The typed report is the JSON record and back, unchanged.
    assert ValidationReport.from_dict(report.to_dict()).to_dict() == report.to_dict()


def test_cli_validate_fails_on_a_tight_gate(shipped_checkpoint, fp32_onnx, tmp_path):
    from edgeresnext.cli import main

    target = tmp_path / "tight.yaml"
    target.write_text(
        "backend: onnxruntime\nprecision: fp32\nquant: {method: none}\n"
        f"model: {{checkpoint: {shipped_checkpoint}}}\ndata: {{limit: 64}}\n"
        "validate: {latency_runs: 3, warmup_runs: 1}\ngates: {max_latency_ms: 0.000001}\n"
    )
    out = tmp_path / "report"
    command = ["-q", "validate", "--target", str(target), "--artifact", f"onnx-fp32={fp32_onnx}"]
    command += ["--out", str(out), "--no-html"]
    assert main(command) == 1
    import json

    report = json.loads((out / "report.json").read_text())
    assert not report["passed"] and report["gates"][0]["gate"] == "max_latency_ms"
    assert "FAIL: max_latency_ms" in (out / "report.md").read_text()
    # ONNX Runtime FP32 vs PyTorch: no image of the 64 is closer than 0.23 to a tie, so the drop is exactly 0.
    # 64 images bound an equal result's drop at 5.4 pt (one-sided 95 %): 0.1 pt cannot be proven there, 5 pt can.
    # Too small to prove: NOT PROVEN, exit 3 (built and reported, passed on the measured value only; a script reading
    # the exit code must not take it for a pass) by default, a failure (exit 1) with gates.unproven: fail.
    for gates, code in (("{max_top1_drop: 0.001}", 3), ("{max_top1_drop: 0.001, unproven: fail}", 1)):
        target.write_text(target.read_text().rsplit("gates:", 1)[0] + f"gates: {gates}\n")
        assert main(command) == code, gates
        table = (out / "report.md").read_text()
        assert "64 images cannot prove a 0.1 pt drop at 95 %" in table
        assert ("| NOT PROVEN: " in table) == (code == 3) and ("| FAIL: " in table) == (code == 1)
    # Proven on these images: exit 0.
    target.write_text(target.read_text().rsplit("gates:", 1)[0] + "gates: {max_top1_drop: 0.06}\n")
    assert main(command) == 0


def test_cli_compare_lists_worst_images(shipped_checkpoint, fp32_onnx, capsys):
    from edgeresnext.cli import main

    compare = ["-q", "compare", str(fp32_onnx), str(shipped_checkpoint), "--checkpoint", str(shipped_checkpoint)]
    code = main([*compare, "--limit", "32", "--worst", "3"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    # The 32 images' (a class-stratified sample) smallest top-2 gap is 1.58, far beyond FP32 drift: agreement is exact.
    assert "top-1 agreement 100.00 %" in printed and printed.count("    fashion-mnist/test#") == 3  # which image
    # Zero tolerance cannot hold across runtimes (ONNX Runtime's MLAS vs PyTorch's oneDNN sum in other orders; 320
    # logits differ by up to 8.6e-6 here): the command says FAIL.
    assert main([*compare, "--limit", "32", "--atol", "0", "--rtol", "0"]) == 1


def test_files_given_alone_are_named_as_given_and_their_precision_read_from_the_graph(fp32_onnx, tmp_path):
    """`validate --artifact NAME=PATH`: the name is the user's, the precision comes from the graph (Q/DQ nodes,
    FakeQuantize layers), an unreadable file is refused by name, and the primary is the target's deployed row,
    else the last runnable one (pick_primary, the one place the build and the command decide it)."""
    from edgeresnext.validate import artifacts_from_specs, pick_primary

    target = _target()
    ir = tmp_path / "model.xml"
    ir.write_text('<net><layers><layer id="0" type="FakeQuantize"><data levels="256"/></layer></layers></net>')
    assert _guess_precision(ir) == "int8"
    ir.write_text('<net><layers><layer id="0" type="Const"><data element_type="f32"/></layer></layers></net>')
    assert _guess_precision(ir) == "fp32"
    ir.write_text("<net><layers>")
    with pytest.raises(ConfigError, match=r"model\.xml: not an OpenVINO IR"):
        _guess_precision(ir)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not runnable here")
    found = artifacts_from_specs([f"mine={fp32_onnx}", f"gpu={engine}"], target)
    assert [(a.name, a.runnable, a.precision) for a in found] == [("mine", True, "fp32"), ("gpu", False, "")]
    assert found[1].backend == "tensorrt" and found[1].skip_reason
    assert pick_primary(target, found) == "mine"  # the target deploys onnxruntime at fp32
    assert pick_primary(target.model_copy(update={"precision": "int8"}), found) == "mine"  # else the last runnable


def test_sensitivity_from_the_quantize_stage_is_ranked_by_gain():
    from edgeresnext.validate import normalize_sensitivity

    # The shape edgeresnext.quantize.sensitivity.layer_sensitivity writes.
    stage = {
        "metric": "mean squared logit error vs FP32 with only this layer in float",
        "images": 64,
        "int8_error": 0.9,
        "layers": [
            {"layer": "/layer1/layer1.0/conv2/Conv", "module": "layer1.0.conv2", "error": 0.8, "gain": 0.1},
            {"layer": "/fc/Gemm", "module": "fc", "error": 0.3, "gain": 0.6},
        ],
    }
    rows = normalize_sensitivity(stage)
    assert [r["layer"] for r in rows] == ["fc", "layer1.0.conv2"]
    assert [r["value"] for r in rows] == [0.6, 0.1] and "float" in rows[0]["metric"]
    assert normalize_sensitivity({"conv1": 0.2, "fc": 0.5})[0] == {"layer": "fc", "value": 0.5, "metric": "error"}
    assert normalize_sensitivity([{"name": "no layer key"}]) is None and normalize_sensitivity(None) is None


def test_a_stand_in_validated_on_a_subset_says_so(shipped_model, fp32_onnx, small_data):
    """validate.stand_in_images: the stand-in runs on the first N images; its drop and intervals are over those."""
    from edgeresnext.validate import runner_from_file

    target = _target(max_top1_drop=0.03)
    full = ArtifactUnderTest("onnx-fp32", runner_from_file(fp32_onnx, target), [fp32_onnx], "onnxruntime", "fp32")
    subset = ArtifactUnderTest(
        "stand-in", runner_from_file(fp32_onnx, target), [fp32_onnx], "onnxruntime", "fp32", images=40
    )
    report = validate(target, [full, subset], shipped_model, small_data, primary="stand-in", threads=1, progress=False)
    _, whole, part = report.artifacts
    assert whole.uncertainty.n == 128 and part.uncertainty.n == 40
    assert sum(part.confusion[i][j] for i in range(10) for j in range(10)) == 40
    assert part.top1_drop == part.uncertainty.drop == 0.0  # against FP32 on the same 40 images
    assert "stand-in: validated on the first 40 of 128 images (validate.stand_in_images)" in " ".join(report.notes)
    assert report.gates[0].artifact == "stand-in"
