"""Running a serialized engine: TensorRT 10/11 name-based I/O (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) on a CUDA stream of its own, device memory through cuda-python. Engines run only on the
TensorRT version and GPU that built them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnext.backends.base import Artifact, PrecisionReport, Runner, RunOptions
from edgeresnext.backends.tensorrt.engine import cuda_check, import_cudart, import_tensorrt, trt_logger
from edgeresnext.backends.tensorrt.kit import rebuild_hint
from edgeresnext.backends.tensorrt.seal import release
from edgeresnext.errors import BackendUnavailable, ConfigError, EdgeResNeXtError


def engine_mismatch(recorded: dict[str, Any], here: dict[str, Any]) -> str | None:
    """What keeps an engine built as ``recorded`` says (``tensorrt_version``, ``gpu_sm``, ``gpu_name``) from running
    ``here`` (:func:`~edgeresnext.backends.tensorrt.engine.device_facts`), or None. TensorRT versions compare by
    major.minor.patch; the GPU by SM (compute capability). A record without a field is not held against it."""
    differs = []
    built, running = recorded.get("tensorrt_version"), here.get("tensorrt_version")
    if built and running and release(str(built)) != release(str(running)):
        differs.append("the TensorRT version")
    built_sm, running_sm = recorded.get("gpu_sm"), here.get("gpu_sm")
    if built_sm and running_sm and str(built_sm) != str(running_sm):
        differs.append("the GPU's SM")
    if not differs:
        return None
    return (
        f"built with TensorRT {built or '?'} for {recorded.get('gpu_name') or '?'} (SM {built_sm or '?'}), but this "
        f"device runs TensorRT {running or '?'} on {here.get('gpu_name') or '?'} (SM {running_sm or '?'}): "
        f"{' and '.join(differs)} differ{'s' if len(differs) == 1 else ''}"
    )


class TensorRTRunner(Runner):
    """Executes an engine with ``execute_async_v3``. Device buffers are allocated on first use, grown when a
    larger batch comes, kept between calls, and freed by :meth:`close`."""

    def __init__(self, artifact: Artifact, options: RunOptions | None = None) -> None:
        super().__init__(artifact, options)
        trt = import_tensorrt()
        self._trt = trt
        self._cudart = import_cudart()
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self.stream = None
        self._logger = trt_logger(trt)
        self.runtime = trt.Runtime(self._logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(artifact.path).read_bytes())
        if self.engine is None:
            meta = artifact.info.extra
            raise BackendUnavailable(
                f"{artifact.path}: TensorRT {trt.__version__} cannot load this engine here; it was built with "
                f"TensorRT {meta.get('tensorrt_version', '?')} for {meta.get('gpu_name', '?')} "
                f"(SM {meta.get('gpu_sm', '?')}); {rebuild_hint(artifact.path)}"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ConfigError(f"{artifact.path}: expected one input and one output, got {inputs} / {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.input_shape = tuple(int(d) for d in shape[1:])
        if shape[0] == -1:
            lo, _opt, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.batch_range = (int(lo[0]), int(hi[0]))
        else:
            self.batch_range = (int(shape[0]), int(shape[0]))
        self.stream = cuda_check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                cuda_check(self._cudart.cudaFree(pointer), "cudaFree")
                del self._buffers[name]
            pointer = int(cuda_check(self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        if self.context is None:
            raise EdgeResNeXtError(f"{self.artifact.path}: the runner was closed")
        host_in = np.ascontiguousarray(batch.astype(self.input_dtype, copy=False))
        self.context.set_input_shape(self.input_name, host_in.shape)
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        host_out = np.empty(out_shape, dtype=self.output_dtype)
        d_in = self._device_buffer(self.input_name, host_in.nbytes)
        d_out = self._device_buffer(self.output_name, host_out.nbytes)
        self.context.set_tensor_address(self.input_name, d_in)
        self.context.set_tensor_address(self.output_name, d_out)
        to_device, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        copy_in = cudart.cudaMemcpyAsync(d_in, host_in.ctypes.data, host_in.nbytes, to_device, self.stream)
        cuda_check(copy_in, "cudaMemcpyAsync H2D")
        if not self.context.execute_async_v3(int(self.stream)):
            raise EdgeResNeXtError(f"{self.artifact.path}: TensorRT execute_async_v3 failed")
        copy_out = cudart.cudaMemcpyAsync(host_out.ctypes.data, d_out, host_out.nbytes, to_host, self.stream)
        cuda_check(copy_out, "cudaMemcpyAsync D2H")
        cuda_check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return host_out.astype(np.float32)

    def precision_report(self) -> PrecisionReport:
        """Layer precisions from TensorRT's engine inspector (needs the DETAILED profiling verbosity we build
        with); an engine built elsewhere without it reports only its build mode."""
        trt = self._trt
        built = ("build_mode", "tensorrt_version", "gpu_name", "gpu_sm", "dla_core")
        report = PrecisionReport(
            self.artifact.precision, self.artifact.backend, extra={k: self.artifact.info.extra.get(k) for k in built}
        )
        try:
            inspector = self.engine.create_engine_inspector()
            layers = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON)).get("Layers", [])
        except (AttributeError, ValueError, RuntimeError) as err:
            report.extra["layers_note"] = f"engine inspector unavailable ({err})"
            return report
        kinds: dict[str, int] = {}
        for layer in layers:
            if isinstance(layer, dict):
                precision = _layer_precision(
                    " ".join(str(t.get("Format/Datatype", "")) for t in layer.get("Inputs", []))
                )
                kinds[precision] = kinds.get(precision, 0) + 1
        # "layers" stays the count it always was in report.json (TensorRT lists no per-layer rows here).
        report.extra.update({"layers": len(layers), "by_precision": kinds})
        report.int8_fraction = round(kinds.get("int8", 0) / len(layers), 4) if layers else 0.0
        return report

    def close(self) -> None:
        for pointer, _size in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._buffers.clear()
        if self.stream is not None:
            self._cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None


def _layer_precision(formats: str) -> str:
    """The precision of a layer from its inputs' "Format/Datatype" strings (engine inspector JSON)."""
    if "Int8" in formats or "INT8" in formats:
        return "int8"
    if "Half" in formats or "FP16" in formats:
        return "fp16"
    return "fp32" if formats else "unknown"
