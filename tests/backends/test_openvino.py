"""OpenVINO backend: IR from the FP32 and the Q/DQ ONNX, native NNCF INT8, options, runtime precisions."""

from __future__ import annotations

import pytest
from backend_helpers import agreement, assert_int8_agrees, compile_and_load, fake_quantized, make_target
from tolerances import FP32_LOGIT_ATOL, int8_kernels_saturate, seven_bit_weights

from edgeresnext.backends import Artifact, get_backend
from edgeresnext.errors import ConfigError


def test_fp32_ir_matches_pytorch_in_fp32(fp32_onnx, test_images, fp32_logits, tmp_path):
    artifact, runner = compile_and_load("openvino", fp32_onnx, make_target("openvino", "fp32"), tmp_path)
    assert artifact.path.suffix == ".xml" and artifact.path.with_suffix(".bin").is_file()
    # The IR is static batch 1 (target input.batch); the runner splits the 512 images into single-image requests.
    logits = runner(test_images)
    assert abs(logits - fp32_logits).max() < FP32_LOGIT_ATOL  # float32 reordering only; BF16 layers would give 0.22
    assert agreement(logits, fp32_logits) == 1.0  # the smallest top-2 gap of the 512 images is 0.043: none can flip
    # FP32 means FP32, also on CPUs that would pick BF16 by default.
    assert set(runner.precision_report().extra["by_precision"]) == {"f32"}


def test_int8_ir_from_qdq_runs_int8_convolutions(qdq_onnx, test_images, fp32_logits, qdq_logits, tmp_path):
    target = make_target("openvino", "int8", input={"batch": {"min": 1, "opt": 8, "max": 64}})
    if int8_kernels_saturate():  # plain AVX2: the kernels compute 7-bit weights exactly, 8-bit ones saturate
        qdq_onnx = seven_bit_weights(qdq_onnx, tmp_path / "model.7bit.onnx")
        qdq_logits = fake_quantized(qdq_onnx, test_images)
    _artifact, runner = compile_and_load("openvino", qdq_onnx, target, tmp_path)
    assert_int8_agrees(runner(test_images), qdq_logits, fp32_logits)
    report = runner.precision_report()
    # Every quantized convolution of the Q/DQ file runs as an INT8 kernel in the compiled model.
    assert report.int8_fraction >= 0.9, report.extra["by_precision"]
    assert {layer["precision"] for layer in report.layers if "conv2" in layer["name"]} <= {"u8", "i8"}
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_artifact_round_trips_through_json(fp32_onnx, tmp_path):
    backend = get_backend("openvino")
    target = make_target("openvino", "fp32", backend_options={"openvino": {"hint": "throughput", "threads": 1}})
    artifact = backend.compile(fp32_onnx, target, tmp_path)
    artifact.save(tmp_path / "artifact.json")
    again = Artifact.load(tmp_path / "artifact.json")
    runner = backend.load(again)  # options come from the artifact when no target is given
    assert runner.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert str(runner.compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")


@pytest.mark.slow
def test_native_int8_through_nncf(fp32_onnx, shipped_model, calib_dir, test_images, fp32_logits, tmp_path):
    from edgeresnext.data.folder import list_images, load_folder_arrays

    calib, _kept = load_folder_arrays(list_images(calib_dir), shipped_model.meta.preprocess)
    target = make_target(
        "openvino", "int8", quant={"subset_size": 100}, backend_options={"openvino": {"native_int8": True}}
    )
    artifact, runner = compile_and_load("openvino", fp32_onnx, target, tmp_path, calibration=calib)
    assert "nncf" in artifact.info.extra["int8_source"]
    assert agreement(runner(test_images), fp32_logits) >= 0.90  # loose, as for the Q/DQ model: 51 images may flip
    assert runner.precision_report().extra["int8_layers"] > 0


def test_native_int8_needs_the_fp32_model(qdq_onnx, tmp_path):
    target = make_target("openvino", "int8", backend_options={"openvino": {"native_int8": True}})
    with pytest.raises(ConfigError, match="fp32"):
        get_backend("openvino").compile(qdq_onnx, target, tmp_path)


def test_target_for_another_backend_is_refused(fp32_onnx, tmp_path):
    with pytest.raises(ConfigError, match="not 'openvino'"):
        get_backend("openvino").compile(fp32_onnx, make_target("onnxruntime", "fp32"), tmp_path)


def test_cache_dir_holds_the_compiled_model(fp32_onnx, tmp_path):
    backend = get_backend("openvino")
    cache = tmp_path / "ov-cache"
    target = make_target("openvino", "fp32", backend_options={"openvino": {"cache_dir": str(cache)}})
    backend.load(backend.compile(fp32_onnx, target, tmp_path / "ir"), target)
    # A second load on the device reads the compiled blob instead of compiling again.
    assert any(cache.iterdir())
