"""ONNX Runtime backend: the shipped tiny ResNeXt as FP32, Q/DQ INT8 and FP16 Q/DQ, on 512 real test images."""

from __future__ import annotations

import pytest
from backend_helpers import agreement, assert_int8_agrees, compile_and_load, make_target
from tolerances import FP32_LOGIT_ATOL

from edgeresnext.backends import get_backend
from edgeresnext.errors import ConfigError


def test_fp32_matches_pytorch(fp32_onnx, test_images, fp32_logits, tmp_path):
    _artifact, runner = compile_and_load("onnxruntime", fp32_onnx, make_target("onnxruntime", "fp32"), tmp_path)
    logits = runner(test_images)
    assert abs(logits - fp32_logits).max() < FP32_LOGIT_ATOL  # float32 reordering only (measured 8.6e-6)
    assert agreement(logits, fp32_logits) == 1.0  # the smallest top-2 gap of the 512 images is 0.043: none can flip
    report = runner.precision_report()
    assert report["int8_ops"] == {} and report["int8_fraction"] == 0.0


def test_qdq_int8_runs_integer_kernels_and_agrees(qdq_onnx, test_images, fp32_logits, qdq_logits, tmp_path):
    target = make_target("onnxruntime", "int8", backend_options={"onnxruntime": {"threads": 1}})
    _artifact, runner = compile_and_load("onnxruntime", qdq_onnx, target, tmp_path)
    assert_int8_agrees(runner(test_images), qdq_logits, fp32_logits)
    report = runner.precision_report()
    # ONNX Runtime's CPU provider makes QLinearConv only from DQ -> Conv -> Q; the signed, zero-point-0
    # activations TensorRT needs put a ReLU between Conv and Q that it cannot drop, so it runs these layers
    # as float convolutions on fake-quantized inputs. The report says so instead of claiming INT8.
    assert sum(report["int8_ops"].values()) + sum(report["float_ops"].values()) >= 14, report
    assert runner.session.get_session_options().intra_op_num_threads == 1


def test_precision_report_reads_the_runtime_graph(qdq_onnx, tmp_path):
    """Without graph optimisation the Q/DQ nodes stay fake-quant around float convolutions: no INT8 kernels."""
    backend = get_backend("onnxruntime")
    target = make_target("onnxruntime", "int8", backend_options={"onnxruntime": {"graph_optimization": "disable"}})
    runner = backend.load(backend.compile(qdq_onnx, target, tmp_path), target)
    report = runner.precision_report()
    assert report["int8_fraction"] == 0.0 and report["float_ops"].get("Conv", 0) >= 13
    assert "FusedConv" not in report["float_ops"]
    # With optimisation on, the report shows ONNX Runtime's own fused kernels, which the file does not contain.
    fused = make_target("onnxruntime", "int8", backend_options={"onnxruntime": {"graph_optimization": "all"}})
    assert (
        backend.load(backend.compile(qdq_onnx, fused, tmp_path / "all"), fused)
        .precision_report()["float_ops"]
        .get("FusedConv", 0)
        > 0
    )


def test_fp16_variant_of_the_qdq_model(qdq_onnx, test_images, fp32_logits, qdq_logits, tmp_path):
    artifact, runner = compile_and_load("onnxruntime", qdq_onnx, make_target("onnxruntime", "fp16"), tmp_path)
    assert artifact.info["fp16"]["qdq_scales"] > 0
    logits = runner(test_images)
    assert logits.dtype.name == "float32"
    # FP16 float parts + FP16-stored scales: the same predictions as the FP32 Q/DQ file, nearly always.
    assert_int8_agrees(logits, qdq_logits, fp32_logits)


def test_int8_target_refuses_an_unquantized_model(fp32_onnx, tmp_path):
    with pytest.raises(ConfigError, match="no QuantizeLinear"):
        get_backend("onnxruntime").compile(fp32_onnx, make_target("onnxruntime", "int8"), tmp_path)


def test_not_an_onnx_file(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not a protobuf at all")
    with pytest.raises(ConfigError, match=r"model\.onnx: not a readable ONNX"):
        get_backend("onnxruntime").compile(bogus, make_target("onnxruntime", "fp32"), tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_unsigned_after_relu_variant_gets_integer_kernels(qdq_onnx, test_images, fp32_logits, qdq_logits, tmp_path):
    target = make_target("onnxruntime", "int8", backend_options={"onnxruntime": {"unsigned_after_relu": True}})
    artifact, runner = compile_and_load("onnxruntime", qdq_onnx, target, tmp_path)
    assert artifact.info["unsigned_after_relu"] >= 8 and artifact.info["differs_from_source"]
    assert runner.precision_report()["int8_ops"].get("QLinearConv", 0) >= 8
    assert_int8_agrees(runner(test_images), qdq_logits, fp32_logits)
