"""The TensorRT lint catches each rule on small hand-built Q/DQ graphs, and passes our own PTQ output."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeresnext.errors import ExportError
from edgeresnext.lint import assert_lint_clean, lint_onnx


def qdq_conv(
    path,
    *,
    act_type=TensorProto.INT8,
    act_zero=0,
    weight_scales=8,
    weight_axis=0,
    groups=1,
    extra_node=None,
    opset=17,
    out_channels=8,
    in_channels=8,
):
    """input -> Q -> DQ -> Conv(weight: int8 -> DQ) -> output, with the defects the arguments ask for."""
    act_dtype = np.int8 if act_type == TensorProto.INT8 else np.uint8
    weight = np.ones((out_channels, in_channels // groups, 3, 3), np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "act_scale"),
        numpy_helper.from_array(np.array(act_zero, act_dtype), "act_zero"),
        numpy_helper.from_array(weight, "w_q"),
        numpy_helper.from_array(
            np.full(weight_scales, 0.01, np.float32).reshape(() if weight_scales == 1 else -1), "w_scale"
        ),
        numpy_helper.from_array(np.zeros(weight_scales, np.int8).reshape(() if weight_scales == 1 else -1), "w_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "act_scale", "act_zero"], ["x_q"], name="input_q"),
        helper.make_node("DequantizeLinear", ["x_q", "act_scale", "act_zero"], ["x_dq"], name="input_dq"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="weight_dq", axis=weight_axis),
        helper.make_node("Conv", ["x_dq", "w"], ["conv_out"], name="/layer1/conv", pads=[1, 1, 1, 1], group=groups),
    ]
    last = "conv_out"
    if extra_node is not None:
        nodes.append(extra_node)
        last = extra_node.output[0]
    nodes.append(helper.make_node("Identity", [last], ["logits"], name="out"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, in_channels, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    if extra_node is not None and extra_node.domain:
        opsets.append(helper.make_opsetid(extra_node.domain, 1))
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def rules(path) -> set[tuple[str, str]]:
    return {(v.rule, v.node) for v in lint_onnx(path) if v.severity == "error"}


def test_clean_graph_passes(tmp_path):
    path = qdq_conv(tmp_path / "clean.onnx")
    assert lint_onnx(path) == []
    assert assert_lint_clean(path) == []


def test_uint8_activation_is_reported_per_node(tmp_path):
    found = rules(qdq_conv(tmp_path / "u8.onnx", act_type=TensorProto.UINT8))
    assert found == {("qdq-type", "input_q"), ("qdq-type", "input_dq")}


def test_nonzero_zero_point(tmp_path):
    assert rules(qdq_conv(tmp_path / "zp.onnx", act_zero=3)) == {("zero-point", "input_q"), ("zero-point", "input_dq")}


def test_per_tensor_weights(tmp_path):
    assert rules(qdq_conv(tmp_path / "pt.onnx", weight_scales=1)) == {("weight-per-channel", "/layer1/conv")}


def test_weights_on_the_wrong_axis(tmp_path):
    found = lint_onnx(qdq_conv(tmp_path / "axis.onnx", weight_scales=8, weight_axis=1))
    assert [(v.rule, v.node) for v in found] == [("weight-per-channel", "/layer1/conv")]
    assert "axis 1" in found[0].message


def test_custom_op_and_unsupported_op(tmp_path):
    custom = helper.make_node("FakeQuantize", ["conv_out"], ["fq"], name="ov_fq", domain="org.openvinotoolkit")
    assert rules(qdq_conv(tmp_path / "custom.onnx", extra_node=custom)) == {("custom-domain", "ov_fq")}
    qlinear = helper.make_node("MatMulInteger", ["conv_out", "conv_out"], ["mm"], name="mmi")
    assert ("unsupported-op", "mmi") in rules(qdq_conv(tmp_path / "unsupported.onnx", extra_node=qlinear))


def test_grouped_conv_channels_per_group(tmp_path):
    # 12 channels in 4 groups = 3 per group: TensorRT cannot run it in INT8.
    path = qdq_conv(tmp_path / "g.onnx", groups=4, out_channels=12, in_channels=12, weight_scales=12)
    assert rules(path) == {("group-channels", "/layer1/conv")}
    assert rules(qdq_conv(tmp_path / "g8.onnx", groups=2, weight_scales=8)) == set()  # 4 per group is fine


def test_old_opset(tmp_path):
    assert ("opset", "(model)") in rules(qdq_conv(tmp_path / "o.onnx", opset=12))


def test_assert_lint_clean_lists_every_violation(tmp_path):
    path = qdq_conv(tmp_path / "bad.onnx", act_type=TensorProto.UINT8, weight_scales=1)
    with pytest.raises(ExportError) as caught:
        assert_lint_clean(path)
    message = str(caught.value)
    assert "3 TensorRT lint violation" in message and "input_q" in message and "/layer1/conv" in message


def test_unreadable_file(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ExportError, match=r"x\.onnx"):
        lint_onnx(bad)
