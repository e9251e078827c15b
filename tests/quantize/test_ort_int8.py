"""The ONNX Runtime INT8 form of the Q/DQ ONNX, on the shipped model with real Fashion-MNIST images."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeresnext.config import QuantSpec
from edgeresnext.data.calibration import load_calibration_images
from edgeresnext.errors import ConfigError, DataError
from edgeresnext.export import onnx_from_torch, onnx_runner
from edgeresnext.quantize.ort_int8 import QParams, artifact_grid, integer_compute_share, ort_int8_from_qdq
from edgeresnext.quantize.ptq import quantize_ptq


@pytest.fixture(scope="module")
def shipped_calib(shipped_model, calib_dir) -> np.ndarray:
    return load_calibration_images(calib_dir, shipped_model.meta.preprocess, 100)


@pytest.fixture(scope="module")
def qdq_files(shipped_model, shipped_calib, tmp_path_factory):
    """The shipped model's FP32 ONNX and its Q/DQ ONNX (residual placement, as quantize_ptq writes it)."""
    folder = tmp_path_factory.mktemp("ort-int8")
    fp32 = onnx_from_torch(shipped_model, folder / "fp32.onnx")
    qdq = quantize_ptq(shipped_model, shipped_calib, QuantSpec(subset_size=100), folder / "qdq.onnx", fp32_onnx=fp32)
    return fp32, qdq


@pytest.fixture(scope="module")
def rewritten(qdq_files, shipped_calib, tmp_path_factory):
    _fp32, qdq = qdq_files
    before = hashlib.sha256(qdq.read_bytes()).hexdigest()
    out = tmp_path_factory.mktemp("ort-int8-out") / "ort_int8.onnx"
    info = ort_int8_from_qdq(qdq, out, cpu="x86_64", calibration=shipped_calib)
    return out, info, before


@pytest.fixture(scope="module")
def test_batch(shipped_model, fmnist_test) -> tuple[np.ndarray, np.ndarray]:
    preprocess = shipped_model.meta.preprocess
    return np.stack([preprocess.image_to_array(image) for image in fmnist_test.images]), fmnist_test.labels


def test_integer_kernels_run_the_convolutions_and_the_qdq_onnx_is_untouched(qdq_files, rewritten):
    out, info, before = rewritten
    assert hashlib.sha256(qdq_files[1].read_bytes()).hexdigest() == before
    runtime = integer_compute_share(out)  # read from the graph ONNX Runtime optimised, not from the file
    assert runtime["integer_conv_fraction"] >= 0.9, runtime
    assert runtime["integer_convs"] == 22 and runtime["float_ops"] == {}, runtime
    assert runtime["int8_ops"]["QLinearAdd"] == 6 and runtime["int8_ops"]["QGemm"] == 1, runtime
    assert info["runtime"]["integer_conv_fraction"] == runtime["integer_conv_fraction"]
    # The residual placement leaves each block's last convolution output unquantized: 6 ranges measured.
    assert info["calibrated_tensors"] == 6 and info["activation_type"] == "uint8"
    before_rewrite = integer_compute_share(qdq_files[1])
    assert before_rewrite["integer_convs"] < 0.1 * runtime["integer_convs"], before_rewrite


def test_agrees_with_fp32_on_real_images_as_closely_as_the_qdq_onnx(qdq_files, rewritten, test_batch):
    """Tolerance: the Q/DQ ONNX's own quantization error, with a margin for the rewrite's few new quantizers.

    Every quantizer of the rewrite keeps the Q/DQ grid (signed tensors) or the Q/DQ range with finer steps
    (ReLU outputs); the only new ranges are the 6 convolution outputs that meet in a residual Add, measured on the
    same calibration images. So the rewrite may not be much further from FP32 than the Q/DQ ONNX: at most 1.25x
    its mean absolute logit error (measured on the full test set: 1.07x) and at most 1 % more top-1 disagreement
    (full test set: 0.34 % against 0.42 % for the Q/DQ ONNX).
    """
    fp32, qdq = qdq_files
    images, labels = test_batch
    reference, base, ours = (onnx_runner(path)(images) for path in (fp32, qdq, rewritten[0]))
    base_error, our_error = np.abs(base - reference).mean(), np.abs(ours - reference).mean()
    assert our_error <= 1.25 * base_error, (our_error, base_error)
    disagree = np.mean(ours.argmax(1) != reference.argmax(1))
    assert disagree <= np.mean(base.argmax(1) != reference.argmax(1)) + 0.01, disagree
    assert np.mean(ours.argmax(1) == labels) >= np.mean(reference.argmax(1) == labels) - 0.01


def test_merged_groups_give_bit_identical_logits(qdq_files, rewritten, shipped_calib, test_batch, tmp_path):
    out, info, _before = rewritten
    assert info["merged_grouped_convs"] == {
        "/layer1/layer1.0/conv2/Conv": [4, 1],
        "/layer1/layer1.1/conv2/Conv": [4, 1],
        "/layer2/layer2.0/conv2/Conv": [4, 2],
        "/layer2/layer2.1/conv2/Conv": [4, 2],
    }
    grouped = tmp_path / "grouped.onnx"
    plain = ort_int8_from_qdq(qdq_files[1], grouped, cpu="x86_64", calibration=shipped_calib, group_channels=1)
    assert plain["merged_grouped_convs"] == {} and plain["runtime"]["integer_convs"] == 22
    images = test_batch[0][:64]
    # Zeros between the merged groups add exactly nothing to the INT32 accumulators.
    assert np.array_equal(onnx_runner(out)(images), onnx_runner(grouped)(images))


def test_arm64_form_uses_int8_activations_on_the_same_grid(qdq_files, rewritten, shipped_calib, test_batch, tmp_path):
    arm = tmp_path / "arm64.onnx"
    info = ort_int8_from_qdq(qdq_files[1], arm, cpu="arm64", calibration=shipped_calib, analyze=False)
    assert info["activation_type"] == "int8" and "runtime" not in info
    proto = onnx.load(str(arm))
    inits = {t.name: t for t in proto.graph.initializer}
    producers = {out: node for node in proto.graph.node for out in node.output}
    for node in (n for n in proto.graph.node if n.op_type == "QuantizeLinear"):
        zero = inits[node.input[2]]
        assert zero.data_type == onnx.TensorProto.INT8, node.name
        if producers.get(node.input[0]) is not None and producers[node.input[0]].op_type == "Relu":
            assert int(numpy_helper.to_array(zero)) == -128, node.name  # so ONNX Runtime can drop the ReLU
    images = test_batch[0][:128]
    x86, arm64 = onnx_runner(rewritten[0])(images), onnx_runner(arm)(images)
    # The same grids; here on x86 ONNX Runtime runs part of the INT8 form in float, so rounding may differ a little.
    assert np.mean(x86.argmax(1) == arm64.argmax(1)) >= 0.98
    assert np.abs(x86 - arm64).mean() < 0.05 * np.abs(x86).mean()


def test_grids_and_errors():
    signed = QParams(scale=0.1, zero_point=0, signed=True)
    assert artifact_grid(signed, nonnegative=False, signed_out=False) == QParams(0.1, 128, False)  # same values
    relu = artifact_grid(signed, nonnegative=True, signed_out=False)  # [0, 12.7] on all 256 codes
    assert relu.zero_point == 0 and relu.scale == pytest.approx(12.7 / 255)
    assert artifact_grid(signed, nonnegative=True, signed_out=True).zero_point == -128


def test_bad_inputs_are_our_errors(qdq_files, tmp_path):
    fp32, qdq = qdq_files
    with pytest.raises(DataError, match="pass calibration images"):
        ort_int8_from_qdq(qdq, tmp_path / "a.onnx", cpu="x86_64")
    with pytest.raises(ConfigError, match="cpu='riscv64'"):
        ort_int8_from_qdq(qdq, tmp_path / "b.onnx", cpu="riscv64")
    with pytest.raises(ConfigError, match="no activation QuantizeLinear"):
        ort_int8_from_qdq(fp32, tmp_path / "c.onnx", cpu="x86_64")
    assert not any(tmp_path.iterdir())


def test_a_layer_left_in_float_by_the_fallback_stays_float(qdq_files, shipped_calib, test_batch, tmp_path):
    from edgeresnext.quantize import qdq

    proto = onnx.load(str(qdq_files[1]))
    layer = "/layer2/layer2.0/conv2/Conv"
    assert qdq.remove_quantizers_of(proto, {layer}, qdq.float_weights_of(onnx.load(str(qdq_files[0])))) == [layer]
    fallback = tmp_path / "fallback.onnx"
    onnx.save(proto, str(fallback))
    info = ort_int8_from_qdq(fallback, tmp_path / "out.onnx", cpu="x86_64", calibration=shipped_calib)
    # The fallback layer, and conv1 before it: the Q/DQ ONNX no longer quantizes conv1's (ReLU) output, which
    # only the float layer reads, so no integer kernel can write it either.
    assert info["runtime"]["integer_convs"] == 20 and info["runtime"]["convs"] == 22, info["runtime"]
    assert layer not in info["merged_grouped_convs"] and info["calibrated_tensors"] == 6
    rewritten = onnx.load(str(tmp_path / "out.onnx"))
    producers = {out: node for node in rewritten.graph.node for out in node.output}
    conv = next(node for node in rewritten.graph.node if node.name == layer)
    assert all(producers[name].op_type != "DequantizeLinear" for name in conv.input[:2] if name in producers)
    images = test_batch[0][:64]
    reference = onnx_runner(qdq_files[0])(images)
    assert np.mean(onnx_runner(tmp_path / "out.onnx")(images).argmax(1) == reference.argmax(1)) >= 0.95
