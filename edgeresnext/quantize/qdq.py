"""Rewrites of a Q/DQ ONNX graph that make NNCF's output a TensorRT-ready Q/DQ ONNX.

* :func:`signed_symmetric` turns every UINT8 or asymmetric activation quantizer into signed INT8 with
  zero point 0 (TensorRT rejects UINT8; NNCF emits it after ReLU). The scale is re-fitted so the
  calibrated range still fits: ``[0, 255*s]`` becomes ``[-127*s', 127*s']`` with ``s' = 255*s/127``.
* :func:`apply_residual_placement` makes each residual ``Add`` read its convolution branch unquantized
  and its skip branch through a Q/DQ pair: the placement TensorRT fuses into the INT8 convolution
  (Conv + Add + ReLU as one kernel) and OpenVINO's CPU plugin fuses as a convolution sum post-op.
* :func:`fp16_qdq_from_onnx` writes the FP16 variant a strongly typed TensorRT build reads (float parts in
  FP16, Q/DQ kept). The form ONNX Runtime's CPU provider runs as integer kernels is :mod:`.ort_int8`.
* :func:`module_name` maps an exported node name (``/layer1/layer1.0/conv1/Conv``) to the torch module
  name (``layer1.0.conv1``) so users can name layers either way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnext.errors import ConfigError

logger = logging.getLogger(__name__)

_INT8 = 3
# QuantizeLinear/DequantizeLinear take an FP16 scale (matching FP16 activations) from opset 19 on.
FP16_QDQ_MIN_OPSET = 19
FP16_MIN_NORMAL = 6.103515625e-05


def module_name(node_name: str) -> str:
    """``/layer1/layer1.0/downsample/downsample.0/Conv`` -> ``layer1.0.downsample.0`` (the torch module)."""
    parts = [p for p in node_name.strip("/").split("/")[:-1] if p]
    stack: list[str] = []
    for part in parts:
        if stack and part.startswith(stack[-1] + "."):
            # The exporter scopes Sequential children as "<parent attr>.<index>": it replaces the parent.
            stack[-1] = part
        else:
            stack.append(part)
    return ".".join(stack)


def _consumers(model) -> dict[str, list]:
    found: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _producers(model) -> dict[str, object]:
    return {out: node for node in model.graph.node for out in node.output}


def signed_symmetric(model) -> int:
    """Make every Q/DQ pair signed INT8 with zero point 0, in place; returns how many quantizers changed."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consumers = _consumers(model)
    changed = 0
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        zero_tensor, scale_tensor = inits[node.input[2]], inits.get(node.input[1])
        zero = numpy_helper.to_array(zero_tensor)
        if zero_tensor.data_type == _INT8 and not np.any(zero):
            continue
        if scale_tensor is None:
            continue
        scale = numpy_helper.to_array(scale_tensor).astype(np.float64)
        info = np.iinfo(zero.dtype)
        low = (info.min - zero.astype(np.float64)) * scale
        high = (info.max - zero.astype(np.float64)) * scale
        new_scale = (np.maximum(np.abs(low), np.abs(high)) / 127.0).astype(np.float32)
        new_zero = np.zeros_like(zero, dtype=np.int8)
        # The Q and its DQ share the scale/zero-point initializers; other users get fresh copies untouched.
        users = consumers.get(node.input[2], []) + consumers.get(node.input[1], [])
        pair = {id(node)} | {id(c) for c in consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"}
        if any(id(u) not in pair for u in users):
            suffix = f"_s8_{changed}"
            scale_name, zero_name = node.input[1] + suffix, node.input[2] + suffix
            model.graph.initializer.append(numpy_helper.from_array(new_scale, scale_name))
            model.graph.initializer.append(numpy_helper.from_array(new_zero, zero_name))
            for user in (n for n in model.graph.node if id(n) in pair):
                user.input[1], user.input[2] = scale_name, zero_name
        else:
            scale_tensor.CopyFrom(numpy_helper.from_array(new_scale, scale_tensor.name))
            zero_tensor.CopyFrom(numpy_helper.from_array(new_zero, zero_tensor.name))
        changed += 1
    return changed


def normalize_weight_axes(model) -> None:
    """Write negative ``axis`` attributes of weight DequantizeLinear nodes as non-negative (same meaning)."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        rank = len(inits[node.input[0]].dims)
        for attr in node.attribute:
            if attr.name == "axis" and attr.i < 0:
                attr.i += rank


def apply_residual_placement(model) -> int:
    """Drop the Q/DQ between a Conv and the residual Add it feeds (keeping the skip input's Q/DQ), in place.

    Returns the number of Adds rewritten. An Add is rewritten only when both inputs arrive through
    DequantizeLinear and exactly one of them quantizes a Conv output used by nothing else.
    """
    producers = _producers(model)
    consumers = _consumers(model)
    removed = []
    rewritten = 0
    for add in model.graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        branches = []
        for position, tensor in enumerate(add.input):
            dq = producers.get(tensor)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            source = producers.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            branches.append((position, dq, q, source))
        if any(b[1] is None or b[2] is None for b in branches):
            continue
        conv_branches = [
            b
            for b in branches
            if b[3] is not None
            and b[3].op_type == "Conv"
            and len(consumers.get(b[2].input[0], [])) == 1
            and len(consumers.get(b[1].output[0], [])) == 1
            and len(consumers.get(b[2].output[0], [])) == 1
        ]
        if len(conv_branches) == 2:
            # Downsample block: both inputs are convolutions; keep the skip (downsample) one quantized.
            conv_branches = [b for b in conv_branches if "downsample" not in b[3].name][:1] or conv_branches[:1]
        if len(conv_branches) != 1:
            continue
        position, dq, q, source = conv_branches[0]
        add.input[position] = q.input[0]
        removed += [id(dq), id(q)]
        rewritten += 1
    if removed:
        keep = [n for n in model.graph.node if id(n) not in set(removed)]
        del model.graph.node[:]
        model.graph.node.extend(keep)
        _drop_unused_initializers(model)
    return rewritten


def _drop_unused_initializers(model) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def remove_quantizers_of(model, node_names: set[str], float_weights: dict[str, np.ndarray] | None = None) -> list[str]:
    """Leave the named Conv/Gemm nodes in float: drop the Q/DQ on their activation input and give them float
    weights: ``float_weights[node name]`` (the FP32 model's, see :func:`float_weights_of`) when given, else the
    dequantized INT8 weights. Returns the names actually changed (fallback)."""
    from onnx import numpy_helper

    producers = _producers(model)
    inits = {t.name: t for t in model.graph.initializer}
    changed = []
    for node in model.graph.node:
        if node.name not in node_names:
            continue
        for position, tensor in enumerate(list(node.input[:2])):
            dq = producers.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in inits:  # weight: fold the DQ into a float initializer
                if float_weights is not None and node.name in float_weights:
                    name = f"{dq.input[0]}_fp32"
                    model.graph.initializer.append(numpy_helper.from_array(float_weights[node.name], name))
                    node.input[position] = name
                    continue
                weight = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32)
                scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % weight.ndim
                shape = [1] * weight.ndim
                shape[axis] = -1
                value = weight * (scale.reshape(shape) if scale.size > 1 else scale)
                name = f"{dq.input[0]}_float"
                model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
                node.input[position] = name
            else:
                q = producers.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    node.input[position] = q.input[0]
        changed.append(node.name)
    if changed:
        used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
        # Drop Q/DQ nodes nobody reads any more (repeat: a Q is orphaned once its DQ goes).
        for _ in range(2):
            keep = [
                n
                for n in model.graph.node
                if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or any(o in used for o in n.output)
            ]
            del model.graph.node[:]
            model.graph.node.extend(keep)
            used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
        _drop_unused_initializers(model)
    return changed


def quantized_layers(model) -> list[str]:
    """Names of Conv/Gemm/MatMul nodes whose weights are quantized (candidates for fallback), in graph order."""
    producers = _producers(model)
    names = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1:
            dq = producers.get(node.input[1])
            if dq is not None and dq.op_type == "DequantizeLinear":
                names.append(node.name)
    return names


def float_weights_of(fp32_model) -> dict[str, np.ndarray]:
    """Weight tensors of the FP32 ONNX by node name (NNCF keeps node names, so they match the Q/DQ model's)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in fp32_model.graph.initializer}
    return {
        node.name: numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        for node in fp32_model.graph.node
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in inits
    }


def _cast_port(graph, value, side: str):
    """Rename the graph's ``side`` ("input"/"output") ``value`` to ``<name>_fp16`` where nodes use it, and return
    the Cast that joins the FP32 port to the FP16 body."""
    from onnx import TensorProto, helper

    half_name = f"{value.name}_fp16"
    for node in graph.node:
        ports = node.input if side == "input" else node.output
        for i, name in enumerate(ports):
            if name == value.name:
                ports[i] = half_name
    if side == "input":
        return helper.make_node("Cast", [value.name], [half_name], to=TensorProto.FLOAT16, name=f"{value.name}_to_fp16")
    return helper.make_node("Cast", [half_name], [value.name], to=TensorProto.FLOAT, name=f"{value.name}_to_fp32")


def raise_tiny_scales(graph) -> int:
    """Raise every FP32 Q/DQ scale below FP16's smallest normal number (2**-14, zeros included) to it, in place, and
    requantize the INT8 weights that a DequantizeLinear reads with it (``q' = round(q * s / 2**-14)``), so each
    weight keeps its value up to one new quantization step. An FP16 scale that is subnormal or zero is what
    TensorRT reads as a broken layer; an activation pair just gets the coarser step. Returns how many scale values
    were raised."""
    from onnx import TensorProto, numpy_helper

    initializers = {init.name: init for init in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    raised = 0
    for scale_name in dict.fromkeys(
        node.input[1]
        for node in graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 1
    ):
        init = initializers.get(scale_name)
        if init is None or init.data_type != TensorProto.FLOAT:
            continue
        scale = numpy_helper.to_array(init)
        tiny = np.abs(scale) < FP16_MIN_NORMAL
        if not tiny.any():
            continue
        new_scale = np.where(tiny, np.float32(FP16_MIN_NORMAL), scale).astype(np.float32)
        for node in graph.node:
            weight = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
            if weight is None or node.input[1] != scale_name:
                continue
            values = numpy_helper.to_array(weight)
            if values.dtype.kind not in "iu":
                continue
            ratio = (np.abs(scale) / new_scale).astype(np.float64)
            if ratio.size > 1:
                axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 1) % values.ndim
                shape = [1] * values.ndim
                shape[axis] = ratio.size
                ratio = ratio.reshape(shape)
            limits = np.iinfo(values.dtype)
            requantized = np.clip(np.rint(values * ratio), limits.min, limits.max).astype(values.dtype)
            name = weight.name
            if uses.get(name, 0) > 1:  # shared with another reader: give this one its own copy
                name = f"{weight.name}_fp16_normal_scale"
                node.input[0] = name
                graph.initializer.append(numpy_helper.from_array(requantized, name))
                initializers[name] = graph.initializer[-1]
            else:
                weight.CopyFrom(numpy_helper.from_array(requantized, name))
        init.CopyFrom(numpy_helper.from_array(new_scale, scale_name))
        raised += int(np.count_nonzero(tiny))
    return raised


def _at_fp16_qdq_opset(model, onnx_path: str | Path) -> tuple[Any, int]:
    """``model`` converted to opset 19 when lower (FP16 Q/DQ scales need it), and its opset before."""
    import onnx

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < FP16_QDQ_MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, FP16_QDQ_MIN_OPSET)
        except Exception as err:  # the converter raises plain RuntimeError/ValueError on unsupported graphs
            raise ConfigError(
                f"{onnx_path}: cannot raise opset {opset} to {FP16_QDQ_MIN_OPSET} for FP16 Q/DQ scales ({err})"
            ) from err
    return model, opset


def _initializers_to_fp16(graph, scale_names: set[str], onnx_path: str | Path) -> dict[str, Any]:
    """Every FP32 initializer stored as FP16, in place; the count and what the rounding did to the Q/DQ scales."""
    from onnx import TensorProto, numpy_helper

    cast_count, scale_rel_error, subnormal_scales = 0, 0.0, 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if init.name in scale_names:
            nonzero = values != 0
            if nonzero.any():
                rel = np.abs(half[nonzero].astype(np.float32) - values[nonzero]) / np.abs(values[nonzero])
                scale_rel_error = max(scale_rel_error, float(rel.max()))
            subnormal_scales += int(np.count_nonzero(np.abs(values[nonzero]) < FP16_MIN_NORMAL))
        elif np.isfinite(values).all() and np.abs(values).max(initial=0) > 65504:
            raise ConfigError(f"{onnx_path}: initializer {init.name!r} holds values beyond FP16's range (65504)")
        init.CopyFrom(numpy_helper.from_array(half, init.name))
        cast_count += 1
    return {
        "float_tensors_cast": cast_count,
        "max_scale_rel_error": scale_rel_error,
        "subnormal_scales": subnormal_scales,
    }


def _attributes_to_fp16(graph) -> None:
    """``Cast(to=FLOAT)`` casts to FLOAT16 and FP32 tensor attributes (Constant values) are FP16, in place."""
    import onnx
    from onnx import TensorProto, numpy_helper

    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))


def _keep_float32_interface(graph) -> None:
    """A ``Cast`` at each FP32 input and output: runtimes and device apps feed float32 images."""
    from onnx import TensorProto

    float_inputs = [value for value in graph.input if value.type.tensor_type.elem_type == TensorProto.FLOAT]
    heads = [_cast_port(graph, value, "input") for value in float_inputs]
    float_outputs = [value for value in graph.output if value.type.tensor_type.elem_type == TensorProto.FLOAT]
    tails = [_cast_port(graph, value, "output") for value in float_outputs]
    nodes = heads + list(graph.node) + tails
    del graph.node[:]
    graph.node.extend(nodes)
    # Intermediate types are stale now; shape inference recomputes them.
    del graph.value_info[:]


def fp16_qdq_from_onnx(onnx_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Write an FP16 variant of an ONNX model (FP32 or Q/DQ INT8): every float tensor becomes FP16, the
    model's inputs and outputs stay FP32 (a ``Cast`` at each end), INT8 weights and zero points are untouched.

    For a strongly typed TensorRT build this is what makes the layers left out of INT8 run in FP16. Q/DQ
    scales are kept (same values, same per-channel axes) but stored as FP16, because ONNX requires a
    QuantizeLinear's scale to have its input's type; the returned dict says how much that rounding moved the
    scales. A scale below FP16's smallest normal number is raised to it first (:func:`raise_tiny_scales`, count in
    ``raised_scales``), so every FP16 scale is a normal number. The opset is raised to 19 when lower (FP16 scales).
    """
    import onnx

    from edgeresnext.atomic import atomic_path
    from edgeresnext.onnx_io import load_onnx_safely

    model, opset = _at_fp16_qdq_opset(load_onnx_safely(onnx_path), onnx_path)
    graph = model.graph
    raised_scales = raise_tiny_scales(graph)
    scale_names = {
        node.input[1]
        for node in graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 1
    }
    cast = _initializers_to_fp16(graph, scale_names, onnx_path)
    _attributes_to_fp16(graph)
    _keep_float32_interface(graph)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    except Exception as err:  # onnx raises InferenceError/ValidationError subclasses
        raise ConfigError(f"{onnx_path}: the FP16 variant does not validate ({err})") from err
    with atomic_path(Path(out_path)) as tmp:
        onnx.save(model, str(tmp))
    if raised_scales:
        logger.info(
            "%s: %d Q/DQ scales below FP16's smallest normal number (%.3g) raised to it in the FP16 variant, their "
            "INT8 weights requantized",
            onnx_path,
            raised_scales,
            FP16_MIN_NORMAL,
        )
    return {
        "opset": max(opset, FP16_QDQ_MIN_OPSET),
        "float_tensors_cast": cast["float_tensors_cast"],
        "qdq_scales": len(scale_names),
        "max_scale_rel_error": cast["max_scale_rel_error"],
        "subnormal_scales": cast["subnormal_scales"],
        "raised_scales": raised_scales,
    }
