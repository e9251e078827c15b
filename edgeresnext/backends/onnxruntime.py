"""ONNX Runtime (CPU execution provider): the generic backend for CPUs and ARM boards without OpenVINO.

The artifact is the ONNX file itself (FP32, the Q/DQ INT8 model, or its FP16 Q/DQ variant); what the
target adds is how the session runs it: graph optimisation level and intra-op threads. ONNX Runtime fuses
``DequantizeLinear -> Conv -> QuantizeLinear`` into integer kernels (``QLinearConv``) only at the
``extended``/``all`` levels, so the precision report reads the *optimised* graph, not the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from edgeresnext.backends import Runner, RunOptions
from edgeresnext.backends.base import (
    Artifact,
    ArtifactInfo,
    Backend,
    PrecisionReport,
    TritonEntry,
    copy_file_atomic,
)
from edgeresnext.errors import MAX_THREADS, ConfigError
from edgeresnext.onnx_io import check_onnx_precision, onnx_input, ort_runtime_ops, ort_session
from edgeresnext.registry import option

if TYPE_CHECKING:
    from edgeresnext.config import Target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ONNXRuntimeOptions(RunOptions):
    """``backend_options.onnxruntime``. ``device``: CPU, or GPU (CUDA execution provider when this onnxruntime has
    it, else CPU)."""

    graph_optimization: Literal["disable", "basic", "extended", "all"] = option("all", recorded=True)
    threads: int | None = option(None, ge=1, le=MAX_THREADS, recorded=True)
    int8_form: Literal["ort", "qdq"] = option(
        "ort",
        description="ort: the Q/DQ form ONNX Runtime's CPU provider runs as integer kernels, made from the Q/DQ "
        "ONNX's scales (quantize/ort_int8.py; validated on its own); qdq: the Q/DQ ONNX as it is",
    )
    cpu: Literal["x86_64", "arm64"] | None = option(
        None, description="the CPU kind the ONNX Runtime INT8 form is for (None: the build machine's)"
    )

    @property
    def providers(self) -> tuple[str, ...]:
        if (self.device or "CPU").upper() == "GPU":
            return ("CUDAExecutionProvider", "CPUExecutionProvider")
        return ("CPUExecutionProvider",)


class ONNXRuntimeRunner(Runner):
    """One ONNX Runtime session. Needs only onnxruntime (the device runtime has no onnx package); the precision
    report, which reads the optimised graph with onnx, is made on first request."""

    def __init__(self, artifact: Artifact, options: ONNXRuntimeOptions) -> None:
        super().__init__(artifact, options)
        self.options: ONNXRuntimeOptions = options
        self.session = ort_session(
            artifact.path, options.threads, options.graph_optimization, providers=options.providers
        )
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ConfigError(
                f"{artifact.path}: expected one NCHW image input, found "
                f"{[(value.name, value.shape) for value in inputs]}"
            )
        self.input_name = inputs[0].name
        shape = inputs[0].shape  # ints, or a name/None for a dynamic dimension
        if all(isinstance(d, int) for d in shape[1:]):
            self.input_shape = tuple(shape[1:])
        if isinstance(shape[0], int):
            self.batch_range = (shape[0], shape[0])
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        self._report: PrecisionReport | None = None

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

    def precision_report(self) -> PrecisionReport:
        if self._report is None:
            options = self.options
            ops = ort_runtime_ops(self.artifact.path, options.threads, options.graph_optimization, options.providers)
            fraction = ops.pop("int8_fraction")
            self._report = PrecisionReport(
                precision=self.artifact.precision,
                backend=self.artifact.backend,
                int8_fraction=fraction,
                int8_count=f"{ops['integer_convs']}/{ops['convs']} convs",
                extra={"graph_optimization": options.graph_optimization, **ops},
            )
        return self._report

    def close(self) -> None:
        self.session = None


class ONNXRuntimeBackend(Backend):
    """ONNX Runtime's CPU (or CUDA) provider: the FP32 ONNX as it is, or for INT8 its own Q/DQ form made from the
    Q/DQ ONNX's scales (``int8_form: ort``), which its CPU provider runs as integer kernels."""

    name = "onnxruntime"
    display_name = "ONNX Runtime"
    kinds = ("onnx",)
    suffixes = (".onnx",)
    package = "onnxruntime"
    devices = ("CPU", "GPU")
    options_type = ONNXRuntimeOptions
    float_baseline = None  # the FP32 ONNX row validation always runs in ONNX Runtime

    def runs_source_as_is(self, artifact: Artifact) -> bool:
        # The FP32 ONNX or the Q/DQ file copied unchanged: validation runs that very file as its own row.
        return artifact.precision in ("fp32", "int8") and not artifact.info.extra.get("differs_from_source")

    def triton_entry(self, artifact: Artifact) -> TritonEntry | None:
        # Triton's ONNX Runtime backend (onnxruntime_backend README: intra_op_thread_count).
        threads = artifact.info.extra.get("threads")
        return TritonEntry(
            files={"model.onnx": Path(artifact.path)},
            platform="onnxruntime_onnx",
            parameters={"intra_op_thread_count": str(threads)} if threads else {},
        )

    def compile_needs_calibration(self, target: Target) -> bool:
        # The ONNX Runtime INT8 form calibrates the tensors the Q/DQ ONNX leaves unquantized (residual placement).
        return target.precision == "int8" and target.backend_options.onnxruntime.int8_form == "ort"

    def _compile_impl(
        self, onnx_path: Path, target: Target, out_dir: Path, calibration: np.ndarray | None = None
    ) -> Artifact:
        from edgeresnext.quantize.qdq import fp16_qdq_from_onnx

        _name, shape = onnx_input(onnx_path)
        dest = out_dir / "model.onnx"
        options = target.backend_options.onnxruntime
        info = ArtifactInfo(source_onnx=str(onnx_path), input_shape=shape)
        info.extra = {"graph_optimization": options.graph_optimization, "threads": options.threads}
        if target.precision == "fp16":
            info.extra["fp16"] = fp16_qdq_from_onnx(onnx_path, dest)
        elif self.compile_needs_calibration(target):
            from edgeresnext.quantize.ort_int8 import ort_int8_from_qdq

            check_onnx_precision(onnx_path, "int8")
            form = ort_int8_from_qdq(onnx_path, dest, cpu=options.cpu, calibration=calibration)
            info.extra["int8_form"] = {k: v for k, v in form.items() if k != "runtime"}
            # Not the Q/DQ ONNX any more: validation must run this artifact, not the Q/DQ ONNX.
            info.extra["differs_from_source"] = True
        elif onnx_path.resolve() != dest.resolve():
            copy_file_atomic(onnx_path, dest)
        check_onnx_precision(dest, target.precision)
        logger.info("onnxruntime: %s model ready at %s", target.precision, dest)
        return Artifact(backend=self.name, precision=target.precision, kind="onnx", path=dest, files=[dest], info=info)

    def _load_impl(self, artifact: Artifact, options: RunOptions) -> Runner:
        return ONNXRuntimeRunner(artifact, options)
