"""The stages of a build, in order: model -> export -> quantize -> lint -> compile -> validate -> bundle.

Each stage is a function of one :class:`BuildContext` (the target, the build folder, progress, and the results
of the stages before it) that runs through the stage cache (:func:`~edgeresnext.pipeline.cache.run_stage`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeresnext.atomic import write_json_atomic
from edgeresnext.models.shipped import resolve_checkpoint
from edgeresnext.pipeline.cache import StageResult, run_stage
from edgeresnext.pipeline.choose import (
    ARTIFACT_JSON,
    FP32_ONNX,
    MODEL_FILE,
    SENSITIVITY_JSON,
    STAGE_FOLDERS,
    BuildFiles,
)
from edgeresnext.pipeline.stage_info import (
    BundleInfo,
    CompileInfo,
    ExportInfo,
    FallbackRecord,
    LintInfo,
    ModelInfo,
    NearCopies,
    QuantizeInfo,
    ValidateInfo,
)
from edgeresnext.quantize import QDQ_ONNX

if TYPE_CHECKING:
    import numpy as np

    from edgeresnext.config import Target
    from edgeresnext.models import ModelMeta
    from edgeresnext.validate import ValidationReport

logger = logging.getLogger(__name__)

STAGES = ("model", "export", "quantize", "lint", "compile", "validate", "bundle")
NEAR_COPY_CHECK = "phash-256 + thumbnail-8x8 after the model's preprocessing (edgeresnext.data.content)"
EXPORT_PARITY_IMAGES = 32
EXPORT_TOLERANCE = 1e-3


@dataclass
class BuildContext:
    """What every stage of one build reads: the target, the build folder, progress, and the stages already run."""

    target: Target
    root: Path
    progress: bool = True
    say: Callable[[str], None] = logger.info
    done: dict[str, StageResult] = field(default_factory=dict)
    # The model's metadata as the preflight completed it (class names, preprocessing); None: the checkpoint's own.
    meta: ModelMeta | None = None
    # What the build chose and found (preflight, quantize stage): the summary and the report both say it.
    notes: list[str] = field(default_factory=list)

    @property
    def int8(self) -> bool:
        return self.target.precision == "int8"

    @property
    def planned(self) -> list[str]:
        return [name for name in STAGES if self.int8 or name not in ("quantize", "lint")]

    def folder(self, stage: str) -> Path:
        return self.done[stage].folder

    @property
    def model_file(self) -> Path:
        return self.folder("model") / MODEL_FILE

    @property
    def fp32_onnx(self) -> Path:
        return self.folder("export") / FP32_ONNX

    @property
    def qdq_onnx(self) -> Path | None:
        return self.folder("quantize") / QDQ_ONNX if "quantize" in self.done else None

    @property
    def sensitivity_json(self) -> Path | None:
        path = self.folder("quantize") / SENSITIVITY_JSON if "quantize" in self.done else None
        return path if path is not None and path.is_file() else None

    @property
    def compile_source(self) -> Path:
        """The ONNX the compile stage turns into the target's artifact: the Q/DQ file, or the FP32 one, as the
        backend says (``Backend.compile_input``)."""
        from edgeresnext.backends import get_backend

        qdq = self.qdq_onnx
        wants_qdq = get_backend(self.target.backend).compile_input(self.target) == "qdq"
        return qdq if qdq is not None and wants_qdq else self.fp32_onnx

    @property
    def build_files(self) -> BuildFiles:
        """The files validation reads, as this build made them (the same :class:`BuildFiles` that
        ``edgeresnext validate`` finds in a finished build folder)."""
        return BuildFiles(
            model=self.model_file,
            fp32_onnx=self.fp32_onnx,
            qdq_onnx=self.qdq_onnx,
            artifact_json=self.folder("compile") / ARTIFACT_JSON,
            sensitivity_json=self.sensitivity_json,
        )

    def load_model(self):
        from edgeresnext.models import load_checkpoint

        return load_checkpoint(self.model_file)

    def calibration_files(self) -> list[Path]:
        from edgeresnext.data.folder import list_images

        return list_images(self.target.quant.calib_dir)

    def calibration_set(self) -> CalibrationSet:
        """The calibration images a compile that calibrates reads (preprocessed as the model says), as a loader."""
        spec = self.target.quant

        def load() -> np.ndarray:
            from edgeresnext.data.calibration import load_calibration_images
            from edgeresnext.models import read_checkpoint

            meta = read_checkpoint(self.model_file).meta
            return load_calibration_images(
                spec.calib_dir, meta.preprocess, spec.subset_size, self.target.data.on_bad_image, shape=meta.input_chw
            )

        return CalibrationSet(files=[self.model_file, *self.calibration_files()], load=load)


@dataclass(frozen=True)
class CalibrationSet:
    """What a calibrating compile reads: the files its images come from (the stage cache hashes them; the model
    file holds the preprocessing) and ``load()``, the preprocessed float32 NCHW images."""

    files: list[Path]
    load: Callable[[], np.ndarray]


def stage_model(ctx: BuildContext) -> StageResult:
    """Resolve the FP32 checkpoint, load it safely, and store it with its (completed) metadata as model.safetensors."""
    target = ctx.target
    checkpoint = resolve_checkpoint(target.model.checkpoint)
    section = target.model.model_dump(mode="json")
    if ctx.meta is not None:
        section["meta"] = ctx.meta.to_dict()

    def produce(folder: Path) -> ModelInfo:
        from edgeresnext.models import load_checkpoint, save_checkpoint

        kwargs = {
            k: v
            for k, v in (("num_classes", target.model.num_classes), ("in_channels", target.model.in_channels))
            if v is not None
        }
        model = load_checkpoint(checkpoint, arch=target.model.arch, **kwargs)
        if ctx.meta is not None:
            model.meta = ctx.meta
        save_checkpoint(folder / MODEL_FILE, model, model.meta)
        return ModelInfo(
            arch=model.meta.arch,
            num_classes=model.meta.num_classes,
            source=str(checkpoint),
            parameters=sum(p.numel() for p in model.parameters()),
        )

    folder = ctx.root / STAGE_FOLDERS["model"]
    return run_stage(folder, "model", section, [checkpoint], produce, info_type=ModelInfo)


def stage_export(ctx: BuildContext) -> StageResult:
    """FP32 ONNX (dynamic batch), onnx.checker + shape inference, parity with PyTorch on real validation images."""
    target = ctx.target
    parity_data = target.data.model_copy(update={"limit": EXPORT_PARITY_IMAGES, "on_bad_image": "skip"})
    config = {
        "input": target.input.model_dump(mode="json"),
        "opset": 17,
        "tolerance": EXPORT_TOLERANCE,
        "parity_data": parity_data.model_dump(mode="json"),
    }

    def produce(folder: Path) -> ExportInfo:
        from edgeresnext.data.validation import load_validation_data
        from edgeresnext.export import assert_parity, onnx_from_torch

        model = ctx.load_model()
        size = target.input.size or model.meta.input_size
        onnx_path = onnx_from_torch(
            model, folder / FP32_ONNX, input_shape=(model.meta.in_channels, size, size), dynamic_batch=True
        )
        images = load_validation_data(parity_data, model.meta.preprocess, model.meta.class_names).inputs
        error = assert_parity(model, onnx_path, images, tolerance=EXPORT_TOLERANCE)
        return ExportInfo(max_abs_error_vs_torch=float(error), parity_images=len(images))

    folder = ctx.root / STAGE_FOLDERS["export"]
    return run_stage(folder, "export", config, [ctx.model_file], produce, info_type=ExportInfo)


def stage_quantize(ctx: BuildContext) -> StageResult:
    """PTQ (or QAT) to the Q/DQ INT8 ONNX every backend reads; per-layer sensitivity; fallback until the gate holds."""
    target = ctx.target
    section = {
        "quant": target.quant.model_dump(mode="json"),
        "gate": target.gates.max_top1_drop,
        "data": target.data.model_dump(mode="json"),
        "on_bad_image": target.data.on_bad_image,
        # how calibration and tuning images are compared with the validation images (a new check reruns the stage)
        "near_copy_check": NEAR_COPY_CHECK,
    }

    def produce(folder: Path) -> QuantizeInfo:
        from edgeresnext.data.validation import validation_fingerprints
        from edgeresnext.quantize.sensitivity import SENSITIVITY_IMAGES, layer_sensitivity

        began = time.perf_counter()
        int8 = folder / QDQ_ONNX
        info, calib, meta, calib_files = _quantize(ctx, int8)
        # Calibration and tuning images are compared by content with the validation images the gates score.
        reference = validation_fingerprints(target.data, meta.preprocess, meta.class_names)
        info.calibration_near_copies = _calibration_near_copies(calib, calib_files, reference)
        ranking, ranking_images = None, calib[:SENSITIVITY_IMAGES]
        if target.quant.sensitivity:
            ranking = layer_sensitivity(int8, ranking_images, folder / SENSITIVITY_JSON, fp32_onnx=ctx.fp32_onnx)
            info.most_sensitive = [row["module"] for row in ranking["layers"][:3]]
        info.sensitivity = "asked for (quant.sensitivity)" if ranking else "not run"
        if target.gates.max_top1_drop is not None and target.quant.max_fallback_layers > 0:
            sensitivity_json = folder / SENSITIVITY_JSON
            info.fallback, ranked = _fallback(ctx, meta, int8, ranking, ranking_images, sensitivity_json, reference)
            if ranked and not ranking:
                info.sensitivity = "run by the fallback: the drop on the tuning images was above the gate"
        info.seconds = round(time.perf_counter() - began, 2)
        write_json_atomic(folder / "quant.json", info.to_dict())
        return info

    inputs = [ctx.model_file, ctx.fp32_onnx, *ctx.calibration_files()]
    folder = ctx.root / STAGE_FOLDERS["quantize"]
    return run_stage(folder, "quantize", section, inputs, produce, info_type=QuantizeInfo)


def _quantize(ctx: BuildContext, int8: Path) -> tuple[QuantizeInfo, Any, ModelMeta, list[Path]]:
    """The Q/DQ INT8 ONNX at ``int8`` from the calibration images; (the record so far, the calibration images, the
    model's metadata, the file of each calibration image)."""
    from edgeresnext.data.calibration import load_calibration_images
    from edgeresnext.quantize.int8 import quantize_int8

    spec, target = ctx.target.quant, ctx.target
    model = ctx.load_model()
    skipped: list[tuple[str, str]] = []
    used: list[Path] = []
    calib = load_calibration_images(
        spec.calib_dir,
        model.meta.preprocess,
        spec.subset_size,
        target.data.on_bad_image,
        skipped=skipped,
        shape=model.meta.input_chw,
        used=used,
    )
    began = time.perf_counter()
    quantize_int8(
        model, calib, spec, int8, fp32_onnx=ctx.fp32_onnx, progress=ctx.progress, train_limit=spec.qat_train_limit
    )
    info = QuantizeInfo(
        method=spec.method,
        calibration_images=len(calib),
        calibration_skipped=skipped,
        quantize_seconds=round(time.perf_counter() - began, 2),
    )
    return info, calib, model.meta, used


def _calibration_near_copies(calib: Any, files: list[Path], reference: Any) -> NearCopies:
    """Which calibration images are near-copies of validation images (named, not removed: the user chose them; the
    drop is then measured partly on images the quantizer calibrated on, and the summary warns)."""
    from edgeresnext.data.validation import near_copies_of_validation

    copies = near_copies_of_validation(calib, [str(f) for f in files], reference)
    return NearCopies(
        checked=len(files),
        count=len(copies),
        disjoint_from_validation=not copies,
        against=reference.name,
        images=copies,
    )


def _fallback(
    ctx: BuildContext,
    meta: ModelMeta,
    int8: Path,
    ranking: Any,
    ranking_images: Any,
    sensitivity_json: Path,
    reference: Any = None,
) -> tuple[FallbackRecord, bool]:
    """Layers back to float, most sensitive first, until the drop on held-out tuning images meets the gate; decided
    on images the validation gate never sees (the validation set judges the result, not the choice). (The record,
    whether the fallback ranked the layers itself.)"""
    from edgeresnext.data.validation import load_tuning_data
    from edgeresnext.quantize.sensitivity import fallback

    target, spec = ctx.target, ctx.target.quant
    tuning = load_tuning_data(target.data, spec, meta.preprocess, meta.class_names, reference=reference)
    if isinstance(tuning, str):
        return FallbackRecord(run=False, why=f"no labelled images disjoint from the validation set: {tuning}"), False
    result = fallback(
        int8,
        ctx.fp32_onnx,
        tuning.inputs,
        tuning.labels,
        target.gates.max_top1_drop,
        int8,
        sensitivity=ranking,
        ranking_images=ranking_images,
        max_layers=spec.max_fallback_layers,
        sensitivity_json=sensitivity_json,
        raise_on_fail=False,
        confidence=target.gates.confidence,
        unproven=target.gates.unproven,
    )
    record = FallbackRecord(
        run=True,
        images=tuning.name,
        # checked by content (after the model's preprocessing) against every validation image, not assumed: True
        # only when no tuning image was a near-copy of one (those found are left out, and named here)
        disjoint_from_validation=tuning.disjoint_from_validation,
        overlap_excluded=tuning.overlap_excluded,
        near_copies=tuning.near_copies,
        top1_drop_before=round(result.fp32_top1 - result.int8_top1, 5),
        top1_drop_after=round(result.top1_drop, 5),
        layers_in_float=result.layers,
        steps=result.steps,
        gate_reached=result.passed,
        # decided as the validation gate is: on the bound when these images can prove the limit
        decided_on=result.decided_on,
        top1_drop_upper_bound=result.top1_drop_upper_bound,
    )
    return record, bool(result.ranked)


def stage_lint(ctx: BuildContext) -> StageResult:
    """The TensorRT lint on the Q/DQ ONNX: every INT8 export passes it before any backend sees it."""
    qdq_onnx = ctx.qdq_onnx

    def produce(folder: Path) -> LintInfo:
        from edgeresnext.errors import ExportError
        from edgeresnext.lint import lint_onnx

        found = lint_onnx(qdq_onnx, rules="tensorrt")
        rows = [{"node": v.node, "rule": v.rule, "severity": v.severity, "message": v.message} for v in found]
        write_json_atomic(folder / "lint.json", {"model": str(qdq_onnx), "rules": "tensorrt", "violations": rows})
        errors = [v for v in found if v.severity == "error"]
        if errors:
            raise ExportError(
                f"{qdq_onnx}: {len(errors)} TensorRT lint violation(s), first: {errors[0]} "
                f"(all in {folder / 'lint.json'})"
            )
        return LintInfo(errors=0, warnings=len(found) - len(errors))

    folder = ctx.root / STAGE_FOLDERS["lint"]
    config = {"rules": "tensorrt"}
    return run_stage(folder, "lint", config, [qdq_onnx], produce, kept_on_failure=("lint.json",), info_type=LintInfo)


def stage_compile(ctx: BuildContext) -> StageResult:
    """The target's backend turns the (Q/DQ or FP32) ONNX into what the device runs; artifact.json describes it."""
    from edgeresnext.backends import get_backend

    target = ctx.target
    backend = get_backend(target.backend)
    onnx_path = ctx.compile_source
    section = {
        "backend": target.backend,
        "precision": target.precision,
        "input": target.input.model_dump(mode="json"),
        "options": getattr(target.backend_options, target.backend).model_dump(mode="json"),
        "available": backend.available(),
    }

    # e.g. NNCF on the OpenVINO model: the images the quantize stage calibrated on.
    calibration = ctx.calibration_set() if backend.compile_needs_calibration(target) else None

    def produce(folder: Path) -> CompileInfo:
        images = calibration.load() if calibration is not None else None
        artifact = backend.compile(onnx_path, target, folder, calibration=images)
        artifact.save(folder / ARTIFACT_JSON)
        return CompileInfo(artifact=artifact)

    inputs = [onnx_path]
    if calibration is not None:
        inputs += calibration.files
        section["quant"] = target.quant.model_dump(mode="json")
    return run_stage(ctx.root / STAGE_FOLDERS["compile"], "compile", section, inputs, produce, info_type=CompileInfo)


def stage_validate(ctx: BuildContext) -> StageResult:
    """Every artifact against the FP32 PyTorch model on the target's validation set; the report; gate verdicts."""
    from edgeresnext.validate import target_threads
    from edgeresnext.validate.deepstream import DEEPSTREAM_MEASURE

    target = ctx.target
    compiled = ctx.done["compile"]
    sensitivity = ctx.sensitivity_json
    files = [
        ctx.model_file,
        ctx.fp32_onnx,
        *([ctx.qdq_onnx] if ctx.qdq_onnx else []),
        *[compiled.folder / n for n in sorted(compiled.outputs)],
        *([sensitivity] if sensitivity else []),
    ]
    section = {
        "data": target.data.model_dump(mode="json"),
        "gates": target.gates.model_dump(mode="json"),
        "validate": target.validate_.model_dump(mode="json"),
        "threads": target_threads(target),
        "notes": ctx.notes,
        # How the artifact and its float baseline are run and timed (an OpenVINO hint changes no compiled file).
        "backend_options": getattr(target.backend_options, target.backend).model_dump(mode="json"),
        # What the report's DeepStream section measures (a report of an earlier version has no such section).
        "deepstream": DEEPSTREAM_MEASURE,
    }

    def produce(folder: Path) -> ValidateInfo:
        from edgeresnext.data.validation import load_validation_data
        from edgeresnext.pipeline.choose import choose_artifacts, measure_serving_exports
        from edgeresnext.report import write_report
        from edgeresnext.validate import pick_primary, read_sensitivity, validate

        model = ctx.load_model()
        data = load_validation_data(target.data, model.meta.preprocess, model.meta.class_names)
        items = choose_artifacts(ctx.build_files, target, baseline_dir=folder / "baseline")
        # A bundle finished on the device (a Jetson kit's check set) may carry the host's outputs for the first
        # images of the set's class-stratified order: kept from this pass.
        kept: dict[str, Any] = {}
        keep = _host_outputs_needed(ctx, data)
        report = validate(
            target,
            items,
            model,
            data,
            primary=pick_primary(target, items),
            sensitivity=read_sensitivity(sensitivity),
            model_files=[ctx.model_file],
            progress=ctx.progress,
            notes=ctx.notes,
            kept_logits=kept,
            kept_images=keep,
        )
        if kept:
            from edgeresnext.pipeline.device import KEPT_LOGITS, save_kept_logits

            save_kept_logits(folder / KEPT_LOGITS, kept, data.ids[:keep], data.inputs[:keep])
        report.deepstream = measure_serving_exports(ctx.build_files, target, model.meta, target_threads(target))
        write_report(report, folder)
        return ValidateInfo(passed=report.passed, primary=report.primary)

    folder = ctx.root / STAGE_FOLDERS["validate"]
    return run_stage(folder, "validate", section, files, produce, info_type=ValidateInfo)


def _host_outputs_needed(ctx: BuildContext, data: Any) -> int:
    """How many of ``data``'s first images the bundle for the device carries the host's outputs of (0: none)."""
    from edgeresnext.backends import get_backend

    artifact = ctx.done["compile"].info.artifact
    chw, classes = tuple(data.inputs.shape[1:]), len(data.class_names)
    return get_backend(artifact.backend).host_outputs_needed(artifact, ctx.target, chw, classes, len(data))


def load_report(ctx: BuildContext) -> ValidationReport:
    """The validate stage's report (also for a cached stage: report.json is its record)."""
    from edgeresnext.validate import ValidationReport

    return ValidationReport.load(ctx.folder("validate") / "report.json")


def bundle_summary(report: ValidationReport) -> dict[str, Any]:
    """What the bundle's manifest says about the validation the artifact passed (fractions; the drop's bound and
    the intervals at ``confidence``, from the paired per-image outcomes)."""
    primary = report.primary_result
    summary: dict[str, Any] = {
        "dataset": report.data.name,
        "images": report.data.count,
        "validated_artifact": primary.name,
        "top1": primary.top1,
        "top1_fp32": report.reference_result.top1,
        "top1_drop": primary.top1_drop,
        "agreement": primary.agreement,
    }
    u = primary.uncertainty
    if u is not None:
        summary.update(
            {
                "confidence": u.confidence,
                "top1_drop_interval": list(u.drop_interval),
                "top1_drop_upper_bound": u.drop_upper_bound,
                "discordant_images": u.discordant,
                "mcnemar_p": u.mcnemar_p,
                "agreement_interval": list(u.agreement_interval),
                "agreement_lower_bound": u.agreement_lower_bound,
            }
        )
    summary.update(
        {
            "latency_ms_p50": primary.p50_ms,
            "speedup": primary.speedup,
            "speedup_baseline": primary.speedup_baseline,
            "gates_passed": report.passed,
        }
    )
    return summary


def stage_bundle(ctx: BuildContext) -> StageResult:
    """The folder device apps embed: artifact(s), labels.txt, manifest.json with sha256 of every file."""
    compiled = ctx.done["compile"]
    artifact_json = compiled.folder / ARTIFACT_JSON
    report_json = ctx.folder("validate") / "report.json"
    files = [ctx.model_file, artifact_json, report_json, *[compiled.folder / n for n in sorted(compiled.outputs)]]

    def produce(folder: Path) -> BundleInfo:
        from edgeresnext.backends import Artifact, get_backend
        from edgeresnext.bundle import bundle_from_artifacts
        from edgeresnext.models import read_checkpoint
        from edgeresnext.serving.export import deepstream_export

        meta = read_checkpoint(ctx.model_file).meta
        report = load_report(ctx)
        summary = bundle_summary(report)
        artifact = Artifact.load(artifact_json)
        info = BundleInfo(validation_summary=summary)
        from edgeresnext.pipeline.device import host_outputs

        backend = get_backend(artifact.backend)
        if backend.awaits_device(artifact) is not None:
            host = host_outputs(ctx, meta, report_json, report.data.count)
            artifact, info.device_check_set = backend.bundle_for_device(artifact, ctx.root / "device-check", host)
        exports = {}
        if backend.exports_deepstream(artifact):
            if report.deepstream is None:  # the validate stage measures it for every such artifact
                raise RuntimeError(f"{report_json}: no DeepStream section for a {artifact.backend} {artifact.kind}")
            artifact, exports["deepstream"] = deepstream_export(ctx, artifact, meta, report.deepstream)
            info.deepstream = {k: v for k, v in exports["deepstream"][0].items() if k != "measured"}
        bundle_from_artifacts(folder, [artifact], meta, validation_summary=summary, target=ctx.target, exports=exports)
        return info

    root = ctx.root
    # What the bundle carries for the device (the check set: its size, the data it comes from and its gate, set in
    # the backend's options) goes into the stage's hash.
    section = {
        "backend": ctx.target.backend,
        "backend_options": getattr(ctx.target.backend_options, ctx.target.backend).model_dump(mode="json"),
        "check_set_version": 2,  # uint8 pixels, class-stratified sample (a new format reruns the stage)
        "data": ctx.target.data.model_dump(mode="json"),
        "gates": ctx.target.gates.model_dump(mode="json"),
    }
    folder = root / STAGE_FOLDERS["bundle"]
    record = root / "bundle.stage.json"
    return run_stage(folder, "bundle", section, files, produce, record_path=record, info_type=BundleInfo)


STAGE_FUNCTIONS: dict[str, Callable[[BuildContext], StageResult]] = {
    "model": stage_model,
    "export": stage_export,
    "quantize": stage_quantize,
    "lint": stage_lint,
    "compile": stage_compile,
    "validate": stage_validate,
    "bundle": stage_bundle,
}
