"""The TensorRT backend: an engine when this host can build one for the target, else the on-device build kit."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeresnext.backends.base import (
    Artifact,
    ArtifactInfo,
    Backend,
    DeviceStepOutcome,
    HostOutputs,
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
from edgeresnext.backends.tensorrt.kit import KIT_FILE, KIT_SCRIPT, check_fp16_scales, kit_from_onnx, rebuild_hint
from edgeresnext.backends.tensorrt.plan import ENGINE_FILE, FP16_QDQ_FILE, BuildPlan
from edgeresnext.backends.tensorrt.record import EngineRecord
from edgeresnext.backends.tensorrt.runner import TensorRTRunner, engine_mismatch
from edgeresnext.errors import (
    MAX_DEVICE_CHECK_IMAGES,
    MAX_DEVICE_CHECK_MEGABYTES,
    MAX_DLA_CORE,
    MAX_WORKSPACE_MB,
    BackendUnavailable,
    EdgeResNeXtError,
)
from edgeresnext.onnx_io import check_onnx_precision
from edgeresnext.registry import option

if TYPE_CHECKING:
    import numpy as np

    from edgeresnext.config import Target

logger = logging.getLogger(__name__)

KIT_FOLDER = "kit"  # where a bundle carries the on-device build kit (its README and device commands say so)


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
    # The device check of an on-device kit (the engine, run on the device on the bundle's check set).
    max_device_disagreement: float | None = option(
        0.05,
        ge=0,
        le=1,
        description="on-device kits: the largest top-1 disagreement of the engine, run on the device on the "
        "bundle's check set, with the host's INT8 stand-in; beyond it the device step exits 1 and seals the engine as "
        "failed (decided like gates.min_agreement: bound, NOT PROVEN rules)",
    )
    device_check_images: int | None = option(
        None,
        ge=0,
        le=MAX_DEVICE_CHECK_IMAGES,
        description="on-device kits: validation images the bundle carries (a class-stratified sample, uint8 after "
        "resize and crop) with the host's per-image outputs, for the device check after the engine is built. null: "
        "derived from max_device_disagreement and gates.confidence (the smallest set that proves the gate 95 % of "
        "the time when the engine truly disagrees on 0.5 % of images: 124 for 5 % at 95 %), within "
        "device_check_megabytes; 0: no check set (the engine stays unchecked)",
    )
    device_check_megabytes: float = option(
        32.0,
        gt=0,
        le=MAX_DEVICE_CHECK_MEGABYTES,
        description="on-device kits: the most the check set may add to the bundle, in MB (10^6 bytes, counted before "
        "its lossless compression); 124 ResNeXt-50 images at 224x224 take 18.7 MB",
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
    compiles_without_runtime = True  # without TensorRT here, compile writes the kit the device builds the engine from
    device_record = EngineRecord  # the manifest's engine section of an engine built and checked on the device
    kit_file = KIT_FILE
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

    # ------------------------------------------------------------ the kit: the engine is built on the device
    def awaits_device(self, artifact: Artifact) -> str | None:
        if artifact.kind != "kit":
            return None
        return artifact.info.extra.get("reason") or "an on-device build kit: the engine is built on the device"

    def device_commands(self, artifact: Artifact) -> list[str]:
        return list(artifact.info.extra.get("device_commands") or []) if artifact.kind == "kit" else []

    def host_outputs_needed(
        self, artifact: Artifact, target: Target, input_chw: tuple[int, ...], num_classes: int, available: int
    ) -> int:
        if artifact.kind != "kit":
            return 0
        from edgeresnext.backends.tensorrt.checkset import check_set_size

        return check_set_size(target, input_chw, num_classes, available).images

    def bundle_for_device(
        self, artifact: Artifact, scratch: Path, host: HostOutputs
    ) -> tuple[Artifact, dict[str, Any] | None]:
        if artifact.kind != "kit":
            return artifact, None
        from edgeresnext.backends.tensorrt.checkset import kit_info, kit_with_check_set

        if host.target.backend_options.tensorrt.device_check_images == 0:
            return replace(artifact, info=replace(artifact.info, extra=kit_info(artifact.info.extra))), None
        return kit_with_check_set(artifact, scratch, host, self.stand_ins(artifact))

    def bundle_folder(self, artifact: Artifact) -> str | None:
        return KIT_FOLDER if artifact.kind == "kit" else None

    def device_step_notes(self, artifact: Artifact, bundle: Path | None, record: dict[str, Any] | None) -> list[str]:
        if artifact.kind != "kit" or bundle is None:
            return super().device_step_notes(artifact, bundle, record)
        from edgeresnext.backends.tensorrt.checkset import CHECK_DIR, check_set_notes

        notes = check_set_notes(record, f"{bundle}/{KIT_FOLDER}/{CHECK_DIR}") if record else []
        notes.append(
            f"on the device (copy {bundle} there): <bundle>/{KIT_FOLDER}/{KIT_SCRIPT}, or with edgeresnext installed "
            "`edgeresnext bundle build-engine <bundle>`: builds the engine and records it in the bundle"
        )
        return notes

    def artifact_from_manifest(self, bundle_dir: Path, entry: Mapping[str, Any]) -> Artifact:
        artifact = super().artifact_from_manifest(bundle_dir, entry)
        record = self._engine_record(entry)
        if record is not None:  # an engine sealed on the device: what it was built for and from
            artifact.info = ArtifactInfo.from_dict({**entry.get("info", {}), **entry["engine"]})
            artifact.files.append(bundle_dir / record.onnx.path)  # its source ONNX: what stands in for it
        return artifact

    def not_loadable_yet(self, bundle_dir: Path, entry: Mapping[str, Any]) -> str | None:
        if entry["kind"] != "kit":
            return None
        where = bundle_dir / entry["path"]
        return (
            f"{where}: an on-device build kit, not an engine; build the engine on the "
            f"device first: `edgeresnext bundle build-engine {bundle_dir}` (or `{where}/"
            f"{KIT_SCRIPT}` without edgeresnext; see the kit's README)"
        )

    @staticmethod
    def _engine_record(entry: Mapping[str, Any]) -> EngineRecord | None:
        """The manifest entry's ``engine`` section (the device step wrote it), read as its type; None: no engine."""
        engine = entry.get("engine")
        return EngineRecord.from_json(engine) if engine is not None else None

    def device_check(self, entry: Mapping[str, Any]) -> dict[str, Any] | None:
        record = self._engine_record(entry) if entry.get("kind") == "engine" else None
        return record.check().to_json() if record is not None else None

    def bundle_status(self, bundle_dir: Path, entry: Mapping[str, Any]) -> list[str]:
        record = self._engine_record(entry)
        if record is not None:
            check = record.check()
            said = check.reason or (check.gate.message if check.gate is not None else None) or ""
            return [
                f"engine: {entry['path']} built with TensorRT {record.tensorrt_version} on {record.gpu_name} "
                f"(SM {record.gpu_sm}, {record.build_mode.replace('_', ' ')}) from {record.onnx.path}",
                f"device check: {check.status}: {said}",
            ]
        if entry["kind"] == "kit":
            return [
                f"engine: not built yet; on the device run `edgeresnext bundle build-engine {bundle_dir}` "
                f"(or {bundle_dir}/{entry['path']}/{KIT_SCRIPT})"
            ]
        return []

    def device_report(self, bundle_dir: Path, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        from edgeresnext.backends.tensorrt.device_check import CHECK_DIR, HOST_REPORT

        kit = next((a for a in manifest["artifacts"] if a["backend"] == self.name and a["kind"] == "kit"), None)
        if kit is None:
            return None
        engine = next((a for a in manifest["artifacts"] if a["kind"] == "engine" and "engine" in a), None)
        if engine is None:
            reason = (
                f"the engine is not built yet: on the device run {kit['path']}/{KIT_SCRIPT} (or `edgeresnext bundle "
                "build-engine`), then copy the bundle back"
            )
            check, name = {"status": "unchecked", "reason": reason}, "tensorrt engine (not built)"
        else:
            check = self.device_check(engine)
            name = f"{engine['path']} ({engine['precision']}, on the device)"
        return {"host_report": f"{kit['path']}/{CHECK_DIR}/{HOST_REPORT}", "device_engine": name, "device_check": check}

    def seal_on_device(self, bundle_dir: Path, check: Callable[[Path], None], **options: Any) -> dict[str, Any]:
        from edgeresnext.backends.tensorrt.device_step import engine_into_bundle

        return engine_into_bundle(bundle_dir, check, **options)

    def device_step_outcome(self, bundle_dir: Path, manifest: Mapping[str, Any]) -> DeviceStepOutcome:
        from edgeresnext.backends.tensorrt.device_step import device_step_outcome

        return device_step_outcome(bundle_dir, manifest)

    def kit_with_variant(self, kit: Path, name: str, make: Callable[[Path, Path], Path]) -> tuple[Path, dict[str, Any]]:
        from edgeresnext.backends.tensorrt.kit import kit_with_variant

        return kit_with_variant(kit, name, make)

    def build_kit_here(self, kit: Path) -> list[str]:
        from edgeresnext.backends.tensorrt.kit import describe_engine, engine_from_kit

        artifact = engine_from_kit(kit)
        return [describe_engine(artifact), f"build record: {artifact.path}.json"]

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
