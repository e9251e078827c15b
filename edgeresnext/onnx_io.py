"""Reading ONNX files safely, and the facts about them every layer checks: the image input, the precision.

Below export, the TensorRT lint and the backends (all three read ONNX files from users): nothing here imports
them. :func:`check_external_data` runs before any parser (onnx, ONNX Runtime, OpenVINO, TensorRT) touches a
file's tensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgeresnext.errors import ConfigError, EdgeResNeXtError, ExportError


def _tensors_of(graph) -> list:
    """Every TensorProto in ``graph``: initializers, sparse initializers, Constant/attribute tensors, subgraphs."""
    from onnx import AttributeProto

    tensors = list(graph.initializer)
    for sparse in graph.sparse_initializer:
        tensors += [sparse.values, sparse.indices]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                tensors.append(attribute.t)
            elif attribute.type == AttributeProto.TENSORS:
                tensors += list(attribute.tensors)
            elif attribute.type == AttributeProto.GRAPH:
                tensors += _tensors_of(attribute.g)
            elif attribute.type == AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    tensors += _tensors_of(subgraph)
    return tensors


ONNX_ACCEPTED = "an ONNX model file (a protobuf ModelProto with a graph, as torch.onnx.export or onnx.save write)"


def check_onnx_file(path: str | os.PathLike[str]) -> list[Path]:
    """The one check every ONNX file from a user passes before any parser (onnx, ONNX Runtime, OpenVINO, TensorRT)
    or rule (lint) looks at it; returns the external data files (resolved).

    Refused with :class:`ExportError` naming the file and what is accepted: a missing path or a directory, an empty
    file, bytes that are not an ONNX protobuf (truncated, another format), a protobuf without a graph (an empty
    file parses as one), and external data leaving the model's folder (see :func:`check_external_data`).
    """
    path = Path(path)
    return _external_data_inside(path, _parsed_model(path))


def _parsed_model(path: Path):
    """``path`` parsed without its external data, refused as :func:`check_onnx_file` says unless it is a model."""
    import onnx

    if not path.exists():
        raise ExportError(f"{path}: ONNX model not found")
    if not path.is_file():
        raise ExportError(f"{path}: not a file; expected {ONNX_ACCEPTED}")
    if path.stat().st_size == 0:
        raise ExportError(f"{path}: empty file (0 bytes); expected {ONNX_ACCEPTED}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError, onnx's own errors, OSError
        said = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ExportError(f"{path}: not a readable ONNX model ({said}); expected {ONNX_ACCEPTED}") from err
    # Protobuf reads many short byte strings as a message of unknown fields: a model has a version and a graph.
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node or not model.graph.output:
        raise ExportError(
            f"{path}: not an ONNX model (no IR version, graph nodes or outputs; truncated or another format); "
            f"expected {ONNX_ACCEPTED}"
        )
    return model


def check_external_data(path: str | os.PathLike[str]) -> list[Path]:
    """Refuse an ONNX model whose external tensor data lies outside the model's own folder, before anything
    reads that data; returns the external data files (resolved). Also refuses what :func:`check_onnx_file` does.

    Refused: absolute locations, ``..`` components, and names (or symlinks) that resolve outside the folder.
    A model from another hand could otherwise make onnx, ONNX Runtime or OpenVINO read any file on the host.
    """
    return check_onnx_file(path)


def _external_data_inside(path: Path, model) -> list[Path]:
    from onnx import TensorProto

    folder = path.parent.resolve()
    found: list[Path] = []
    for tensor in _tensors_of(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        where = f"{path}: tensor {tensor.name!r} keeps its data in {location!r}"
        if not location or "\0" in location:
            raise ExportError(f"{where}: not a valid file name")
        relative = Path(location)
        if relative.is_absolute() or location.startswith(("/", "\\")) or ":" in relative.parts[0]:
            raise ExportError(f"{where}: an absolute path; external data must be a file inside {folder}")
        if ".." in relative.parts or ".." in location.replace("\\", "/").split("/"):
            raise ExportError(f"{where}: '..' leaves the model's folder; external data must stay inside {folder}")
        resolved = (folder / relative).resolve()
        if not resolved.is_relative_to(folder):
            raise ExportError(f"{where}: it resolves to {resolved} (a symlink leaving {folder}); refused")
        if not resolved.is_file():
            raise ExportError(f"{where}: no such file in {folder}")
        found.append(resolved)
    return sorted(set(found))


def load_onnx_safely(
    path: str | os.PathLike[str],
    load_external_data: bool = True,
    error: type[EdgeResNeXtError] = ExportError,
):
    """The one ``onnx.load`` of edgeresnext (a test keeps it so): every check of :func:`check_onnx_file` on the one
    parse, then the external data, which those checks keep inside the model's folder, unless
    ``load_external_data`` is False (graph facts only: names, shapes, operators).

    ``error``: the class a refused file raises, for callers whose users expect their own (a compile input that is
    not a model is a :class:`ConfigError`); the message is the same.
    """
    from onnx.external_data_helper import load_external_data_for_model

    path = Path(path)
    try:
        model = _parsed_model(path)
        _external_data_inside(path, model)
        if load_external_data:
            try:
                load_external_data_for_model(model, str(path.parent))
            except Exception as err:  # OSError, or onnx's own for a short file
                said = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ExportError(f"{path}: cannot read the ONNX model's external data ({said})") from err
    except ExportError as err:
        if error is ExportError:
            raise
        raise error(str(err)) from err
    return model


SHARED_MIN_BYTES = 1024  # smaller initializers (shapes, scales, zero points) stay inside each model
_SHARED_ALIGN = 64


def share_initializers(paths: list[Path], data_name: str) -> Path:
    """Store the initializers of the ONNX files ``paths`` (one folder) once, in one external data file ``data_name``
    beside them that each refers to by offset: a tensor of at least :data:`SHARED_MIN_BYTES` whose bytes another one
    already put there is not written again. The Jetson kit's models (the Q/DQ ONNX, its FP16 variant, DeepStream's)
    hold the same INT8 weights, so the bundle carries them once instead of three times. Each model is read back in
    full first (its external data too), so the call can be repeated as models are added; the models are then files
    ONNX Runtime, OpenVINO, onnx and TensorRT's parser (``parse_from_file``, trtexec ``--onnx``) read as before, with
    the data file beside them. Returns the data file."""
    import hashlib

    from onnx import TensorProto

    from edgeresnext.atomic import write_bytes_atomic

    folder = Path(paths[0]).parent
    if any(Path(path).parent != folder for path in paths):
        raise ValueError(f"share_initializers: {paths} are not in one folder")
    models = [load_onnx_safely(path) for path in paths]  # before the data file they may read is replaced
    offsets: dict[bytes, int] = {}
    chunks: list[bytes] = []
    size = 0
    for model in models:
        for tensor in model.graph.initializer:
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < SHARED_MIN_BYTES:
                continue
            data = tensor.raw_data
            digest = hashlib.sha256(data).digest()
            if digest not in offsets:
                padding = -size % _SHARED_ALIGN
                chunks += [b"\0" * padding, data]
                offsets[digest] = size + padding
                size += padding + len(data)
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", data_name), ("offset", offsets[digest]), ("length", len(data))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
    data_file = write_bytes_atomic(folder / data_name, b"".join(chunks))
    for path, model in zip(paths, models, strict=True):
        write_bytes_atomic(path, model.SerializeToString())
    return data_file


def onnx_input(onnx_path: str | Path) -> tuple[str, list[int | str]]:
    """Name and shape of the model's single image input (a dynamic dimension is its symbol, e.g. 'batch')."""
    model = load_onnx_safely(onnx_path, load_external_data=False, error=ConfigError)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise ConfigError(f"{onnx_path}: expected one image input, found {[value.name for value in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    if len(shape) != 4:
        raise ConfigError(f"{onnx_path}: input {inputs[0].name!r} has shape {shape}; expected NCHW (4-D)")
    return inputs[0].name, shape


def onnx_signature(onnx_path: str | Path) -> dict[str, Any]:
    """``input_name``, ``input_shape``, ``output_name``, ``output_shape`` of the first input and output
    (-1 for a dynamic dimension): what a bundle's manifest records."""
    graph = load_onnx_safely(onnx_path, load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]

    def dims(value) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]

    return {
        "input_name": inputs[0].name,
        "input_shape": dims(inputs[0]),
        "output_name": graph.output[0].name,
        "output_shape": dims(graph.output[0]),
    }


def check_onnx_precision(onnx_path: Path, precision: str) -> None:
    """An INT8 target needs Q/DQ nodes in the file; an FP32 target must not silently ship a quantized one."""
    graph = load_onnx_safely(onnx_path, load_external_data=False, error=ConfigError).graph
    ops = {node.op_type for node in graph.node}
    has_qdq = "QuantizeLinear" in ops or "DequantizeLinear" in ops
    if precision == "int8" and not has_qdq:
        raise ConfigError(
            f"{onnx_path}: target precision is int8 but the model has no QuantizeLinear/"
            "DequantizeLinear nodes; pass the Q/DQ ONNX from `edgeresnext quantize`"
        )
    if precision == "fp32" and has_qdq:
        raise ConfigError(
            f"{onnx_path}: target precision is fp32 but the model is quantized (Q/DQ nodes); pass the FP32 ONNX"
        )


GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def ort_session(
    model: str | os.PathLike[str] | bytes | object,
    threads: int | None = None,
    optimization: str = "all",
    optimized_model_path: str | os.PathLike[str] | None = None,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
):
    """The one place an ``onnxruntime.InferenceSession`` is made (export checks, quantize, backends, runtime).

    ``model``: a path, serialized bytes or an ``onnx.ModelProto``. ``threads``: intra-op threads (inter-op 1;
    None: ONNX Runtime's default). ``optimization``: graph optimisation level (:data:`GRAPH_OPTIMIZATION_LEVELS`;
    "all" is ONNX Runtime's own default). ``optimized_model_path``: where ONNX Runtime writes the graph it will
    run. ``providers``: execution providers in order of preference; those not available here are skipped (CPU
    last resort). Needs only onnxruntime (never onnx): device apps run it.
    """
    import onnxruntime as ort

    if optimization not in GRAPH_OPTIMIZATION_LEVELS:
        raise ConfigError(
            f"graph optimization {optimization!r}; expected one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVELS[optimization])
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    available = set(ort.get_available_providers())
    chosen = [name for name in providers if name in available] or ["CPUExecutionProvider"]
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    where = "the model" if isinstance(source, bytes) else str(source)
    try:
        return ort.InferenceSession(source if isinstance(source, bytes) else str(source), options, providers=chosen)
    except Exception as err:  # onnxruntime raises its own unexported exception types
        said = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ExportError(f"{where}: ONNX Runtime cannot load the model ({said})") from err


# Operators of an optimised ONNX Runtime graph: convolutions as integer or float kernels, and the other compute
# operators. The precision an ONNX Runtime artifact really runs is read from these, never from the file.
INTEGER_CONV_OPS = frozenset({"QLinearConv", "ConvInteger"})
FLOAT_CONV_OPS = frozenset({"Conv", "FusedConv", "NchwcConv"})
INTEGER_COMPUTE_OPS = INTEGER_CONV_OPS | {
    "QLinearMatMul",
    "MatMulInteger",
    "QGemm",
    "QLinearAdd",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "QLinearMul",
    "QLinearConcat",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
}
FLOAT_COMPUTE_OPS = FLOAT_CONV_OPS | {"Gemm", "MatMul", "FusedMatMul", "FusedGemm", "ConvTranspose"}


def ort_runtime_ops(
    model: str | os.PathLike[str],
    threads: int | None = None,
    optimization: str = "all",
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> dict[str, object]:
    """What ONNX Runtime runs for ``model`` with these session options: a session writes its optimised graph, whose
    compute operators are counted (integer vs float, and the share of convolutions that run as integer kernels)."""
    import tempfile
    from collections import Counter

    with tempfile.TemporaryDirectory(prefix="edgeresnext-ort-") as scratch:
        optimized = Path(scratch) / "optimized.onnx"
        ort_session(model, threads, optimization, optimized, providers)
        # Graph facts only, from the file ONNX Runtime just wrote: its tensors may still name a model's external data
        # file by its name relative to the model (a kit's model.weights), which is not in this folder.
        graph = _parsed_model(optimized).graph if optimized.is_file() else None
        ops = [node.op_type for node in graph.node] if graph is not None else []
    counts = Counter(ops)
    integer = {op: n for op, n in sorted(counts.items()) if op in INTEGER_COMPUTE_OPS}
    floats = {op: n for op, n in sorted(counts.items()) if op in FLOAT_COMPUTE_OPS}
    compute = sum(integer.values()) + sum(floats.values())
    integer_convs = sum(counts[op] for op in INTEGER_CONV_OPS)
    convs = integer_convs + sum(counts[op] for op in FLOAT_CONV_OPS)
    return {
        "int8_ops": integer,
        "float_ops": floats,
        "int8_fraction": round(sum(integer.values()) / compute, 4) if compute else 0.0,
        "integer_convs": integer_convs,
        "convs": convs,
        "integer_conv_fraction": round(integer_convs / convs, 4) if convs else 0.0,
    }
