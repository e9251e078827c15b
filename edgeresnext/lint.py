"""TensorRT lint for Q/DQ ONNX models: what TensorRT's explicit-quantization path accepts, checked on the CPU.

TensorRT cannot run here, so every INT8 export passes this lint before any backend sees it
(see docs/TENSORRT facts in the design notes). Rules, each reported with the node's name:

``opset``               default-domain opset >= 13 (per-channel Q/DQ needs it)
``custom-domain``       every node in the default ONNX domain (no ``com.microsoft``, no OpenVINO custom ops)
``unsupported-op``      only ops TensorRT's ONNX parser implements (``QLinearConv``, ``ConvInteger`` ... are not)
``qdq-type``            Q/DQ quantized type is signed INT8 (or FP8/INT4); no UINT8, no INT32 bias DequantizeLinear
``zero-point``          every zero point is 0 (symmetric)
``weight-per-channel``  Conv/Gemm weights are quantized per output channel (axis 0 of the Conv weight)
``activation-per-tensor`` activations are quantized per tensor
``group-channels``      an INT8 grouped convolution has a multiple of 4 input and output channels per group
``fp16-scale``          every FP16 Q/DQ scale is a normal FP16 number (>= 2**-14): a zero or subnormal scale
                        breaks the layer in TensorRT (the FP16 variant a strongly typed build reads)

Warnings (do not fail the lint): ``residual-add`` an ``Add`` fed by an INT8 convolution whose skip input has
no Q/DQ (TensorRT then cannot fuse it into the INT8 convolution).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from edgeresnext.errors import ExportError

logger = logging.getLogger(__name__)

MIN_QDQ_OPSET = 13

# TensorRT ONNX parser (onnx-tensorrt operators.md, TensorRT 10.x): ops it imports. Q/DQ-only ops such as
# QLinearConv, ConvInteger, MatMulInteger and DynamicQuantizeLinear are deliberately absent.
TENSORRT_OPS = frozenset(
    """
Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Bernoulli
BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow Cast CastLike Ceil Celu Clip Concat ConcatFromSequence
Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DFT DeformConv DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu
Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization HammingWindow
HannWindow HardSigmoid HardSwish Hardmax Identity If InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization
LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool MaxRoiPool
MeanVarianceNormalization Mean Min Mish Mod Mul Multinomial
Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad ParametricSoftplus Pow
QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RoiAlign Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu SequenceAt
SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength Shape Shrink Sigmoid Sign Sin Sinh Size
Slice Softmax Softplus Softsign SpaceToDepth Split SplitToSequence Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile
TopK Transpose Trilu Unique Unsqueeze Upsample Where Xor
""".split()
)

_INT8, _UINT8, _INT32 = 3, 2, 6
# TensorProto types TensorRT accepts in Q/DQ: INT8, FLOAT8E4M3FN, INT4.
_ALLOWED_QDQ_TYPES = {3: "INT8", 17: "FLOAT8E4M3FN", 22: "INT4"}
_WEIGHTED_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": None}
_FLOAT16 = 10
FP16_MIN_NORMAL = 2.0**-14  # 6.1e-05


@dataclass(frozen=True)
class Violation:
    """One broken rule at one node."""

    node: str
    rule: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"


def _type_name(elem_type: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(elem_type)


class _Graph:
    """Producers, consumers and constants of one ONNX graph, for the rules below."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper

        self.model = model
        self.nodes = list(model.graph.node)
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.constants: dict[str, np.ndarray] = {
            name: numpy_helper.to_array(t) for name, t in self.initializers.items()
        }
        self.constant_types = {name: t.data_type for name, t in self.initializers.items()}
        for node in self.nodes:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = numpy_helper.to_array(attr.t)
                        self.constant_types[node.output[0]] = attr.t.data_type
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def name(self, node) -> str:
        return node.name or f"{node.op_type}({', '.join(node.output)})"

    def is_constant(self, tensor: str) -> bool:
        """A weight: an initializer/Constant, possibly behind a QuantizeLinear of a constant."""
        if tensor in self.constants:
            return True
        node = self.producer.get(tensor)
        # The exporter shares identical weights through Identity nodes, so follow those as well.
        return (
            node is not None
            and node.op_type in ("QuantizeLinear", "DequantizeLinear", "Identity")
            and self.is_constant(node.input[0])
        )


def _attr(node, name: str, default=None):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _qdq_type(graph: _Graph, node) -> int | None:
    """The quantized element type of a Q/DQ node, from its zero point or its quantized input."""
    if len(node.input) > 2 and node.input[2]:
        return graph.constant_types.get(node.input[2])
    if node.op_type == "QuantizeLinear":
        return _attr(node, "output_dtype", 0) or _UINT8  # ONNX default without a zero point is UINT8
    quantized = node.input[0]
    if quantized in graph.constant_types:
        return graph.constant_types[quantized]
    producer = graph.producer.get(quantized)
    return _qdq_type(graph, producer) if producer is not None and producer.op_type == "QuantizeLinear" else None


def _check_qdq(graph: _Graph, node, found: list[Violation]) -> None:
    name = graph.name(node)
    elem = _qdq_type(graph, node)
    if elem == _INT32:
        found.append(
            Violation(name, "qdq-type", "INT32 DequantizeLinear (bias quantization); TensorRT takes float bias")
        )
    elif elem is not None and elem not in _ALLOWED_QDQ_TYPES:
        found.append(
            Violation(
                name,
                "qdq-type",
                f"quantized type {_type_name(elem)}; TensorRT accepts signed INT8 (or FP8/INT4), never UINT8",
            )
        )
    if len(node.input) > 2 and node.input[2]:
        zero_point = graph.constants.get(node.input[2])
        if zero_point is None:
            found.append(Violation(name, "zero-point", f"zero point {node.input[2]!r} is computed, not a constant 0"))
        elif np.any(zero_point.astype(np.int64) != 0):
            values = np.unique(zero_point.astype(np.int64))[:4].tolist()
            found.append(
                Violation(name, "zero-point", f"zero point {values} is not 0; TensorRT quantization is symmetric")
            )
    scale = graph.constants.get(node.input[1])
    if (
        node.op_type == "QuantizeLinear"
        and not graph.is_constant(node.input[0])
        and scale is not None
        and scale.size > 1
    ):
        found.append(
            Violation(
                name,
                "activation-per-tensor",
                f"activation quantized with {scale.size} scales "
                "(axis {}); TensorRT wants one scale per activation "
                "tensor".format(_attr(node, "axis", 1)),
            )
        )


def _check_fp16_scale(graph: _Graph, node, found: list[Violation]) -> None:
    scale = graph.constants.get(node.input[1]) if len(node.input) > 1 else None
    if scale is None or graph.constant_types.get(node.input[1]) != _FLOAT16:
        return
    magnitude = np.abs(scale.astype(np.float32))
    bad = ~(magnitude >= FP16_MIN_NORMAL)  # NaN counts as bad too
    if bad.any():
        found.append(
            Violation(
                graph.name(node),
                "fp16-scale",
                f"{int(bad.sum())} of {scale.size} FP16 scales are zero or subnormal (smallest "
                f"{float(magnitude.min()):.3g}; FP16's smallest normal number is {FP16_MIN_NORMAL:.3g}); raise them "
                "to it and requantize the weights (edgeresnext's FP16 variant does)",
            )
        )


def _weight_dequantizer(graph: _Graph, tensor: str):
    node = graph.producer.get(tensor)
    if node is not None and node.op_type == "DequantizeLinear" and graph.is_constant(node.input[0]):
        return node
    return None


def _check_weights(graph: _Graph, node, found: list[Violation]) -> None:
    if node.op_type not in _WEIGHTED_OPS or len(node.input) < 2:
        return
    dq = _weight_dequantizer(graph, node.input[1])
    if dq is None:
        return
    weight = graph.constants.get(dq.input[0])
    if weight is None:
        q = graph.producer.get(dq.input[0])
        weight = graph.constants.get(q.input[0]) if q is not None else None
    scale = graph.constants.get(dq.input[1])
    if weight is None or scale is None:
        return
    rank = weight.ndim
    if node.op_type == "Gemm":
        out_axis = 0 if _attr(node, "transB", 0) else 1
    elif node.op_type == "MatMul":
        out_axis = rank - 1
    else:
        out_axis = _WEIGHTED_OPS[node.op_type]
    channels = weight.shape[out_axis] if rank > out_axis else 1
    name = graph.name(node)
    if scale.size == 1 and channels > 1:
        found.append(
            Violation(
                name,
                "weight-per-channel",
                f"weight {dq.input[0]!r} is quantized per tensor (one "
                f"scale for {channels} output channels); quantize it per "
                f"output channel (axis {out_axis})",
            )
        )
    elif scale.size > 1:
        axis = _attr(dq, "axis", 1)
        axis = axis + rank if axis < 0 else axis
        if axis != out_axis or scale.size != channels:
            found.append(
                Violation(
                    name,
                    "weight-per-channel",
                    f"weight {dq.input[0]!r} has {scale.size} scales on "
                    f"axis {axis}; expected {channels} on axis {out_axis} "
                    "(the output channels)",
                )
            )
    group = _attr(node, "group", 1)
    if node.op_type == "Conv" and group > 1:
        out_per_group = weight.shape[0] // group
        in_per_group = weight.shape[1]
        if out_per_group % 4 or in_per_group % 4:
            found.append(
                Violation(
                    name,
                    "group-channels",
                    f"INT8 grouped convolution with {in_per_group} input and "
                    f"{out_per_group} output channels per group ({group} "
                    "groups); TensorRT needs multiples of 4",
                )
            )


def _check_residual_add(graph: _Graph, node, found: list[Violation]) -> None:
    if node.op_type != "Add" or len(node.input) != 2 or any(graph.is_constant(i) for i in node.input):
        return
    producers = [graph.producer.get(i) for i in node.input]
    quantized_conv = any(
        p is not None and p.op_type == "Conv" and _weight_dequantizer(graph, p.input[1]) is not None for p in producers
    )
    skip_quantized = any(p is not None and p.op_type == "DequantizeLinear" for p in producers)
    if quantized_conv and not skip_quantized:
        found.append(
            Violation(
                graph.name(node),
                "residual-add",
                "an INT8 convolution feeds this Add but the skip "
                "input has no Q/DQ; TensorRT fuses the Add into the "
                "convolution only when it does",
                severity="warning",
            )
        )


def lint_model(model, rules: str = "tensorrt") -> list[Violation]:
    """Lint an in-memory ``onnx.ModelProto`` (see :func:`lint_onnx`)."""
    if rules != "tensorrt":
        raise ExportError(f"lint rules {rules!r}; expected 'tensorrt'")
    graph = _Graph(model)
    found: list[Violation] = []
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    if opsets.get("ai.onnx", 0) < MIN_QDQ_OPSET:
        found.append(
            Violation(
                "(model)",
                "opset",
                f"default-domain opset {opsets.get('ai.onnx')}; TensorRT Q/DQ needs >= {MIN_QDQ_OPSET}",
            )
        )
    for node in graph.nodes:
        name = graph.name(node)
        if node.domain not in ("", "ai.onnx"):
            found.append(
                Violation(
                    name,
                    "custom-domain",
                    f"op {node.domain}::{node.op_type} is a custom op; TensorRT "
                    "reads the default ONNX domain only (no plugins here)",
                )
            )
            continue
        if node.op_type not in TENSORRT_OPS:
            found.append(
                Violation(name, "unsupported-op", f"op {node.op_type} is not supported by TensorRT's ONNX parser")
            )
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            _check_qdq(graph, node, found)
            _check_fp16_scale(graph, node, found)
        _check_weights(graph, node, found)
        _check_residual_add(graph, node, found)
    return found


def lint_onnx(path: str | os.PathLike[str], rules: str = "tensorrt") -> list[Violation]:
    """Every TensorRT rule ``path`` breaks (errors and warnings), each naming its node."""
    from edgeresnext.onnx_io import load_onnx_safely

    return lint_model(load_onnx_safely(path), rules)


def assert_lint_clean(path: str | os.PathLike[str], rules: str = "tensorrt") -> list[Violation]:
    """Raise ExportError listing every error-level violation; returns the warnings (logged)."""
    found = lint_onnx(path, rules)
    errors = [v for v in found if v.severity == "error"]
    warnings = [v for v in found if v.severity != "error"]
    for warning in warnings:
        logger.warning("%s: %s", path, warning)
    if errors:
        shown = "\n  ".join(str(v) for v in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ExportError(f"{path}: {len(errors)} TensorRT lint violation(s):\n  {shown}{more}")
    return warnings
