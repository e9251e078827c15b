"""Runs the stages of one target into ``build/<target>/``, skipping stages whose inputs did not change.

Each stage has its own folder with a ``stage.json`` that records the hash of the stage's inputs (files,
config section, package versions) and the sha256 of each output. A rerun skips a stage whose input hash
matches and whose outputs are intact; any change reruns that stage and every stage after it. Outputs are
written through :mod:`edgeresnext.atomic`, and ``stage.json`` is written last, so a killed build never
leaves a stage that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnext.atomic import remove_stale_temporaries, sha256_file, write_json_atomic
from edgeresnext.config import SHIPPED_CHECKPOINT, Target
from edgeresnext.environment import package_versions
from edgeresnext.errors import DataError
from edgeresnext.models.shipped import resolve_checkpoint

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
LOCK_FILE = ".lock"


def inputs_hash(config: Any, files: list[Path], packages: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(str(path.name).encode())
        digest.update(sha256_file(path).encode())
    digest.update(json.dumps(packages, sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class StageResult:
    name: str
    folder: Path
    outputs: dict[str, str]
    skipped: bool
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def run_stage(
    folder: Path,
    name: str,
    config: Any,
    input_files: list[Path],
    produce: Callable[[Path], dict[str, Any]],
    upstream_changed: bool = False,
    record_path: Path | None = None,
) -> StageResult:
    """Run ``produce(folder)`` unless ``folder/stage.json`` proves the same inputs already made intact outputs.

    ``produce`` writes its files into ``folder`` (atomically) and returns an ``info`` dict; every regular
    file it leaves (besides stage.json) is recorded with its sha256.
    """
    packages = package_versions()
    key = inputs_hash(config, input_files, packages)
    record_path = record_path or folder / STAGE_FILE
    if not upstream_changed and record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError):
            record = {}
        if record.get("inputs_hash") == key and _outputs_intact(folder, record.get("outputs", {})):
            logger.info("stage %s: inputs unchanged, skipped", name)
            return StageResult(name, folder, record["outputs"], True, 0.0, record.get("info", {}))
        logger.info("stage %s: inputs changed or outputs damaged, rerunning", name)
    record_path.unlink(missing_ok=True)
    _clear_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    info = produce(folder)
    outputs = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != record_path and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }
    seconds = round(time.perf_counter() - began, 2)
    write_json_atomic(
        record_path,
        {
            "stage": name,
            "inputs_hash": key,
            "config": config,
            "packages": packages,
            "inputs": [str(p) for p in input_files],
            "outputs": outputs,
            "info": info,
            "seconds": seconds,
        },
    )
    return StageResult(name, folder, outputs, False, seconds, info)


def _outputs_intact(folder: Path, outputs: dict[str, str]) -> bool:
    return bool(outputs) and all((folder / n).is_file() and sha256_file(folder / n) == h for n, h in outputs.items())


def _clear_folder(folder: Path) -> None:
    """Remove what a previous (finished, stale or killed) run of the stage left, so outputs are only new files."""
    import shutil

    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# --------------------------------------------------------------------------------------------- the build
STAGES = ("model", "export", "quantize", "lint", "compile", "validate", "bundle")
EXPORT_PARITY_IMAGES = 32
EXPORT_TOLERANCE = 1e-3


@dataclass
class BuildSummary:
    target: Target
    root: Path
    stages: list[StageResult] = field(default_factory=list)
    ok: bool = True
    notes: list[str] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.name == name), None)

    def render(self) -> str:
        """The closing summary: stages, artifacts with sizes, accuracy and latency, gates, where things are."""
        lines = [
            f"build {self.target.name}: {'OK' if self.ok else 'FAILED'}  "
            f"({self.target.backend}, {self.target.precision}; {self.root})"
        ]
        for stage in self.stages:
            state = "cached" if stage.skipped else f"{stage.seconds:.1f} s"
            lines.append(f"  {stage.name:9s} {state:>8s}")
        compile_stage = self.stage("compile")
        if compile_stage:
            lines.append("artifacts:")
            for name in compile_stage.outputs:
                path = compile_stage.folder / name
                lines.append(f"  {path}  {path.stat().st_size / 1e6:.2f} MB")
        validate_stage = self.stage("validate")
        if validate_stage:
            lines.append("validation (same images, batch-1 latency p50):")
            for row in validate_stage.info.get("artifacts", []):
                if row.get("status") != "ok":
                    lines.append(f"  {row['name']:28s} not run here: {row.get('skip_reason')}")
                    continue
                lines.append(
                    f"  {row['name']:28s} top-1 {row['top1'] * 100:6.2f} %  "
                    f"drop {row['top1_drop'] * 100:+.2f} "
                    f"pt  agreement {row['agreement'] * 100:6.2f} %  p50 {row['p50_ms']:7.3f} ms  "
                    f"x{row['speedup_vs_fp32']:.2f} vs FP32"
                )
            for gate in validate_stage.info.get("gates", []):
                verdict = "pass" if gate["passed"] else "FAIL"
                lines.append(f"  gate {gate['gate']}: {verdict} ({gate.get('message', '')})")
            lines.append(f"report: {validate_stage.folder / 'report.md'} (and report.html, report.json)")
        bundle_stage = self.stage("bundle")
        if bundle_stage:
            lines.append(f"bundle: {bundle_stage.folder} (edgeresnext bundle verify {bundle_stage.folder})")
        lines += [f"not done here: {item}" for item in self.not_done]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


class BuildLock:
    """An exclusive lock on ``build/<target>/.lock``: a second build of the same target waits for the first."""

    def __init__(self, root: Path, on_wait: Callable[[str], None] | None = None) -> None:
        self.path = root / LOCK_FILE
        self.on_wait = on_wait
        self.handle = None

    def __enter__(self) -> BuildLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")  # held for the whole build
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"another build of {self.path.parent.name} is running; waiting for {self.path}"
            logger.warning(message)
            if self.on_wait:
                self.on_wait(message)
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()


def stage_model(target: Target, root: Path) -> StageResult:
    """Resolve the FP32 checkpoint, load it safely, and store it (with metadata) as model.safetensors."""
    checkpoint = resolve_checkpoint(target.model.checkpoint)
    section = target.model.model_dump(mode="json")

    def produce(folder: Path) -> dict[str, Any]:
        from edgeresnext.models import load_checkpoint, save_checkpoint

        kwargs = {
            k: v
            for k, v in (("num_classes", target.model.num_classes), ("in_channels", target.model.in_channels))
            if v is not None
        }
        model = load_checkpoint(checkpoint, arch=target.model.arch, **kwargs)
        save_checkpoint(folder / "model.safetensors", model, model.meta)
        return {
            "arch": model.meta.arch,
            "num_classes": model.meta.num_classes,
            "source": str(checkpoint),
            "parameters": sum(p.numel() for p in model.parameters()),
        }

    return run_stage(root / "model", "model", section, [checkpoint], produce)


def _load_stage_model(model_stage: StageResult):
    from edgeresnext.models import load_checkpoint

    return load_checkpoint(model_stage.folder / "model.safetensors")


def _calibration_files(target: Target) -> list[Path]:
    from edgeresnext.data.folder import list_images

    return list_images(target.quant.calib_dir)


def stage_export(target: Target, root: Path, model_stage: StageResult) -> StageResult:
    """FP32 ONNX (dynamic batch), onnx.checker + shape inference, parity with PyTorch on real validation images."""
    model_file = model_stage.folder / "model.safetensors"
    parity_data = target.data.model_copy(update={"limit": EXPORT_PARITY_IMAGES, "on_bad_image": "skip"})
    config = {
        "input": target.input.model_dump(mode="json"),
        "opset": 17,
        "tolerance": EXPORT_TOLERANCE,
        "parity_data": parity_data.model_dump(mode="json"),
    }

    def produce(folder: Path) -> dict[str, Any]:
        from edgeresnext.data.validation import load_validation_data
        from edgeresnext.export import assert_parity, onnx_from_torch

        model = _load_stage_model(model_stage)
        onnx_path = onnx_from_torch(
            model, folder / "model_fp32.onnx", input_shape=_input_shape(target, model), dynamic_batch=True
        )
        images = load_validation_data(parity_data, model.meta.preprocess, model.meta.class_names).inputs
        error = assert_parity(model, onnx_path, images, tolerance=EXPORT_TOLERANCE)
        return {"max_abs_error_vs_torch": float(error), "parity_images": len(images)}

    return run_stage(root / "export", "export", config, [model_file], produce)


def _input_shape(target: Target, model) -> tuple[int, int, int]:
    size = target.input.size or model.meta.input_size
    return (model.meta.in_channels, size, size)


def stage_quantize(
    target: Target, root: Path, model_stage: StageResult, export: StageResult, progress: bool
) -> StageResult:
    """PTQ (or QAT) to the Q/DQ INT8 ONNX every backend reads; per-layer sensitivity; fallback until the gate holds."""
    model_file = model_stage.folder / "model.safetensors"
    fp32_onnx = export.folder / "model_fp32.onnx"
    calib_files = _calibration_files(target)
    section = {
        "quant": target.quant.model_dump(mode="json"),
        "gate": target.gates.max_top1_drop,
        "data": target.data.model_dump(mode="json"),
        "on_bad_image": target.data.on_bad_image,
    }

    def produce(folder: Path) -> dict[str, Any]:
        from edgeresnext.data.folder import load_folder_arrays
        from edgeresnext.quantize.sensitivity import fallback, layer_sensitivity

        spec = target.quant
        model = _load_stage_model(model_stage)
        skipped: list[tuple[str, str]] = []
        calib, _kept = load_folder_arrays(
            calib_files[: spec.subset_size],
            model.meta.preprocess,
            on_bad_image=target.data.on_bad_image,
            skipped=skipped,
        )
        began = time.perf_counter()
        int8 = folder / "model_int8.onnx"
        if spec.method == "qat":
            from edgeresnext.quantize.qat import quantize_qat

            quantize_qat(model, calib, spec, int8, progress=progress)
        else:
            from edgeresnext.quantize.ptq import quantize_ptq

            quantize_ptq(model, calib, spec, int8, fp32_onnx=fp32_onnx)
        info: dict[str, Any] = {
            "method": spec.method,
            "calibration_images": len(calib),
            "calibration_skipped": skipped,
            "quantize_seconds": round(time.perf_counter() - began, 2),
        }
        sensitivity = None
        if spec.sensitivity:
            sensitivity = layer_sensitivity(
                int8, calib[:64], folder / "sensitivity.json", fp32_onnx=fp32_onnx, progress=progress
            )
            info["most_sensitive"] = [row["module"] for row in sensitivity["layers"][:3]]
        gate = target.gates.max_top1_drop
        if gate is not None and spec.max_fallback_layers > 0:
            # The gate is judged on the validation set, so the fallback decides on the same images (stated in
            # quant.json and the report): it leaves layers in float only while the gate would fail.
            from edgeresnext.data.validation import load_validation_data

            data = load_validation_data(target.data, model.meta.preprocess, model.meta.class_names)
            result = fallback(
                int8,
                fp32_onnx,
                data.inputs,
                data.labels,
                gate,
                int8,
                sensitivity=sensitivity,
                max_layers=spec.max_fallback_layers,
                sensitivity_json=folder / "sensitivity.json" if sensitivity else None,
                raise_on_fail=False,
            )
            info["fallback"] = {
                "images": data.name,
                "top1_drop_before": round(result.fp32_top1 - result.int8_top1, 5),
                "top1_drop_after": round(result.top1_drop, 5),
                "layers_in_float": result.layers,
                "steps": result.steps,
                "gate_reached": result.passed,
            }
        info["seconds"] = round(time.perf_counter() - began, 2)
        write_json_atomic(folder / "quant.json", info)
        return info

    return run_stage(root / "quantize", "quantize", section, [model_file, fp32_onnx, *calib_files], produce)


def _calibration_shortfall(target: Target, found: int, usable: int) -> str | None:
    """Fewer usable calibration images than quant.subset_size: an error under on_bad_image 'fail', else a note."""
    wanted = target.quant.subset_size
    if usable >= wanted:
        return None
    message = (
        f"{target.quant.calib_dir}: {usable} usable calibration image(s) ({found} found), fewer than "
        f"quant.subset_size={wanted}; add images (`make data`) or lower quant.subset_size"
    )
    if target.data.on_bad_image == "fail":
        raise DataError(message)
    logger.warning(message)
    return message


def stage_lint(target: Target, root: Path, qdq_onnx: Path) -> StageResult:
    """The TensorRT lint on the Q/DQ ONNX: every INT8 export passes it before any backend sees it."""

    def produce(folder: Path) -> dict[str, Any]:
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
        return {"errors": 0, "warnings": len(found) - len(errors)}

    return run_stage(root / "lint", "lint", {"rules": "tensorrt"}, [qdq_onnx], produce)


def stage_compile(target: Target, root: Path, onnx_path: Path, model_stage: StageResult) -> StageResult:
    """The target's backend turns the (Q/DQ or FP32) ONNX into what the device runs; artifact.json describes it."""
    from edgeresnext.backends import get_backend

    backend = get_backend(target.backend)
    native = target.backend == "openvino" and target.precision == "int8" and target.backend_options.openvino.native_int8
    section = {
        "backend": target.backend,
        "precision": target.precision,
        "input": target.input.model_dump(mode="json"),
        "options": getattr(target.backend_options, target.backend).model_dump(mode="json"),
        "available": backend.available(),
    }

    def produce(folder: Path) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if native:  # NNCF calibrates the OpenVINO model itself, on the images the quantize stage would use
            from edgeresnext.data.folder import load_folder_arrays
            from edgeresnext.models import read_checkpoint

            meta = read_checkpoint(model_stage.folder / "model.safetensors").meta
            files = _calibration_files(target)[: target.quant.subset_size]
            extra["calibration"], _kept = load_folder_arrays(
                files, meta.preprocess, on_bad_image=target.data.on_bad_image
            )
        artifact = backend.compile(onnx_path, target, folder, **extra)
        artifact.save(folder / "artifact.json")
        return {"artifact": artifact.to_dict()}

    inputs = [onnx_path]
    if native:
        inputs += [model_stage.folder / "model.safetensors", *_calibration_files(target)]
        section["quant"] = target.quant.model_dump(mode="json")
    return run_stage(root / "compile", "compile", section, inputs, produce)


def _artifacts_under_test(target: Target, export: StageResult, qdq_onnx: Path | None, compiled: StageResult):
    from edgeresnext.backends import Artifact, get_backend
    from edgeresnext.validate import ArtifactUnderTest, SkippedArtifact, runner_from_file

    items: list[Any] = []
    fp32 = export.folder / "model_fp32.onnx"
    items.append(
        ArtifactUnderTest(
            "onnx-fp32 (onnxruntime)", runner_from_file(fp32, target, "onnxruntime"), [fp32], "onnxruntime", "fp32"
        )
    )
    if qdq_onnx is not None:
        items.append(
            ArtifactUnderTest(
                "qdq-int8 (onnxruntime)",
                runner_from_file(qdq_onnx, target, "onnxruntime"),
                [qdq_onnx],
                "onnxruntime",
                "int8",
            )
        )
    artifact = Artifact.load(compiled.folder / "artifact.json")
    if (
        artifact.backend == "onnxruntime"
        and artifact.precision in ("fp32", "int8")
        and not artifact.info.get("differs_from_source")
    ):
        return items  # the artifact is one of the files above, already validated
    backend = get_backend(artifact.backend)
    name = f"{artifact.backend}-{artifact.precision}"
    files = [Path(p) for p in artifact.files if Path(p).is_file()]
    reason = (
        backend.available()
        if artifact.kind != "kit"
        else (artifact.info.get("reason") or "an on-device build kit: the engine is built on the device")
    )
    if reason is None:
        runner = backend.load(artifact, target)
        items.append(
            ArtifactUnderTest(name, runner, files, artifact.backend, artifact.precision, info=runner.precision_report())
        )
    else:
        items.append(SkippedArtifact(name, reason, files, artifact.backend, artifact.precision))
    for proxy_name, proxy in backend.proxies(artifact):
        if Path(proxy.path).is_file():
            items.append(
                ArtifactUnderTest(
                    proxy_name,
                    runner_from_file(proxy.path, target, proxy.backend),
                    list(proxy.files),
                    proxy.backend,
                    proxy.precision,
                )
            )
    return items


def stage_validate(
    target: Target,
    root: Path,
    model_stage: StageResult,
    export: StageResult,
    qdq_onnx: Path | None,
    compiled: StageResult,
    sensitivity: Path | None,
    progress: bool,
) -> StageResult:
    """Every artifact against the FP32 PyTorch model on the target's validation set; the report; gate verdicts."""
    files = [
        model_stage.folder / "model.safetensors",
        export.folder / "model_fp32.onnx",
        *([qdq_onnx] if qdq_onnx else []),
        *[compiled.folder / n for n in sorted(compiled.outputs)],
        *([sensitivity] if sensitivity and sensitivity.is_file() else []),
    ]
    section = {
        "data": target.data.model_dump(mode="json"),
        "gates": target.gates.model_dump(mode="json"),
        "validate": target.validate_.model_dump(mode="json"),
        "threads": _threads(target),
    }

    def produce(folder: Path) -> dict[str, Any]:
        from edgeresnext.data.validation import load_validation_data
        from edgeresnext.report import write_report
        from edgeresnext.validate import validate

        model = _load_stage_model(model_stage)
        data = load_validation_data(target.data, model.meta.preprocess, model.meta.class_names)
        items = _artifacts_under_test(target, export, qdq_onnx, compiled)
        runnable = [i for i in items if hasattr(i, "runner")]
        primary = runnable[-1].name
        sens = json.loads(sensitivity.read_text()) if sensitivity and sensitivity.is_file() else None
        report = validate(
            target,
            items,
            model,
            data,
            primary=primary,
            sensitivity=sens,
            model_files=[model_stage.folder / "model.safetensors"],
            progress=progress,
        )
        write_report(report, folder)
        rows = []
        for row in report["artifacts"]:
            entry = {
                k: row.get(k)
                for k in (
                    "name",
                    "status",
                    "skip_reason",
                    "top1",
                    "top1_drop",
                    "agreement",
                    "speedup_vs_fp32",
                    "size_bytes",
                )
            }
            if row.get("status") == "ok":
                entry["p50_ms"] = row["latency"]["p50_ms"]
            rows.append(entry)
        return {"passed": report["passed"], "primary": report["primary"], "artifacts": rows, "gates": report["gates"]}

    return run_stage(root / "report", "validate", section, files, produce)


def _threads(target: Target) -> int | None:
    from edgeresnext.validate import target_threads

    return target_threads(target)


def stage_bundle(
    target: Target,
    root: Path,
    model_stage: StageResult,
    compiled: StageResult,
    qdq_onnx: Path | None,
    validated: StageResult,
) -> StageResult:
    """The folder device apps embed: artifact(s), labels.txt, manifest.json with sha256 of every file."""
    artifact_json = compiled.folder / "artifact.json"
    report_json = validated.folder / "report.json"
    files = [
        model_stage.folder / "model.safetensors",
        artifact_json,
        report_json,
        *[compiled.folder / n for n in sorted(compiled.outputs)],
    ]

    def produce(folder: Path) -> dict[str, Any]:
        from edgeresnext.backends import Artifact
        from edgeresnext.bundle import bundle_from_artifacts
        from edgeresnext.models import read_checkpoint

        meta = read_checkpoint(model_stage.folder / "model.safetensors").meta
        artifact = Artifact.load(artifact_json)
        report = json.loads(report_json.read_text())
        primary = next(r for r in report["artifacts"] if r["name"] == report["primary"])
        summary = {
            "dataset": report["data"]["name"],
            "images": report["data"]["count"],
            "validated_artifact": primary["name"],
            "top1": primary["top1"],
            "top1_fp32": report["artifacts"][0]["top1"],
            "top1_drop": primary["top1_drop"],
            "agreement": primary["agreement"],
            "latency_ms_p50": primary["latency"]["p50_ms"],
            "gates_passed": report["passed"],
        }
        bundle_from_artifacts(folder, [artifact], meta, validation_summary=summary, target=target)
        return {"validation_summary": summary}

    return run_stage(
        root / "bundle", "bundle", {"backend": target.backend}, files, produce, record_path=root / "bundle.stage.json"
    )


def prepare_inputs(target: Target, say: Callable[[str], None], install: bool = False) -> None:
    """Set up the default inputs ``target`` reads, and only those: Fashion-MNIST when it validates (or calibrates)
    on it, and the generated ``calib_data/`` when it calibrates there and the folder holds no images yet (a
    folder with images is used as it is: they may be the user's own). ``install`` lets Fashion-MNIST come from
    apt-get (see :func:`~edgeresnext.data.fashion_mnist.ensure_fashion_mnist`)."""
    from edgeresnext.data import calibration
    from edgeresnext.data.fashion_mnist import ensure_fashion_mnist

    calib = Path(target.quant.calib_dir)
    default_calib = calib == Path(calibration.DEFAULT_FOLDER) and not _has_images(calib)
    needs_calib = target.precision == "int8" and default_calib
    if needs_calib or (target.data.dataset == "fashion-mnist" and target.data.root is None):
        ensure_fashion_mnist(install=install)
    if needs_calib:
        say(f"calibration images: {calib}/ is empty; writing {calibration.DEFAULT_COUNT} Fashion-MNIST training images")
        calibration.write_calibration_set(calib, count=calibration.DEFAULT_COUNT, install=install)


def _has_images(folder: Path) -> bool:
    from edgeresnext.data.folder import list_images

    try:
        return bool(list_images(folder))
    except DataError:
        return False


def build(
    target: Target,
    out_root: str | Path = "build",
    progress: bool = True,
    on_event: Callable[[str], None] | None = None,
    install: bool = False,
) -> BuildSummary:
    """Run every stage for ``target`` into ``<out_root>/<target.name>/``; returns the summary the CLI prints.

    ``on_event`` receives one line per stage as it starts and ends (the CLI prints them). Missing default
    inputs are set up first (:func:`prepare_inputs`; ``install`` allows apt-get for Fashion-MNIST).
    """
    root = Path(out_root) / target.name
    say = on_event or (lambda line: logger.info(line))
    prepare_inputs(target, say, install=install)
    summary = BuildSummary(target=target, root=root)
    int8 = target.precision == "int8"
    planned = [s for s in STAGES if int8 or s not in ("quantize", "lint")]

    def step(name: str, run: Callable[[], StageResult]) -> StageResult:
        index = planned.index(name) + 1
        say(f"[{index}/{len(planned)}] {name} ...")
        result = run()
        summary.stages.append(result)
        state = "unchanged, skipped" if result.skipped else f"done in {result.seconds:.1f} s"
        say(f"[{index}/{len(planned)}] {name}: {state}")
        return result

    with BuildLock(root, on_wait=say):
        # A build killed mid-write (kill -9, power loss) leaves hidden temporaries; the lock says none is live.
        remove_stale_temporaries(root)
        if int8:  # a missing, empty or too small calibration folder fails before any heavy work
            found = len(_calibration_files(target))
            _calibration_shortfall(target, found, found)
        write_json_atomic(root / "config.json", target.resolved())
        model_stage = step("model", lambda: stage_model(target, root))
        export = step("export", lambda: stage_export(target, root, model_stage))
        qdq_onnx = sensitivity = None
        if int8:
            quantized = step("quantize", lambda: stage_quantize(target, root, model_stage, export, progress))
            qdq_onnx = quantized.folder / "model_int8.onnx"
            if quantized.info.get("calibration_skipped"):
                skipped = quantized.info["calibration_skipped"]
                summary.notes.append(
                    f"calibration: skipped {len(skipped)} unreadable image(s) (data.on_bad_image: "
                    f"skip), first: {skipped[0][1]}; all in {quantized.folder / 'quant.json'}"
                )
            # Judged here from what the stage used (also for a cached stage), not inside it.
            short = _calibration_shortfall(
                target, len(_calibration_files(target)), int(quantized.info.get("calibration_images", 0))
            )
            if short:
                summary.notes.append(f"calibration: {short}")
            sensitivity = quantized.folder / "sensitivity.json"
            step("lint", lambda: stage_lint(target, root, qdq_onnx))
        # OpenVINO-native INT8 quantizes the FP32 model itself (NNCF's OpenVINO path), not the Q/DQ file.
        native = target.backend == "openvino" and target.backend_options.openvino.native_int8
        source = qdq_onnx if int8 and not native else export.folder / "model_fp32.onnx"
        compiled = step("compile", lambda: stage_compile(target, root, source, model_stage))
        validated = step(
            "validate",
            lambda: stage_validate(target, root, model_stage, export, qdq_onnx, compiled, sensitivity, progress),
        )
        step("bundle", lambda: stage_bundle(target, root, model_stage, compiled, qdq_onnx, validated))
    summary.ok = bool(validated.info.get("passed", True))
    artifact = compiled.info.get("artifact", {})
    if artifact.get("kind") == "kit":
        summary.not_done.append(artifact.get("info", {}).get("reason", "TensorRT engine: built on the device"))
        for line in artifact.get("info", {}).get("device_commands", []):
            summary.notes.append(f"on the device: {line}")
    if target.model.checkpoint == SHIPPED_CHECKPOINT:
        summary.notes.append("model: the shipped Fashion-MNIST ResNeXt (override with CHECKPOINT=... / MODEL=...)")
    return summary


def build_all(
    targets: list[Target],
    out_root: str | Path = "build",
    progress: bool = True,
    on_event: Callable[[str], None] | None = None,
    install: bool = False,
) -> tuple[str, bool]:
    """Build each target (a failure is recorded, not fatal) and write ``<out_root>/comparison.md``."""
    from edgeresnext.errors import EdgeResNeXtError

    rows = [
        [
            "target",
            "backend",
            "precision",
            "artifact",
            "top-1",
            "drop (pt)",
            "agreement",
            "p50 ms",
            "speed-up vs FP32",
            "gates",
        ]
    ]
    all_ok = True
    for target in targets:
        try:
            summary = build(target, out_root=out_root, progress=progress, on_event=on_event, install=install)
        except EdgeResNeXtError as err:
            all_ok = False
            rows.append([target.name, target.backend, target.precision, "-", "-", "-", "-", "-", "-", f"error: {err}"])
            continue
        all_ok &= summary.ok
        validated = summary.stage("validate")
        info = validated.info if validated else {}
        primary = next((r for r in info.get("artifacts", []) if r["name"] == info.get("primary")), None)
        if primary is None:
            rows.append([target.name, target.backend, target.precision, "-", "-", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                target.name,
                target.backend,
                target.precision,
                primary["name"],
                f"{primary['top1'] * 100:.2f} %",
                f"{primary['top1_drop'] * 100:+.2f}",
                f"{primary['agreement'] * 100:.2f} %",
                f"{primary['p50_ms']:.3f}",
                f"{primary['speedup_vs_fp32']:.2f}x",
                "pass" if info.get("passed") else "FAIL",
            ]
        )
    table = "\n".join(
        "| " + " | ".join(row) + " |" + ("\n|" + "---|" * len(row) if i == 0 else "") for i, row in enumerate(rows)
    )
    from edgeresnext.atomic import write_text_atomic

    path = write_text_atomic(Path(out_root) / "comparison.md", "# Targets compared\n\n" + table + "\n")
    return f"{table}\n\ncomparison written to {path}", all_ok
