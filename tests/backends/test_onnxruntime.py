"""ONNX Runtime backend: the shipped tiny ResNeXt as FP32, Q/DQ INT8 and FP16 Q/DQ, on 512 real test images."""

from __future__ import annotations

import pytest
from backend_helpers import agreement, assert_int8_agrees, compile_and_load, make_target
from tolerances import FP32_LOGIT_ATOL

from edgeresnext.backends import PrecisionReport, get_backend
from edgeresnext.errors import ConfigError, DataError


def test_fp32_matches_pytorch(fp32_onnx, test_images, fp32_logits, tmp_path):
    _artifact, runner = compile_and_load("onnxruntime", fp32_onnx, make_target("onnxruntime", "fp32"), tmp_path)
    logits = runner(test_images)
    assert abs(logits - fp32_logits).max() < FP32_LOGIT_ATOL  # float32 reordering only (measured 8.6e-6)
    assert agreement(logits, fp32_logits) == 1.0  # the smallest top-2 gap of the 512 images is 0.043: none can flip
    report = runner.precision_report()
    assert report.extra["int8_ops"] == {} and report.int8_fraction == 0.0 and report.summary() == "fp32"


AS_IT_IS = {"onnxruntime": {"int8_form": "qdq"}}


def test_the_qdq_onnx_as_it_is_runs_float_convolutions(qdq_onnx, test_images, fp32_logits, qdq_logits, tmp_path):
    target = make_target("onnxruntime", "int8", backend_options={"onnxruntime": {"threads": 1, "int8_form": "qdq"}})
    artifact, runner = compile_and_load("onnxruntime", qdq_onnx, target, tmp_path)
    assert not artifact.info.extra.get("differs_from_source")
    assert_int8_agrees(runner(test_images), qdq_logits, fp32_logits)
    report = runner.precision_report()
    # ONNX Runtime's CPU provider makes QLinearConv only from DQ -> Conv -> Q; the signed, zero-point-0
    # activations TensorRT needs put a ReLU between Conv and Q that it cannot drop, so it runs these layers
    # as float convolutions on fake-quantized inputs. The report says so instead of claiming INT8.
    assert report.extra["integer_conv_fraction"] < 0.1 and report.extra["convs"] == 22, report
    assert runner.session.get_session_options().intra_op_num_threads == 1


def test_int8_target_compiles_the_form_onnx_runtime_runs_as_integer_kernels(
    qdq_onnx, calib_images, test_images, fp32_logits, qdq_logits, tmp_path
):
    """The default INT8 artifact: every convolution a QLinearConv (read from the optimised graph), the Q/DQ ONNX
    file untouched, its own file (validated on its own), as close to FP32 as the Q/DQ ONNX."""
    before = qdq_onnx.read_bytes()
    target = make_target("onnxruntime", "int8")
    artifact, runner = compile_and_load("onnxruntime", qdq_onnx, target, tmp_path, calibration=calib_images)
    assert qdq_onnx.read_bytes() == before and artifact.info.extra["differs_from_source"]
    report = runner.precision_report()
    assert report.extra["integer_conv_fraction"] >= 0.9 and report.summary() == "int8 (22/22 convs int8)", report
    written = report.to_dict()  # what report.json holds: read back typed, also from a report older than int8_count
    assert PrecisionReport.from_dict(written) == report
    older = {k: v for k, v in written.items() if k != "int8_count"}
    assert PrecisionReport.from_dict(older).summary() == report.summary()
    logits = runner(test_images)
    # Same grids as the Q/DQ ONNX (tests/quantize/test_ort_int8.py derives the bound): no further from FP32
    # than 1.25x the Q/DQ ONNX's own mean logit error.
    assert abs(logits - fp32_logits).mean() <= 1.25 * abs(qdq_logits - fp32_logits).mean()
    assert agreement(logits, fp32_logits) >= 0.90
    with pytest.raises(DataError, match="calibration"):  # the residual placement's unquantized tensors need images
        get_backend("onnxruntime").compile(qdq_onnx, target, tmp_path / "no-images")


def test_precision_report_reads_the_runtime_graph(qdq_onnx, tmp_path):
    """Without graph optimisation the Q/DQ nodes stay fake-quant around float convolutions: no INT8 kernels."""
    backend = get_backend("onnxruntime")
    target = make_target(
        "onnxruntime",
        "int8",
        backend_options={"onnxruntime": {**AS_IT_IS["onnxruntime"], "graph_optimization": "disable"}},
    )
    runner = backend.load(backend.compile(qdq_onnx, target, tmp_path), target)
    report = runner.precision_report()
    assert report.int8_fraction == 0.0 and report.extra["float_ops"].get("Conv", 0) >= 13
    assert "FusedConv" not in report.extra["float_ops"]
    # With optimisation on, the report shows ONNX Runtime's own fused kernels, which the file does not contain.
    fused = make_target("onnxruntime", "int8", backend_options=AS_IT_IS)
    assert (
        backend.load(backend.compile(qdq_onnx, fused, tmp_path / "all"), fused)
        .precision_report()
        .extra["float_ops"]
        .get("FusedConv", 0)
        > 0
    )


def test_fp16_variant_of_the_qdq_model(qdq_onnx, test_images, fp32_logits, qdq_logits, tmp_path):
    artifact, runner = compile_and_load("onnxruntime", qdq_onnx, make_target("onnxruntime", "fp16"), tmp_path)
    assert artifact.info.extra["fp16"]["qdq_scales"] > 0
    logits = runner(test_images)
    assert logits.dtype.name == "float32"
    # FP16 float parts + FP16-stored scales: the same predictions as the FP32 Q/DQ file, nearly always.
    assert_int8_agrees(logits, qdq_logits, fp32_logits)


def test_int8_target_refuses_an_unquantized_model(fp32_onnx, tmp_path):
    with pytest.raises(ConfigError, match="no QuantizeLinear"):
        get_backend("onnxruntime").compile(
            fp32_onnx, make_target("onnxruntime", "int8", backend_options=AS_IT_IS), tmp_path
        )


def test_not_an_onnx_file(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not a protobuf at all")
    with pytest.raises(ConfigError, match=r"model\.onnx: not a readable ONNX"):
        get_backend("onnxruntime").compile(bogus, make_target("onnxruntime", "fp32"), tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()
