"""ONNX Runtime (CPU execution provider): the generic backend for CPUs and ARM boards without OpenVINO.

The artifact is the ONNX file itself (FP32, the Q/DQ INT8 model, or its FP16 Q/DQ variant); what the
target adds is how the session runs it: graph optimisation level and intra-op threads. ONNX Runtime fuses
``DequantizeLinear -> Conv -> QuantizeLinear`` into integer kernels (``QLinearConv``) only at the
``extended``/``all`` levels, so the precision report reads the *optimised* graph, not the file.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnext.backends.base import (
    Artifact,
    Backend,
    Runner,
    copy_file_atomic,
)
from edgeresnext.errors import BackendUnavailable
from edgeresnext.onnx_io import check_onnx_precision, onnx_input

if TYPE_CHECKING:
    from edgeresnext.config import ONNXRuntimeOptions, Target

logger = logging.getLogger(__name__)

# Operators of an optimised ONNX Runtime graph that compute in integers.
INT8_OPS = frozenset(
    {
        "QLinearConv",
        "ConvInteger",
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
)
# Float operators that carry the model's compute (convolutions and dense layers).
FLOAT_COMPUTE_OPS = frozenset(
    {"Conv", "FusedConv", "NchwcConv", "Gemm", "MatMul", "FusedMatMul", "FusedGemm", "ConvTranspose"}
)

_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def session_options(options: ONNXRuntimeOptions, optimized_model_path: Path | None = None) -> Any:
    """``onnxruntime.SessionOptions`` for a target's ``backend_options.onnxruntime``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[options.graph_optimization])
    if options.threads is not None:
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    so.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    return so


def count_compute_ops(op_types: list[str]) -> dict[str, Any]:
    """Integer vs float compute operators of an (optimised) graph."""
    counts = Counter(op_types)
    int8 = {op: n for op, n in sorted(counts.items()) if op in INT8_OPS}
    float_ops = {op: n for op, n in sorted(counts.items()) if op in FLOAT_COMPUTE_OPS}
    total = sum(int8.values()) + sum(float_ops.values())
    return {
        "int8_ops": int8,
        "float_ops": float_ops,
        "int8_fraction": round(sum(int8.values()) / total, 4) if total else 0.0,
    }


def ort_qdq_from_onnx(onnx_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """A Q/DQ variant that ONNX Runtime's CPU provider runs with integer kernels.

    TensorRT needs signed INT8 activations with zero point 0. After a ReLU that leaves ``Conv -> Relu -> Q``,
    which ONNX Runtime cannot fuse (it drops a ReLU only when the quantizer's zero point is the type's minimum).
    Here each such quantizer (and its DequantizeLinear partners) becomes UINT8 with zero point 0 and the same
    scale: identical for activations up to 127 x scale (the calibrated range), and no longer clipped above it.
    ONNX Runtime then removes the ReLU and fuses ``DQ -> Conv -> Q`` into ``QLinearConv``.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    from edgeresnext.atomic import atomic_path

    model = onnx.load(str(onnx_path))
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {init.name: init for init in graph.initializer}
    rewritten = 0
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        producer = producers.get(node.input[0])
        zero_point = initializers.get(node.input[2])
        if producer is None or producer.op_type != "Relu" or zero_point is None:
            continue
        values = numpy_helper.to_array(zero_point)
        if zero_point.data_type != TensorProto.INT8 or values.any():
            continue
        unsigned = f"{node.input[2]}_uint8"
        if unsigned not in initializers:
            initializers[unsigned] = numpy_helper.from_array(np.zeros(values.shape, np.uint8), unsigned)
            graph.initializer.append(initializers[unsigned])
        node.input[2] = unsigned
        for consumer in consumers.get(node.output[0], []):
            if consumer.op_type == "DequantizeLinear" and len(consumer.input) > 2:
                consumer.input[2] = unsigned
        rewritten += 1
    # Types recorded for the rewritten tensors are stale (INT8 -> UINT8); the runtime infers them again.
    del graph.value_info[:]
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp))
    return {"unsigned_after_relu": rewritten}


class ONNXRuntimeRunner(Runner):
    def __init__(self, artifact: Artifact, options: ONNXRuntimeOptions) -> None:
        import onnx
        import onnxruntime as ort

        self.options = options
        name, shape = onnx_input(artifact.path)
        super().__init__(
            artifact,
            input_shape=tuple(int(d) for d in shape[1:]) if all(isinstance(d, int) for d in shape[1:]) else None,
        )
        if isinstance(shape[0], int):
            self.batch_range = (shape[0], shape[0])
        self.input_name = name
        # Let ORT write the graph it will actually run, so the precision report describes the runtime model.
        with tempfile.TemporaryDirectory(prefix="edgeresnext-ort-") as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            self.session = ort.InferenceSession(
                str(artifact.path), session_options(options, optimized), providers=["CPUExecutionProvider"]
            )
            runtime_ops = [node.op_type for node in onnx.load(str(optimized)).graph.node] if optimized.is_file() else []
        self._report = count_compute_ops(runtime_ops)
        self.input_dtype = np.float16 if self.session.get_inputs()[0].type == "tensor(float16)" else np.float32

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: batch.astype(self.input_dtype, copy=False)})
        return logits

    def _bind_impl(self, batch: np.ndarray) -> Callable[[], object]:
        session = self.session
        bound = np.ascontiguousarray(batch.astype(self.input_dtype, copy=False))
        (first,) = session.run(None, {self.input_name: bound})
        out = np.empty_like(first)  # ORT writes every run's logits here: no allocation per run
        binding = session.io_binding()
        binding.bind_cpu_input(self.input_name, bound)
        binding.bind_output(session.get_outputs()[0].name, "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)

        def run(_keep_alive: np.ndarray = bound) -> np.ndarray:  # ORT reads the bound input in place
            session.run_with_iobinding(binding)
            return out

        return run

    def precision_report(self) -> dict[str, Any]:
        return {
            "precision": self.artifact.precision,
            "backend": "onnxruntime",
            "graph_optimization": self.options.graph_optimization,
            **self._report,
        }

    def close(self) -> None:
        self.session = None


class ONNXRuntimeBackend(Backend):
    name = "onnxruntime"
    kinds = ("onnx",)
    suffixes = (".onnx",)
    package = "onnxruntime"

    def threads(self, target: Target) -> int | None:
        return target.backend_options.onnxruntime.threads

    def available(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            return f"onnxruntime is not installed ({err}); pip install onnxruntime"
        return None

    def _compile_impl(self, onnx_path: Path, target: Target, out_dir: Path) -> Artifact:
        reason = self.available()
        if reason is not None:
            raise BackendUnavailable(reason)
        _name, shape = onnx_input(onnx_path)
        dest = out_dir / "model.onnx"
        info: dict[str, Any] = {
            "source_onnx": str(onnx_path),
            "input_shape": shape,
            "graph_optimization": target.backend_options.onnxruntime.graph_optimization,
            "threads": target.backend_options.onnxruntime.threads,
        }
        if target.precision == "fp16":
            from edgeresnext.backends.tensorrt import fp16_qdq_from_onnx

            info["fp16"] = fp16_qdq_from_onnx(onnx_path, dest)
        elif target.precision == "int8" and target.backend_options.onnxruntime.unsigned_after_relu:
            check_onnx_precision(onnx_path, "int8")
            info.update(ort_qdq_from_onnx(onnx_path, dest))
            # Not the hand-off file any more: validation must run this artifact, not the Q/DQ ONNX.
            info["differs_from_source"] = True
        elif onnx_path.resolve() != dest.resolve():
            copy_file_atomic(onnx_path, dest)
        check_onnx_precision(dest, target.precision)
        logger.info("onnxruntime: %s model ready at %s", target.precision, dest)
        return Artifact(backend=self.name, precision=target.precision, kind="onnx", path=dest, files=[dest], info=info)

    def _load_impl(self, artifact: Artifact, target: Target | None) -> Runner:
        from edgeresnext.config import ONNXRuntimeOptions

        options = (
            target.backend_options.onnxruntime
            if target is not None
            else ONNXRuntimeOptions(
                **{k: v for k, v in artifact.info.items() if k in ("graph_optimization", "threads")}
            )
        )
        return ONNXRuntimeRunner(artifact, options)
