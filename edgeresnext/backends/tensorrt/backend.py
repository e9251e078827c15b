"""The TensorRT backend: an engine when this host can build one for the target, else the on-device build kit."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeresnext.backends.base import (
    Artifact,
    ArtifactInfo,
    Backend,
    Runner,
    RunOptions,
    TritonEntry,
    copy_file_atomic,
)
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
from edgeresnext.errors import MAX_DLA_CORE, MAX_WORKSPACE_MB, BackendUnavailable, EdgeResNeXtError
from edgeresnext.onnx_io import check_onnx_precision
from edgeresnext.registry import option

if TYPE_CHECKING:
    import numpy as np

    from edgeresnext.config import Target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorRTOptions(RunOptions):
    """``backend_options.tensorrt``: how the engine is built (the runner itself takes no options of its own)."""

    workspace_mb: int = option(1024, ge=16, le=MAX_WORKSPACE_MB)
    dla_core: int | None = option(None, ge=0, le=MAX_DLA_CORE)
    gpu_fallback: bool = option(True)
    timing_cache: str | None = option("build/timing.cache", path=True)
    strongly_typed: bool = option(True)
    fp16: bool = option(True)
    on_device: bool = option(False, description="always produce the on-device build kit (Jetson)")
    # The target key is "device"; RunOptions.device is the runtime's device name (GPU).
    device_name: str = option(
        "gpu", key="device", description="human name of the device the engine is for, e.g. 'jetson-orin'"
    )


class TensorRTBackend(Backend):
    name = "tensorrt"
    display_name = "TensorRT"
    kinds = ("engine", "kit")
    suffixes = (".engine", ".plan")
    package = "tensorrt"
    default_device = "GPU"
    devices = ("GPU",)
    options_type = TensorRTOptions
    float_baseline = "fp16"  # a GPU's float deployment is its FP16 engine
    always_compare_speed = True  # the FP16 engine can beat INT8 on a GPU

    @classmethod
    def target_problem(cls, target: Target) -> str | None:
        dla_core = target.backend_options.tensorrt.dla_core
        if target.backend != cls.name:
            if dla_core is None:
                return None
            return f"backend_options.tensorrt.dla_core is set but backend is {target.backend!r}"
        if target.precision == "int8" and not target.quant.symmetric_activations:
            return "TensorRT INT8 needs quant.symmetric_activations: true (TensorRT takes signed INT8, zero point 0)"
        batch = target.input.batch
        if dla_core is not None and batch.min != batch.max:
            return (
                f"DLA engines take static shapes: with backend_options.tensorrt.dla_core set, "
                f"input.batch needs min == max (got min={batch.min}, max={batch.max})"
            )
        if dla_core is not None and target.precision == "fp32":
            return "DLA runs int8 or fp16 only; precision 'fp32' cannot use dla_core"
        return None

    def target_device(self, target: Target | None) -> str:
        return target.backend_options.tensorrt.device if target is not None else self.default_device

    def runtime_version(self, artifact: Artifact) -> str | None:
        return artifact.info.extra.get("tensorrt_version")

    def built_on(self, artifact: Artifact) -> dict[str, Any]:
        keys = ("gpu_name", "gpu_sm", "tensorrt_version", "build_mode")
        return {k: artifact.info.extra[k] for k in keys if k in artifact.info.extra}

    def exports_deepstream(self, artifact: Artifact) -> bool:
        # nvinfer runs TensorRT engines: a kit's device step builds DeepStream's variant beside the engine.
        return artifact.kind == "kit"

    def triton_entry(self, artifact: Artifact) -> TritonEntry | None:
        if artifact.kind != "engine":
            return None  # a kit: the engine is built on the device first
        # A plan runs only on the GPU compute capability that built it: cc_model_filenames says which.
        sm = artifact.info.extra.get("gpu_sm")
        return TritonEntry(
            files={"model.plan": Path(artifact.path)},
            platform="tensorrt_plan",
            kind="KIND_GPU",
            cc_model_filenames={str(sm): "model.plan"} if sm and sm != "unknown" else {},
        )

    def stand_ins(self, artifact: Artifact) -> list[tuple[str, Artifact]]:
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

    def _compile_impl(
        self, onnx_path: Path, target: Target, out_dir: Path, calibration: np.ndarray | None = None
    ) -> Artifact:
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
        info = ArtifactInfo(extra=engine_from_onnx(model, out_dir / ENGINE_FILE, plan, timing_cache=timing_cache))
        info.extra["fp16"] = fp16
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
        recorded = artifact.info.extra
        if engine_json.is_file() and not recorded.get("tensorrt_version"):
            recorded.update(json.loads(engine_json.read_text()))
        # Before deserialising: TensorRT refuses a foreign engine too, but cannot say what to do about it.
        here = device_facts()
        mismatch = engine_mismatch(recorded, here)
        if mismatch is not None:
            raise BackendUnavailable(
                f"{artifact.path}: this engine cannot run here: {mismatch}. Engines run only with the TensorRT "
                f"version and GPU that built them; {rebuild_hint(artifact.path)}"
            )
        built_on = recorded.get("gpu_name")
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
