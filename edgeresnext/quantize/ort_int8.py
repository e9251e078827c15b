"""The Q/DQ ONNX rewritten into the Q/DQ form ONNX Runtime's CPU provider runs as integer kernels.

The Q/DQ ONNX (:mod:`edgeresnext.quantize.ptq`) is made for TensorRT: signed INT8 activations with zero point
0, ``Conv -> Relu -> Q``, the residual ``Add`` reading its convolution unquantized, no Q/DQ after MaxPool. ONNX
Runtime's QDQ fusions replace a ``DQ -> op -> Q`` group by ``QLinearConv``, ``QLinearAdd``,
``QLinearGlobalAveragePool`` or ``QGemm`` only when every activation input comes through a DequantizeLinear and the
output goes through a QuantizeLinear; anything else runs in float (the Q/DQ ONNX: 0 of 53 ResNeXt-50
convolutions as QLinearConv, 2.2-2.5x the latency of ``quantize_static``'s model). The artifact written here, from
the same file and its calibrated scales (the Q/DQ ONNX itself is only read):

* **Every activation Q/DQ pair is stripped and one is put back on every tensor an integer kernel reads or
  writes**: the inputs of each Conv/Gemm/Add/pooling and their outputs (after the ReLU where one follows), one
  DequantizeLinear per reader.
* **ReLU outputs are unsigned over the Q/DQ range.** ONNX Runtime drops a ``Relu`` before a QuantizeLinear only
  when the zero point is the type's minimum (``ReluQuantFusion``); otherwise the ReLU stays between Conv and Q and
  the convolution runs in float (ResNeXt-50 with the Q/DQ grid kept for ReLU outputs: 20 of 53 QLinearConv,
  2.2x the anchor). The Q/DQ file's quantizer covers ``[0, 127 s]``; the artifact keeps that range on all 256 codes:
  UINT8, zero point 0, scale ``127 s / 255`` (ARM64: INT8, zero point -128, the same grid).
* **Signed tensors** (the image, downsample outputs) keep the Q/DQ grid: UINT8 with zero point 128 and the
  same scale on x86-64 (the same values), INT8 on ARM64. A QLinearAdd takes both inputs and its output in one type.
* **Tensors the Q/DQ ONNX never quantized** (residual placement: each block's last convolution output, read
  unquantized by the ``Add``) get an asymmetric min/max range from a calibration pass of the Q/DQ model itself
  over ``calibration``. Without them those convolutions and Adds stay float (ResNeXt-50: 37 of 53 QLinearConv,
  1.7x the anchor); without images such a file is an error. A file with NNCF's placement has every range already.
  MaxPool and Flatten outputs take their input's grid (ONNX Runtime 1.32 would also move the DQ across MaxPool).
* **Biases are INT32** with scale ``input scale x weight scale``: ONNX Runtime 1.32 quantizes a float Conv bias
  itself but leaves the classifier ``Gemm`` in float without it; older runtimes on boards quantize neither.
* **Grouped convolutions are merged** into groups of >= 32 input channels with block-diagonal weights
  (:func:`_merge_groups`): exact in INT32, and the bulk of the gain over ``quantize_static`` (ResNeXt-50 layer1
  conv2 alone 0.10x; whole model 1.02x the anchor unmerged, 0.73x merged).

Weights stay as they are (INT8, per output channel, zero point 0). The CPU kind decides the activation type:

* ``x86_64`` (measured here, AMD EPYC with AVX512-VNNI): UINT8 activations x INT8 weights, what ``vpdpbusd``
  multiplies. ONNX Runtime on x86 converts INT8 activation Q/DQ pairs to UINT8 itself where it can
  (``QDQS8ToU8Transformer``; ``QDQIsInt8Allowed()`` is false off ARM), but not everywhere: the ARM64 form run here
  kept 20 of 53 ResNeXt-50 convolutions in float (the stem and every one whose input quantizer has several
  readers). Writing UINT8 makes the file say what runs.
* ``arm64`` (read in ONNX Runtime's source and docs, not measured): INT8 activations. ``QDQIsInt8Allowed()`` is true
  on ARM, and MLAS on ARM64 runs S8S8 on its native ``sdot``/``smmla`` (i8mm) kernels while U8S8 goes to the ``udot``
  kernel with the weights shifted to unsigned; ONNX Runtime's quantization guide names S8S8 in QDQ format the first
  choice on CPUs and U8U8 the fallback when accuracy suffers.
"""

from __future__ import annotations

import logging
import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnext.atomic import atomic_path
from edgeresnext.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

CPU_KINDS = ("x86_64", "arm64")
# Operators that ONNX Runtime's CPU provider runs as integer kernels once their activations are Q/DQ'd.
INTEGER_OPS = frozenset({"Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool", "AveragePool"})
# Operators whose output values stay on their input's quantization grid: the output takes the input's Q/DQ.
PASSTHROUGH_OPS = frozenset({"MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"})
WEIGHTED_OPS = frozenset({"Conv", "Gemm", "MatMul"})
# Grouped convolutions are merged (block-diagonal weights, see _merge_groups) until each group reads at least this
# many input channels. Measured on this x86-64 (AVX512-VNNI, ORT 1.32, 2 threads), one QLinearConv alone, time
# relative to the unmerged grouped conv: ResNeXt-50 layer1 conv2 (128 ch, 32 groups of 4, 56x56) 0.12 at 16
# channels per group, 0.10 at 32, 0.15 at 64; layer2 (8 per group, 28x28) 0.45 at 32, 0.59 at 64; layer3 (16 per
# group, 14x14) 0.85 at 32, 1.10 at 64; layer4 (32 per group) 1.36 at 64; resnext20_4x8d layer1 (8 per group,
# 28x28) 0.35 at 32. ARM64 is not measured: its kernels also pack weights in column blocks, so narrow groups
# waste them the same way, but the best width may differ.
GROUP_CHANNELS = 32
# Images per ONNX Runtime call in the calibration pass.
CALIB_BATCH = 10

_UINT8, _INT8 = 2, 3


@dataclass(frozen=True)
class QParams:
    """A per-tensor activation quantizer: real value = (code - zero_point) * scale."""

    scale: float
    zero_point: int
    signed: bool

    @property
    def qmin(self) -> int:
        return -128 if self.signed else 0

    @property
    def qmax(self) -> int:
        return 127 if self.signed else 255


def default_cpu() -> str:
    """The CPU kind of this machine: ``x86_64`` or ``arm64``."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if machine in ("aarch64", "arm64", "armv8l"):
        return "arm64"
    raise ConfigError(f"no default ONNX Runtime INT8 form for CPU {platform.machine()!r}; pass cpu= one of {CPU_KINDS}")


def _checked_cpu(cpu: str | None) -> str:
    """``cpu``, or this machine's kind when None; one of :data:`CPU_KINDS`."""
    cpu = cpu or default_cpu()
    if cpu not in CPU_KINDS:
        raise ConfigError(f"cpu={cpu!r}; expected one of {', '.join(CPU_KINDS)}")
    return cpu


def artifact_grid(params: QParams, nonnegative: bool, signed_out: bool) -> QParams:
    """The Q/DQ file's quantizer ``params`` in the artifact's type.

    ``nonnegative`` (a ReLU output): the range the Q/DQ file's quantizer covers above 0, on all 256 codes, starting at
    the type's minimum so ONNX Runtime can drop the ReLU. Otherwise the same grid (same scale, zero point shifted by
    128 when the type changes): the same real values.
    """
    if nonnegative:
        high = (params.qmax - params.zero_point) * params.scale
        return QParams(scale=high / 255.0, zero_point=-128 if signed_out else 0, signed=signed_out)
    shift = 0 if params.signed == signed_out else (-128 if signed_out else 128)
    return QParams(scale=params.scale, zero_point=params.zero_point + shift, signed=signed_out)


def asymmetric(low: float, high: float, signed: bool) -> QParams:
    """Min/max range -> asymmetric 8-bit quantizer that represents 0 exactly (ONNX Runtime's MinMax convention)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    qmin, qmax = (-128, 127) if signed else (0, 255)
    scale = (high - low) / (qmax - qmin)
    if not scale > 0:
        return QParams(scale=1.0, zero_point=0, signed=signed)
    zero_point = int(np.clip(round(qmin - low / scale), qmin, qmax))
    return QParams(scale=float(scale), zero_point=zero_point, signed=signed)


def _copy(node):
    """A detached copy: nodes are re-added to the graph after ``del graph.node[:]``."""
    from onnx import NodeProto

    copied = NodeProto()
    copied.CopyFrom(node)
    return copied


def _attribute(node, name: str, default: Any) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _activation_quantizers(graph, initializers) -> tuple[dict[str, QParams], dict[str, str], set[int]]:
    """Per-tensor activation Q/DQ pairs of the Q/DQ graph: params by float tensor, DQ output -> float tensor,
    and the indices of those Q and DQ nodes."""
    from onnx import numpy_helper

    nodes = list(graph.node)  # protobuf wrappers are not stable objects across iterations: index them once
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    params: dict[str, QParams] = {}
    remap: dict[str, str] = {}
    pair_nodes: set[int] = set()
    for index, node in enumerate(nodes):
        if node.op_type != "QuantizeLinear" or node.input[0] in initializers:
            continue
        tensor = node.input[0]
        users = [nodes[i] for i in consumers.get(node.output[0], [])]
        if not users or any(user.op_type != "DequantizeLinear" for user in users):
            raise ConfigError(f"QuantizeLinear {node.name!r} feeds something other than DequantizeLinear")
        if node.input[1] not in initializers or (len(node.input) > 2 and node.input[2] not in initializers):
            raise ConfigError(f"QuantizeLinear {node.name!r}: scale and zero point must be initializers")
        scale = numpy_helper.to_array(initializers[node.input[1]])
        if scale.size != 1:
            raise ConfigError(f"QuantizeLinear {node.name!r} is per-channel; activations must be per-tensor")
        if len(node.input) > 2 and node.input[2]:
            zero_tensor = initializers[node.input[2]]
            zero, signed = int(numpy_helper.to_array(zero_tensor).reshape(-1)[0]), zero_tensor.data_type == _INT8
            if zero_tensor.data_type not in (_INT8, _UINT8):
                raise ConfigError(f"QuantizeLinear {node.name!r}: only 8-bit activation quantizers are supported")
        else:
            zero, signed = 0, False
        found = QParams(scale=float(scale.reshape(-1)[0]), zero_point=zero, signed=signed)
        if params.setdefault(tensor, found) != found:
            raise ConfigError(f"tensor {tensor!r} has two different activation quantizers")
        pair_nodes.add(index)
        pair_nodes.update(consumers.get(node.output[0], []))
        for user in users:
            remap[user.output[0]] = tensor
    return params, remap, pair_nodes


def _calibrated_ranges(qdq_onnx: Path, tensors: list[str], calibration: np.ndarray) -> dict[str, tuple[float, float]]:
    """Min and max of ``tensors`` over ``calibration``, running the Q/DQ model itself in ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    from edgeresnext.onnx_io import load_onnx_safely

    model = load_onnx_safely(qdq_onnx)
    for name in tensors:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    batch = feed.shape[0] if isinstance(feed.shape[0], int) else CALIB_BATCH
    low = {name: np.inf for name in tensors}
    high = {name: -np.inf for name in tensors}
    for start in range(0, len(calibration), batch):
        chunk = np.ascontiguousarray(calibration[start : start + batch], dtype=np.float32)
        if len(chunk) != batch and isinstance(feed.shape[0], int):
            break
        for name, value in zip(tensors, session.run(tensors, {feed.name: chunk}), strict=True):
            low[name] = min(low[name], float(value.min()))
            high[name] = max(high[name], float(value.max()))
    return {name: (low[name], high[name]) for name in tensors}


@dataclass
class _FloatGraph:
    """The Q/DQ graph without its activation Q/DQ pairs (weight DequantizeLinear nodes stay), indexed by
    tensor: the graph the rewrite reads to decide where quantizers go."""

    nodes: list[Any]
    initializers: dict[str, Any]
    producers: dict[str, Any]
    consumers: dict[str, list[Any]]
    outputs: set[str]

    @classmethod
    def of(cls, graph, initializers: dict[str, Any], remap: dict[str, str], pair_nodes: set[int]) -> _FloatGraph:
        """Detached copies of ``graph``'s nodes but the ``pair_nodes``, reading float tensors (``remap``)."""
        nodes = [_copy(node) for index, node in enumerate(graph.node) if index not in pair_nodes]
        for node in nodes:
            for position, name in enumerate(node.input):
                node.input[position] = remap.get(name, name)
        for output in graph.output:
            if output.name in remap:
                raise ConfigError(f"graph output {output.name!r} is a DequantizeLinear output; expected float logits")
        consumers: dict[str, list[Any]] = {}
        for node in nodes:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        producers = {out: node for node in nodes for out in node.output}
        return cls(nodes, initializers, producers, consumers, {output.name for output in graph.output})

    def is_constant(self, name: str) -> bool:
        """An initializer, or a weight DequantizeLinear of one."""
        producer = self.producers.get(name)
        return name in self.initializers or (
            producer is not None and producer.op_type == "DequantizeLinear" and producer.input[0] in self.initializers
        )

    def activation_inputs(self, node) -> list[str]:
        if node.op_type in ("Conv", "Gemm"):
            return [node.input[0]]
        return [name for name in node.input if name and not self.is_constant(name)]

    def quantized_output(self, name: str) -> str:
        """Where the Q goes for an op's output: after the ReLU when a ReLU is its only reader (ORT drops it)."""
        readers = self.consumers.get(name, [])
        if len(readers) == 1 and readers[0].op_type == "Relu":
            return readers[0].output[0]
        return name

    def runs_in_integers(self, node) -> bool:
        """Whether the rewrite quantizes around ``node``: a layer whose weights the Q/DQ ONNX keeps in float
        (a sensitivity fallback) stays a float layer reading float inputs."""
        if node.op_type in WEIGHTED_OPS:
            weight = node.input[1] if len(node.input) > 1 else None
            return weight is not None and self.is_constant(weight) and weight not in self.initializers
        return node.op_type in INTEGER_OPS | PASSTHROUGH_OPS

    def nonnegative(self, name: str) -> bool:
        """Whether ``name`` is a ReLU output (also through pooling, MaxPool, Flatten, ...)."""
        producer = self.producers.get(name)
        if producer is None:
            return False
        if producer.op_type == "Relu":
            return True
        if producer.op_type in PASSTHROUGH_OPS | {"GlobalAveragePool", "AveragePool"}:
            return self.nonnegative(producer.input[0])
        return False

    def source_of(self, name: str) -> str:
        """The tensor whose grid ``name`` keeps (through MaxPool/Flatten/...)."""
        producer = self.producers.get(name)
        while producer is not None and producer.op_type in PASSTHROUGH_OPS:
            name = producer.input[0]
            producer = self.producers.get(name)
        return name

    def float_layers(self) -> set[int]:
        """Indices of the weighted layers that stay float (their DequantizeLinear inputs are not added)."""
        return {
            index
            for index, node in enumerate(self.nodes)
            if node.op_type in WEIGHTED_OPS and not self.runs_in_integers(node)
        }

    def sources_without_quantizer(self, targets: list[str], qdq_params: dict[str, QParams]) -> list[str]:
        """The tensors whose range ``targets`` need but the Q/DQ ONNX does not quantize, once each in order."""
        return list(dict.fromkeys(self.source_of(t) for t in targets if self.source_of(t) not in qdq_params))

    def quantization_targets(self) -> list[str]:
        """Every tensor an integer kernel reads or writes, in node order: the tensors that get one Q each."""
        targets: list[str] = []
        for node in self.nodes:
            if not self.runs_in_integers(node):
                continue
            readers_of_output = self.consumers.get(node.output[0], [])
            if node.op_type in PASSTHROUGH_OPS and not any(self.runs_in_integers(c) for c in readers_of_output):
                continue
            candidates = self.activation_inputs(node) + [self.quantized_output(out) for out in node.output[:1]]
            for name in candidates:
                readers = [
                    c for c in self.consumers.get(name, []) if c.op_type not in WEIGHTED_OPS or self.runs_in_integers(c)
                ]
                if name not in targets and name not in self.outputs and readers:
                    targets.append(name)
        return targets


def _measured_ranges(
    qdq_onnx: Path, missing: list[str], calibration: np.ndarray | None
) -> dict[str, tuple[float, float]]:
    """Ranges of the tensors the Q/DQ ONNX never quantized (``missing``), from a calibration pass; none needed
    when the file quantizes everything an integer kernel reads."""
    if not missing:
        return {}
    if calibration is None:
        raise DataError(
            f"{qdq_onnx}: {len(missing)} tensor(s) read by integer kernels have no quantizer in the file "
            f"(first: {missing[0]!r}); pass calibration images to measure their ranges"
        )
    if calibration.ndim != 4 or len(calibration) == 0:
        raise DataError(f"calibration images must be a non-empty NCHW array, got shape {calibration.shape}")
    return _calibrated_ranges(qdq_onnx, missing, calibration)


def _quantizer_kind(graph: _FloatGraph, target: str, qdq_params: dict[str, QParams]) -> str:
    """How ``target``'s artifact quantizer was found (the ``quantizers`` counts of the info)."""
    source = graph.source_of(target)
    if source not in qdq_params:
        return "calibrated"
    return "relu_output_full_range" if graph.nonnegative(source) else "qdq_grid"


def _artifact_quantizers(
    graph: _FloatGraph,
    targets: list[str],
    qdq_params: dict[str, QParams],
    ranges: dict[str, tuple[float, float]],
    signed: bool,
) -> dict[str, QParams]:
    """Each target's quantizer in the artifact's type: the Q/DQ grid (full range after a ReLU), or the
    calibrated range for a tensor the Q/DQ ONNX left unquantized."""
    chosen: dict[str, QParams] = {}
    for name in targets:
        source = graph.source_of(name)
        if source in qdq_params:
            chosen[name] = artifact_grid(qdq_params[source], graph.nonnegative(source), signed)
        else:
            chosen[name] = asymmetric(*ranges[source], signed=signed)
    return chosen


@dataclass
class _QDQWriter:
    """The artifact's new Q/DQ nodes and initializers: one QuantizeLinear per target, one DequantizeLinear per
    reader (each fused group owns its DequantizeLinear), INT32 biases."""

    chosen: dict[str, QParams]
    signed: bool
    initializers: list[Any] = field(default_factory=list)
    qparam_names: dict[str, tuple[str, str]] = field(default_factory=dict)
    readers: Counter[str] = field(default_factory=Counter)
    biases: int = 0

    def add_initializer(self, array: np.ndarray, name: str) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def add_qparams(self, targets: list[str]) -> None:
        """Scale and zero point initializers of every target, in target order."""
        zero_type = np.int8 if self.signed else np.uint8
        for index, name in enumerate(targets):
            params = self.chosen[name]
            self.qparam_names[name] = (
                self.add_initializer(np.array(params.scale, np.float32), f"ort_int8_scale_{index}"),
                self.add_initializer(np.array(params.zero_point, zero_type), f"ort_int8_zero_point_{index}"),
            )

    def quantize_node(self, name: str):
        from onnx import helper

        scale, zero = self.qparam_names[name]
        return helper.make_node("QuantizeLinear", [name, scale, zero], [f"{name}_ort_q"], name=f"{name}_ort_Q")

    def dequantize_node(self, name: str):
        """The next reader's own DequantizeLinear of ``name``'s Q; its output replaces ``name`` in that reader."""
        from onnx import helper

        scale, zero = self.qparam_names[name]
        self.readers[name] += 1
        dq_out = f"{name}_ort_dq{self.readers[name]}"
        return helper.make_node("DequantizeLinear", [f"{name}_ort_q", scale, zero], [dq_out], name=f"{dq_out}_DQ")

    def int32_bias_node(self, node, graph: _FloatGraph, data_input: str):
        """The DequantizeLinear of ``node``'s bias as INT32 (its output replaces the float bias), or None when the
        layer's weight or input is not INT8."""
        from onnx import helper

        quantized_bias = _int32_bias(node, graph.producers, graph.initializers, self.chosen.get(data_input))
        if quantized_bias is None:
            return None
        values, scale = quantized_bias
        stem = f"{node.name or node.output[0]}_ort_bias"
        self.biases += 1
        return helper.make_node(
            "DequantizeLinear",
            [
                self.add_initializer(values, f"{stem}_int32"),
                self.add_initializer(scale, f"{stem}_scale"),
                self.add_initializer(np.zeros(values.shape, np.int32), f"{stem}_zero_point"),
            ],
            [f"{stem}_dq"],
            name=f"{stem}_DQ",
            axis=0,
        )


def _rebuilt_nodes(graph: _FloatGraph, graph_inputs: list[str], float_layers: set[int], writer: _QDQWriter) -> list:
    """The node list in order: Q right after a target's producer (or first, for graph inputs), one DQ per reader
    right before it, an INT32 bias DQ before each Conv/Gemm that takes one."""
    chosen = writer.chosen
    rebuilt: list[Any] = [writer.quantize_node(name) for name in graph_inputs if name in chosen]
    for index, node in enumerate(graph.nodes):
        data_input = node.input[0] if node.input else ""
        for position, name in enumerate(node.input):
            if name in chosen and index not in float_layers:
                dequantize = writer.dequantize_node(name)
                rebuilt.append(dequantize)
                node.input[position] = dequantize.output[0]
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] in graph.initializers:
            bias = writer.int32_bias_node(node, graph, data_input)
            if bias is not None:
                rebuilt.append(bias)
                node.input[2] = bias.output[0]
        rebuilt.append(node)
        rebuilt += [writer.quantize_node(out) for out in node.output if out in chosen]
    return rebuilt


def _save_rewritten(model, nodes: list, initializers: list, out_path: Path) -> None:
    """``model`` with ``nodes``, its initializers plus ``initializers`` less those nothing reads, checked and saved."""
    import onnx

    graph = model.graph
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]  # element types changed (INT8 -> UINT8); let the runtime infer them again
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp))


def ort_int8_from_qdq(
    qdq_onnx: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    cpu: str | None = None,
    calibration: np.ndarray | None = None,
    group_channels: int = GROUP_CHANNELS,
    analyze: bool = True,
) -> dict[str, Any]:
    """Write the ONNX Runtime INT8 form of the Q/DQ ONNX ``qdq_onnx`` to ``out_path``; returns its info.

    ``cpu``: ``x86_64`` (UINT8 activations) or ``arm64`` (INT8 activations); None takes this machine's kind.
    ``calibration``: preprocessed images (float32 NCHW, e.g. the PTQ calibration images); needed only when the
    file leaves a tensor that an integer kernel reads unquantized (the residual placement's convolution outputs).
    ``analyze``: also open the artifact in ONNX Runtime and report what its optimised graph runs
    (:func:`integer_compute_share`). ``qdq_onnx`` is only read.
    """
    from edgeresnext.onnx_io import load_onnx_safely

    cpu = _checked_cpu(cpu)
    signed = cpu == "arm64"
    qdq_onnx, out_path = Path(qdq_onnx), Path(out_path)
    model = load_onnx_safely(qdq_onnx)
    initializers = {t.name: t for t in model.graph.initializer}
    qdq_params, remap, pair_nodes = _activation_quantizers(model.graph, initializers)
    if not qdq_params:
        raise ConfigError(f"{qdq_onnx}: no activation QuantizeLinear; expected the INT8 Q/DQ ONNX")
    graph = _FloatGraph.of(model.graph, initializers, remap, pair_nodes)
    # Decided on the float graph before _merge_groups renames the grouped convolutions' weights.
    float_layers, targets = graph.float_layers(), graph.quantization_targets()
    missing = graph.sources_without_quantizer(targets, qdq_params)
    ranges = _measured_ranges(qdq_onnx, missing, calibration)
    writer = _QDQWriter(_artifact_quantizers(graph, targets, qdq_params, ranges, signed), signed)
    kinds = Counter(_quantizer_kind(graph, t, qdq_params) for t in targets)
    merged, dense_weights = _merge_groups(graph.nodes, graph.producers, graph.consumers, initializers, group_channels)
    writer.initializers += dense_weights
    writer.add_qparams(targets)
    rebuilt = _rebuilt_nodes(graph, [i.name for i in model.graph.input], float_layers, writer)
    _save_rewritten(model, rebuilt, writer.initializers, out_path)
    info: dict[str, Any] = {
        "cpu": cpu,
        "activation_type": "int8" if signed else "uint8",
        "quantized_tensors": len(targets),
        "quantizers": dict(sorted(kinds.items())),
        "calibrated_tensors": len(missing),
        "calibration_images": 0 if calibration is None or not missing else len(calibration),
        "int32_biases": writer.biases,
        "group_channels": group_channels,
        "merged_grouped_convs": merged,
    }
    if analyze:
        info["runtime"] = integer_compute_share(out_path)
    logger.info(
        "ort int8 (%s): %d quantized tensors (%d calibrated), %d int32 biases",
        cpu,
        len(targets),
        len(missing),
        writer.biases,
    )
    return info


def _int32_bias(node, producers, initializers, input_params: QParams | None) -> tuple[np.ndarray, np.ndarray] | None:
    """INT32 bias and its scale (input scale x per-channel weight scale), or None when the weight is not INT8."""
    from onnx import numpy_helper

    weight_dq = producers.get(node.input[1])
    if input_params is None or weight_dq is None or weight_dq.op_type != "DequantizeLinear":
        return None
    if weight_dq.input[1] not in initializers:
        return None
    if len(weight_dq.input) > 2 and weight_dq.input[2] in initializers:
        if np.any(numpy_helper.to_array(initializers[weight_dq.input[2]])):
            return None  # an asymmetric weight: QLinearConv takes it, but keep the float bias path simple
    weight_scale = numpy_helper.to_array(initializers[weight_dq.input[1]]).astype(np.float32).reshape(-1)
    bias = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64).reshape(-1)
    if weight_scale.size not in (1, bias.size):
        return None
    scale = (np.float32(input_params.scale) * np.broadcast_to(weight_scale, bias.shape)).astype(np.float32)
    if not np.all(scale > 0):
        return None
    limit = np.iinfo(np.int32)
    values = np.clip(np.round(bias / scale.astype(np.float64)), limit.min, limit.max).astype(np.int32)
    return values, scale


def _merge_groups(nodes, producers, consumers, initializers, group_channels: int) -> tuple[dict[str, list[int]], list]:
    """Merge the groups of INT8 grouped convolutions, in place, until a group reads >= ``group_channels`` channels.

    ONNX Runtime's QLinearConv runs a grouped convolution as one small GEMM per group (output channels per group
    wide, 9 x input channels per group deep); below ~32 channels per group the packed kernels mostly multiply
    padding. Merging ``m`` neighbouring groups into one with block-diagonal weights (zeros between the original
    groups) costs ``m`` times the multiply-adds but runs them at full width. The result is exact: the zeros add
    nothing to the INT32 accumulators. Depthwise convolutions (one channel per group) have kernels of their own and
    are left alone. Returns ``{conv name: [groups before, groups after]}`` and the new weight initializers.
    """
    from onnx import helper, numpy_helper

    merged: dict[str, list[int]] = {}
    tensors: list[Any] = []
    if group_channels <= 1:
        return merged, tensors
    for node in nodes:
        groups = int(_attribute(node, "group", 1))
        if node.op_type != "Conv" or groups <= 1 or len(node.input) < 2:
            continue
        weight_dq = producers.get(node.input[1])
        if weight_dq is None or weight_dq.op_type != "DequantizeLinear" or weight_dq.input[0] not in initializers:
            continue
        if len(consumers.get(weight_dq.output[0], [])) != 1 or len(consumers.get(weight_dq.input[0], [])) != 1:
            continue
        weight = numpy_helper.to_array(initializers[weight_dq.input[0]])
        out_channels, in_per_group = weight.shape[:2]
        out_per_group = out_channels // groups
        if in_per_group == 1 and out_per_group == 1:
            continue
        factor = next((m for m in range(1, groups + 1) if groups % m == 0 and in_per_group * m >= group_channels), 1)
        if factor == 1:
            continue
        # Between the groups: the weight zero point (real value 0), per output channel.
        zero_point = np.zeros(out_channels, weight.dtype)
        if len(weight_dq.input) > 2 and weight_dq.input[2] in initializers:
            zero_point = np.broadcast_to(numpy_helper.to_array(initializers[weight_dq.input[2]]), (out_channels,))
        dense = np.empty((out_channels, in_per_group * factor, *weight.shape[2:]), dtype=weight.dtype)
        dense[:] = zero_point.reshape(-1, *[1] * (weight.ndim - 1))
        for channel in range(out_channels):
            offset = (channel // out_per_group % factor) * in_per_group
            dense[channel, offset : offset + in_per_group] = weight[channel]
        name = f"{weight_dq.input[0]}_ort_groups{groups // factor}"
        tensors.append(numpy_helper.from_array(dense, name))
        weight_dq.input[0] = name
        for attr in node.attribute:
            if attr.name == "group":
                attr.CopyFrom(helper.make_attribute("group", groups // factor))
        merged[node.name or node.output[0]] = [groups, groups // factor]
    return merged, tensors


def integer_compute_share(onnx_path: str | os.PathLike[str], threads: int = 1) -> dict[str, Any]:
    """What ONNX Runtime's CPU provider runs for ``onnx_path`` (optimisation level ``all``): integer vs float
    compute operators of its optimised graph and the share of convolutions that run as integer kernels."""
    from edgeresnext.onnx_io import ort_runtime_ops

    return ort_runtime_ops(onnx_path, threads)
