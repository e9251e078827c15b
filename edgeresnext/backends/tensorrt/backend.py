"""The TensorRT backend: an engine when this host can build one for the target, else the on-device build kit."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeresnext.backends.base import Artifact, Backend, Runner, RunOptions, copy_file_atomic
from edgeresnext.backends.tensorrt.engine import (
    cuda_check,
    device_facts,
    engine_from_onnx,
    import_cudart,
    import_tensorrt,
    tensorrt_major,
)
from edgeresnext.backends.tensorrt.kit import check_fp16_scales, kit_from_onnx, rebuild_hint
from edgeresnext.backends.tensorrt.plan import ENGINE_FILE, FP16_QDQ_FILE, BuildPlan
from edgeresnext.backends.tensorrt.runner import TensorRTRunner, engine_mismatch
from edgeresnext.errors import BackendUnavailable, EdgeResNeXtError
from edgeresnext.onnx_io import check_onnx_precision

if TYPE_CHECKING:
    from edgeresnext.config import Target

logger = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    name = "tensorrt"
    kinds = ("engine", "kit")
    suffixes = (".engine", ".plan")
    package = "tensorrt"
    default_device = "GPU"
    devices = ("GPU",)

    def target_device(self, target: Target | None) -> str:
        return target.backend_options.tensorrt.device if target is not None else self.default_device

    def proxies(self, artifact: Artifact) -> list[tuple[str, Artifact]]:
        # What TensorRT reads in FP16-for-float-layers mode is proven on the CPU in ONNX Runtime.
        fp16 = next((Path(p) for p in artifact.files if Path(p).name == FP16_QDQ_FILE), None)
        if fp16 is None:
            return []
        stand_in = Artifact("onnxruntime", "int8+fp16", "onnx", fp16, [fp16])
        return [("qdq-int8-fp16 (onnxruntime)", stand_in)]

    def available(self) -> str | None:
        # Name every missing package at once: a device app needs both (cuda-python moves the buffers).
        modules, missing = [], []
        for importer in (import_tensorrt, import_cudart):
            try:
                modules.append(importer())
            except BackendUnavailable as err:
                missing.append(str(err))
        if missing:
            return (
                "TensorRT engines run with the tensorrt and cuda-python packages (import names tensorrt and cuda): "
                + "; ".join(missing)
            )
        trt, cudart = modules
        try:
            count = cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        except EdgeResNeXtError as err:
            return f"no usable NVIDIA GPU ({err})"
        if not count:
            return "no NVIDIA GPU found"
        if tensorrt_major(trt) < 10:
            return f"TensorRT {trt.__version__} found; needs TensorRT 10 or later (JetPack 6.1 and later)"
        return None

    def _compile_impl(self, onnx_path: Path, target: Target, out_dir: Path, **extra: Any) -> Artifact:
        from edgeresnext.quantize.qdq import fp16_qdq_from_onnx

        options = target.backend_options.tensorrt
        check_onnx_precision(onnx_path, "int8" if target.precision == "int8" else "fp32")
        if options.on_device:
            reason = f"the target builds on the device ({options.device}): backend_options.tensorrt.on_device is true"
        else:
            reason = self.available()
        if reason is not None:
            return kit_from_onnx(onnx_path, target, out_dir, reason)
        plan = BuildPlan.from_target(onnx_path, target)
        model = out_dir / plan.onnx
        if plan.onnx == FP16_QDQ_FILE:
            fp16 = fp16_qdq_from_onnx(onnx_path, model)
            check_fp16_scales(model)
        else:
            fp16 = None
            copy_file_atomic(onnx_path, model)
        timing_cache = Path(options.timing_cache) if options.timing_cache else None
        info = engine_from_onnx(model, out_dir / ENGINE_FILE, plan, timing_cache=timing_cache)
        info["fp16"] = fp16
        return Artifact(
            backend=self.name,
            precision=target.precision,
            kind="engine",
            path=out_dir / ENGINE_FILE,
            files=[out_dir / ENGINE_FILE, out_dir / f"{ENGINE_FILE}.json", model],
            info=info,
        )

    def load(self, artifact: Artifact, options: RunOptions | Target | None = None) -> Runner:
        # A kit is never runnable, whatever this host has: say what to do with it before anything else.
        if artifact.kind == "kit":
            raise BackendUnavailable(
                f"{artifact.path} is an on-device build kit, not an engine: build it on the "
                f"device with `edgeresnext compile --on-device {artifact.path}`"
            )
        return super().load(artifact, options)

    def _load_impl(self, artifact: Artifact, options: RunOptions) -> Runner:
        engine_json = Path(f"{artifact.path}.json")
        if engine_json.is_file() and not artifact.info.get("tensorrt_version"):
            artifact.info.update(json.loads(engine_json.read_text()))
        # Before deserialising: TensorRT refuses a foreign engine too, but cannot say what to do about it.
        here = device_facts()
        mismatch = engine_mismatch(artifact.info, here)
        if mismatch is not None:
            raise BackendUnavailable(
                f"{artifact.path}: this engine cannot run here: {mismatch}. Engines run only with the TensorRT "
                f"version and GPU that built them; {rebuild_hint(artifact.path)}"
            )
        built_on = artifact.info.get("gpu_name")
        if built_on and here.get("gpu_name") and built_on != here["gpu_name"]:
            logger.warning(
                "%s was built on %s, this GPU is %s (same SM %s): TensorRT does not recommend running an engine on "
                "another GPU model",
                artifact.path,
                built_on,
                here["gpu_name"],
                here.get("gpu_sm"),
            )
        return TensorRTRunner(artifact, options)
