"""OpenVINO (x86 CPU): IR (``.xml``/``.bin``) from the FP32 or the Q/DQ INT8 ONNX.

OpenVINO reads ``QuantizeLinear``/``DequantizeLinear`` pairs as ``FakeQuantize`` and its low-precision
transformations turn them into INT8 kernels when the CPU plugin compiles the model, so the IR of the Q/DQ
ONNX is the same INT8 model TensorRT gets. ``native_int8: true`` instead quantizes the FP32 IR with NNCF's
OpenVINO path (OpenVINO's own placement, unsigned activations after ReLU): faster on some CPUs, but no
longer the file the other backends run. The Runner reports which convolutions really run in INT8, read
from the compiled (runtime) model, never from the file.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgeresnext.backends.base import (
    Artifact,
    ArtifactInfo,
    Backend,
    PrecisionReport,
    Runner,
    RunOptions,
    TritonEntry,
)
from edgeresnext.errors import MAX_THREADS, ConfigError
from edgeresnext.onnx_io import check_onnx_precision, onnx_input
from edgeresnext.registry import option

if TYPE_CHECKING:
    from edgeresnext.config import Target

logger = logging.getLogger(__name__)

# Runtime-model layer types that carry the compute (the CPU plugin names them after its kernels).
COMPUTE_LAYERS = frozenset({"Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"})
INT8_PRECISIONS = frozenset({"i8", "u8"})


def ir_from_onnx(onnx_path: str | Path, xml_path: str | Path, batch: tuple[int, int] | None = None) -> Path:
    """Convert an ONNX model (FP32 or Q/DQ) to OpenVINO IR at ``xml_path`` (+ ``.bin``), written atomically.

    ``batch`` (min, max) fixes the batch dimension: one value makes a static shape (fastest on CPU), a range
    a bounded dynamic one. Weights stay FP32: FP16 compression would only round them for a CPU that
    decompresses them again.
    """
    import openvino as ov

    xml_path = Path(xml_path)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as err:  # the converter raises its own error types for unsupported graphs
        raise ConfigError(f"{onnx_path}: OpenVINO cannot convert this ONNX model ({err})") from err
    if batch is not None:
        _reshape_batch(model, batch)
    _save_ir_atomic(model, xml_path)
    return xml_path


def _reshape_batch(model: Any, batch: tuple[int, int]) -> None:
    import openvino as ov

    shape = model.input(0).get_partial_shape()
    dims = [shape[i] for i in range(shape.rank.get_length())]
    dims[0] = ov.Dimension(batch[0]) if batch[0] == batch[1] else ov.Dimension(batch[0], batch[1])
    model.reshape({model.input(0).get_any_name(): ov.PartialShape(dims)})


def _stable_names(model: Any) -> int:
    """Rename nodes that carry auto-generated names (``Constant_127222``) by graph position.

    Those numbers come from a process-wide counter, so the same ONNX converted after other work in the
    process would give a different .xml; named by position, two builds of the same inputs are byte-identical.
    """
    import re

    renamed = 0
    for index, op in enumerate(model.get_ordered_ops()):
        # Auto names are "<OpType>_<counter>" (a folded Reshape keeps "Reshape_N" on its Const); names from
        # the ONNX graph carry "/" or "::" and are kept.
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9]*_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_n{index}")
            renamed += 1
    return renamed


def _save_ir_atomic(model: Any, xml_path: Path) -> None:
    """Write ``.xml`` and ``.bin`` under temporary names, then rename both (bin first: the xml names it)."""
    import os

    import openvino as ov

    from edgeresnext.atomic import TMP_MARK, disk_full_as_storage_error

    xml_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_xml = xml_path.with_name(f".{xml_path.stem}{TMP_MARK}{os.getpid()}.xml")
    tmp_bin = tmp_xml.with_suffix(".bin")
    _stable_names(model)
    # The .bin holds the constants; OpenVINO's serializer reports a full disk only as "basic_ios::clear".
    weights = sum(op.get_byte_size() for op in model.get_ordered_ops() if op.get_type_name() == "Constant")
    try:
        with disk_full_as_storage_error(xml_path.with_suffix(".bin"), needed=weights):
            ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        # The xml refers to its weights by the bin's file name, so the final names must match it.
        os.replace(tmp_bin, xml_path.with_suffix(".bin"))
        os.replace(tmp_xml, xml_path)
    finally:
        for leftover in (tmp_xml, tmp_bin):
            if leftover.exists():
                leftover.unlink()


def native_int8_ir_from_onnx(
    onnx_path: str | Path,
    xml_path: str | Path,
    calibration: np.ndarray,
    subset_size: int = 300,
    batch: tuple[int, int] | None = None,
) -> Path:
    """FP32 ONNX -> OpenVINO INT8 IR quantized by ``nncf.quantize`` on the OpenVINO model (its defaults)."""
    import nncf
    import openvino as ov

    xml_path = Path(xml_path)
    model = ov.convert_model(str(onnx_path))
    if batch is not None:
        _reshape_batch(model, (1, batch[1]) if batch[0] != batch[1] else batch)
    samples = [calibration[i : i + 1] for i in range(len(calibration))]
    dataset = nncf.Dataset(samples)
    quantized = nncf.quantize(model, dataset, subset_size=min(subset_size, len(samples)))
    if batch is not None:
        _reshape_batch(quantized, batch)
    _save_ir_atomic(quantized, xml_path)
    return xml_path


@dataclass(frozen=True)
class OpenVINOOptions(RunOptions):
    """``backend_options.openvino``. ``device``: an OpenVINO device name (CPU, GPU, NPU, AUTO); ``cache_dir``: where
    OpenVINO keeps compiled models between loads (a path of this host: never taken from an artifact recorded
    elsewhere)."""

    hint: Literal["latency", "throughput"] = option("latency", recorded=True)
    threads: int | None = option(None, ge=1, le=MAX_THREADS, recorded=True)
    cache_dir: str | None = option(None, path=True)
    native_int8: bool = option(False, description="quantize the FP32 IR with NNCF instead of reading the Q/DQ ONNX")


def compile_config(options: OpenVINOOptions) -> dict[str, Any]:
    """Plugin properties for ``options`` (a target's ``backend_options.openvino``, or what the artifact recorded)."""
    import openvino.properties as props
    import openvino.properties.hint as hints

    mode = {"latency": hints.PerformanceMode.LATENCY, "throughput": hints.PerformanceMode.THROUGHPUT}
    import openvino as ov

    # Float layers run in FP32: CPUs with BF16 support would otherwise silently run "FP32" models in BF16,
    # and the accuracy proved on ONNX Runtime would no longer speak for this artifact.
    config: dict[str, Any] = {hints.performance_mode: mode[options.hint], hints.inference_precision: ov.Type.f32}
    if options.threads is not None:
        config[props.inference_num_threads] = options.threads
    return config


def inference_precision(compiled: Any) -> str | None:
    """The float precision the compiled model runs in (INFERENCE_PRECISION_HINT); None where the plugin lacks it."""
    try:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    except Exception:  # older plugins lack the property; the report just omits it
        return None


def runtime_precisions(compiled: Any) -> dict[str, Any]:
    """Which compute layers of the compiled model run in which precision (from ``get_runtime_model``)."""
    layers: list[dict[str, str]] = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer_type = str(info["layerType"].astype(str)) if "layerType" in info else op.get_type_name()
        if layer_type not in COMPUTE_LAYERS:
            continue
        precision = str(info["runtimePrecision"].astype(str)) if "runtimePrecision" in info else "unknown"
        layers.append({"name": op.get_friendly_name(), "type": layer_type, "precision": precision})
    counts = Counter(layer["precision"] for layer in layers)
    int8 = sum(n for p, n in counts.items() if p in INT8_PRECISIONS)
    return {
        "compute_layers": len(layers),
        "int8_layers": int8,
        "int8_fraction": round(int8 / len(layers), 4) if layers else 0.0,
        "by_precision": dict(sorted(counts.items())),
        "float_layers": [layer["name"] for layer in layers if layer["precision"] not in INT8_PRECISIONS],
        "layers": layers,
    }


class OpenVINORunner(Runner):
    def __init__(self, artifact: Artifact, options: OpenVINOOptions) -> None:
        import openvino as ov

        super().__init__(artifact, options)
        self.options: OpenVINOOptions = options
        core = ov.Core()
        if options.cache_dir:
            core.set_property({"CACHE_DIR": str(options.cache_dir)})
        model = core.read_model(str(artifact.path))
        shape = model.input(0).get_partial_shape()
        if shape[1:].is_static:
            self.input_shape = tuple(int(d.get_length()) for d in list(shape)[1:])
        batch = shape[0]
        # Batches outside the IR's batch dimension are split/padded by the base class (-1: unbounded).
        upper = batch.get_max_length()
        self.batch_range = (max(1, batch.get_min_length()), upper if upper > 0 else 1 << 16)
        self.compiled = core.compile_model(model, options.device, compile_config(options))
        self.request = self.compiled.create_infer_request()

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        import openvino as ov

        # A tensor over the caller's (contiguous) array and a plain infer() skip the per-call dict conversion and
        # result wrapping of request.infer({...}): ~50 us per call, a quarter of the latency of a small model, and
        # the gap to benchmark_app's figure for the same IR.
        self.request.set_input_tensor(ov.Tensor(batch, shared_memory=True))
        self.request.infer()
        return self.request.get_output_tensor(0).data.copy()

    def _bind_impl(self, batch: np.ndarray) -> Callable[[], object]:
        import openvino as ov

        # A request of its own, so runner() calls in between do not change the bound input.
        request = self.compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(batch, shared_memory=True))
        request.infer()
        output = request.get_output_tensor(0)  # the request's own buffer, written in place by each run

        def run(_keep_alive: np.ndarray = batch) -> np.ndarray:  # the request reads the array in place
            # A synchronous infer(), as benchmark_app -api sync: measured ~10 us (5 %) faster per call than
            # start_async() + wait() on the 0.25 ms Fashion-MNIST IR (2 cores), the thread hand-off saved.
            request.infer()
            return output.data

        return run

    def precision_report(self) -> PrecisionReport:
        counts = runtime_precisions(self.compiled)
        layers, fraction = counts.pop("layers"), counts.pop("int8_fraction")
        extra = {"device": self.options.device, "hint": self.options.hint, **counts}
        float_precision = inference_precision(self.compiled)
        warnings = []
        if float_precision is not None:
            extra["inference_precision"] = float_precision
            if "bf16" in float_precision.lower() or "bfloat16" in float_precision.lower():
                # The CPU plugin silently runs float layers in bf16 on CPUs with AVX512_BF16/AMX: say so.
                warnings.append(
                    "OpenVINO runs its float layers in bfloat16 on this CPU (INFERENCE_PRECISION_HINT); set it to "
                    "f32 for an FP32 comparison"
                )
        return PrecisionReport(
            precision=self.artifact.precision,
            backend=self.artifact.backend,
            int8_fraction=fraction,
            int8_count=f"{counts['int8_layers']}/{counts['compute_layers']} layers",
            warnings=warnings,
            extra=extra,
            layers=layers,
        )

    def close(self) -> None:
        self.request = None
        self.compiled = None


class OpenVINOBackend(Backend):
    """OpenVINO's IR (``.xml`` + ``.bin``) converted from the Q/DQ or FP32 ONNX, run by its CPU (GPU, NPU) plugin."""

    name = "openvino"
    display_name = "OpenVINO"
    kinds = ("ir",)
    suffixes = (".xml",)
    package = "openvino"
    devices = ("CPU", "GPU", "NPU", "AUTO")
    options_type = OpenVINOOptions
    float_baseline = "fp32"  # the FP32 IR, pinned to f32 like the INT8 one

    @classmethod
    def target_problem(cls, target: Target) -> str | None:
        if target.backend == cls.name and target.precision == "fp16":
            return "backend 'openvino' on CPU runs 'int8' or 'fp32'; fp16 is a TensorRT precision"
        return None

    def compile_input(self, target: Target) -> str:
        # Native INT8 quantizes the FP32 model with NNCF here, instead of reading the Q/DQ file.
        return "fp32" if self.compile_needs_calibration(target) else super().compile_input(target)

    def available(self) -> str | None:
        reason = super().available()
        if reason is None:
            import openvino as ov

            if "CPU" not in ov.Core().available_devices:
                return "OpenVINO finds no CPU device"
        return reason

    def io_signature(self, artifact: Artifact) -> dict[str, Any]:
        if artifact.kind != "ir":
            return super().io_signature(artifact)
        import openvino as ov

        model = ov.Core().read_model(str(artifact.path))

        def dims(port) -> list[int]:
            return [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]

        return {
            "input_name": model.inputs[0].get_any_name(),
            "input_shape": dims(model.inputs[0]),
            "output_name": model.outputs[0].get_any_name(),
            "output_shape": dims(model.outputs[0]),
        }

    def compile_needs_calibration(self, target: Target) -> bool:
        return target.precision == "int8" and target.backend_options.openvino.native_int8

    def triton_entry(self, artifact: Artifact) -> TritonEntry | None:
        xml = Path(artifact.path)
        return TritonEntry(files={"model.xml": xml, "model.bin": xml.with_suffix(".bin")}, backend="openvino")

    def _compile_impl(
        self, onnx_path: Path, target: Target, out_dir: Path, calibration: np.ndarray | None = None
    ) -> Artifact:
        options = target.backend_options.openvino
        batch = (target.input.batch.min, target.input.batch.max)
        xml = out_dir / "model.xml"
        _name, shape = onnx_input(onnx_path)
        info = ArtifactInfo(source_onnx=str(onnx_path), input_shape=shape)
        info.extra = {"batch": list(batch), "hint": options.hint, "threads": options.threads}
        info.extra["cache_dir"] = options.cache_dir
        if target.precision == "int8" and options.native_int8:
            check_onnx_precision(onnx_path, "fp32")
            if calibration is None or len(calibration) == 0:
                raise ConfigError(
                    f"{target.source or target.name}: backend_options.openvino.native_int8 quantizes the FP32 model "
                    "with NNCF here, which needs calibration= (a float32 NCHW array of preprocessed images)"
                )
            native_int8_ir_from_onnx(onnx_path, xml, calibration, target.quant.subset_size, batch)
            info.extra["int8_source"] = "nncf.quantize on the OpenVINO model (native INT8)"
        else:
            check_onnx_precision(onnx_path, target.precision)
            ir_from_onnx(onnx_path, xml, batch)
            info.extra["int8_source"] = "Q/DQ ONNX" if target.precision == "int8" else None
        logger.info("openvino: %s IR written to %s", target.precision, xml)
        return Artifact(
            backend=self.name,
            precision=target.precision,
            kind="ir",
            path=xml,
            files=[xml, xml.with_suffix(".bin")],
            info=info,
        )

    def _load_impl(self, artifact: Artifact, options: RunOptions) -> Runner:
        return OpenVINORunner(artifact, options)
