"""``validate``: every artifact against the FP32 PyTorch model on the same images, into one typed report."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnext.config import build_folder
from edgeresnext.data.validation import ValidationData, load_validation_data
from edgeresnext.environment import environment, usable_cores
from edgeresnext.errors import BackendUnavailable, ConfigError
from edgeresnext.validate.artifacts import (
    ArtifactUnderTest,
    artifacts_from_specs,
    discover_artifacts,
    find_sensitivity,
    pick_primary,
    target_threads,
)
from edgeresnext.validate.gates import REFERENCE_NAME, evaluate_gates
from edgeresnext.validate.measure import (
    PeakMemory,
    RunnerLike,
    TorchRunner,
    _tile,
    measure_latency,
    measure_throughput,
    run_logits,
)
from edgeresnext.validate.metrics import (
    classification_metrics,
    compare_outputs,
    fidelity_metrics,
    paired_uncertainty,
    reference_warning,
)
from edgeresnext.validate.results import (
    ArtifactResult,
    DataSummary,
    Latency,
    Throughput,
    ValidationReport,
)

if TYPE_CHECKING:
    import torch

    from edgeresnext.config import Target

logger = logging.getLogger(__name__)


def _file_entries(files: Sequence[Path]) -> list[dict[str, Any]]:
    entries = []
    for path in files:
        path = Path(path)
        entries.append({"path": str(path), "bytes": path.stat().st_size if path.is_file() else None})
    return entries


def validate(
    target: Target,
    artifacts: Sequence[ArtifactUnderTest],
    model: torch.nn.Module | RunnerLike,
    data: ValidationData,
    *,
    primary: str | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    model_files: Sequence[Path] = (),
    sensitivity: Any = None,
    command: str | None = None,
    progress: bool = True,
    notes: Sequence[str] = (),
    kept_logits: dict[str, np.ndarray] | None = None,
    kept_images: int = 0,
) -> ValidationReport:
    """Validate ``artifacts`` against the FP32 ``model`` on ``data``; returns the report (see report.py).

    ``model`` is the torch module (or any batch -> logits callable) every artifact is compared with, image by
    image: each artifact's top-1 drop and agreement get intervals from the paired per-image outcomes
    (:func:`~edgeresnext.validate.metrics.paired_uncertainty`, at ``target.gates.confidence``). Each artifact's
    speed-up is against the float build of its own runtime among ``artifacts`` (:func:`speedup_baseline`).
    ``primary`` names the artifact the gates apply to (default: the last runnable one, i.e. the target's
    deployed artifact). Gates are evaluated and recorded but not raised: call :func:`raise_for_gates`
    after writing the report so a failed build still leaves its report behind. ``kept_logits``, when given, receives
    each runnable row's logits for the first ``kept_images`` images (the device check set reuses them).
    """
    import torch

    runs = runs if runs is not None else target.validate_.latency_runs
    warmup = warmup if warmup is not None else target.validate_.warmup_runs
    threads = threads if threads is not None else target_threads(target)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    throughput_batch = target.input.batch.opt
    confidence = target.gates.confidence or DEFAULT_CONFIDENCE
    reference = ArtifactUnderTest(
        name=REFERENCE_NAME,
        runner=TorchRunner(model) if isinstance(model, torch.nn.Module) else model,
        files=list(model_files),
        backend="pytorch",
        precision="fp32",
    )
    runnable = [reference] + [a for a in artifacts if a.runnable]
    names = [a.name for a in artifacts]
    duplicate = next((n for n in names if names.count(n) > 1 or n == REFERENCE_NAME), None)
    if duplicate:
        raise ConfigError(f"artifact name {duplicate!r} is used twice (or clashes with the reference)")
    num_classes = len(data.class_names)
    results: list[ArtifactResult] = []
    reference_logits: np.ndarray | None = None
    subsets: list[str] = []
    try:
        for item in runnable:
            count = len(data) if item.images is None or reference_logits is None else min(item.images, len(data))
            inputs, labels = data.inputs[:count], data.labels[:count]
            if count < len(data):
                subsets.append(
                    f"{item.name}: validated on the first {count:,} of {len(data):,} images "
                    "(validate.stand_in_images); its top-1, drop and intervals are over those images"
                )
            logger.info("validating %s on %d images", item.name, count)
            with PeakMemory() as memory:
                logits = run_logits(item.runner, inputs, progress=progress, desc=item.name)
                if kept_logits is not None and kept_images > 0:
                    kept_logits[item.name] = np.array(logits[:kept_images], copy=True)
                latency = measure_latency(item.runner, data.inputs[:1], runs=runs, warmup=warmup)
                throughput = measure_throughput(
                    item.runner, _tile(data.inputs, throughput_batch), runs=max(3, min(20, runs // 5)), warmup=2
                )
            uncertainty = None
            if reference_logits is None:
                reference_logits = logits
                broken_reference = reference_warning(logits, data.labels, data.class_names)
            else:
                uncertainty = paired_uncertainty(logits, reference_logits[:count], labels, confidence)
            runtime = _runtime_report(item.runner)
            result = ArtifactResult(
                name=item.name,
                backend=item.backend,
                precision=item.precision,
                files=_file_entries(item.files),
                size_bytes=sum(Path(p).stat().st_size for p in item.files if Path(p).is_file()) or None,
                info={**item.info, "runtime": runtime} if runtime else item.info,
                **classification_metrics(logits, labels, num_classes),
                **fidelity_metrics(logits, reference_logits[:count]),
                latency=Latency(**latency.to_dict()),
                throughput=Throughput(**throughput),
                peak_rss_mb=round(memory.peak_mb, 2),
                peak_rss_delta_mb=round(memory.delta_mb, 2),
                memory_method=memory.method,
                uncertainty=uncertainty,
            )
            results.append(result)
            logger.info(
                "%s: top-1 %.4f, agreement %.4f, p50 %.3f ms", item.name, result.top1, result.agreement, result.p50_ms
            )
    finally:
        torch.set_num_threads(previous_threads)
    ref = results[0]
    for result in results:
        result.top1_drop = ref.top1 - result.top1
        if result.uncertainty is not None and result.uncertainty.n != len(data):  # a subset: against FP32 on it
            result.top1_drop = result.uncertainty.drop
        baseline = speedup_baseline(result, results)
        if baseline is not None and baseline.p50_ms and result.p50_ms:
            result.speedup_baseline = baseline.name
            result.speedup_vs_fp32 = baseline.p50_ms / result.p50_ms
    primary = primary or results[-1].name
    gates = evaluate_gates(target.gates, results, primary)
    results += [
        ArtifactResult(
            name=item.name,
            backend=item.backend,
            precision=item.precision,
            files=_file_entries(item.files),
            status="skipped",
            skip_reason=item.skip_reason,
        )
        for item in artifacts
        if not item.runnable
    ]
    threads_used = threads if threads is not None else previous_threads
    return ValidationReport(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        command=command or " ".join(["edgeresnext", *sys.argv[1:]]),
        target={
            "name": target.name,
            "backend": target.backend,
            "precision": target.precision,
            "source": target.source,
            "gates": target.gates.model_dump(mode="json"),
        },
        environment=environment(threads_used),
        data=DataSummary(
            name=data.name,
            count=len(data),
            num_classes=num_classes,
            class_names=data.class_names,
            input_shape=list(data.inputs.shape[1:]),
            skipped=[{"file": file, "reason": reason} for file, reason in data.skipped],
        ),
        protocol={
            "latency_batch": 1,
            "warmup": warmup,
            "runs": runs,
            "throughput_batch": throughput_batch,
            "threads": threads_used,
            "timer": "time.perf_counter around one inference with the input bound once (as benchmark_app and "
            "trtexec time it); call_p50_ms: around one runner(batch) call from Python",
            "memory": "process peak RSS during the artifact's accuracy pass and timing, minus RSS before",
        },
        reference=REFERENCE_NAME,
        primary=primary,
        artifacts=results,
        gates=gates,
        sensitivity=normalize_sensitivity(sensitivity),
        notes=[
            *([f"WARNING: {broken_reference}"] if broken_reference else []),
            *notes,
            *subsets,
            *_notes(results, primary),
        ],
    )


DEFAULT_CONFIDENCE = 0.95
# The float build an artifact's speed-up is measured against, in order of preference: FP32 in the same runtime,
# else (TensorRT) its FP16 engine, the float build a GPU deploys.
FLOAT_BASELINES = ("fp32", "fp16")


def speedup_baseline(result: ArtifactResult, results: Sequence[ArtifactResult]) -> ArtifactResult | None:
    """The measured row ``result``'s speed-up is against: the same backend's FP32 row (an FP32 row is its own),
    else the same backend's FP16 row (TensorRT's FP16 engine beside the INT8 one); None when neither was timed.

    Never another runtime: PyTorch eager is the accuracy reference, but timing an OpenVINO INT8 IR against it
    mixes the runtime's speed-up into the quantization's.
    """
    if result.precision in FLOAT_BASELINES[:1]:
        return result
    for precision in FLOAT_BASELINES:
        if precision == result.precision:
            return None  # an FP16 build with no FP32 one beside it has nothing of its runtime to compare with
        found = next((r for r in results if r.ok and r.backend == result.backend and r.precision == precision), None)
        if found is not None:
            return found
    return None


def _notes(results: list[ArtifactResult], primary: str) -> list[str]:
    """What the report must say in words (deterministic: which build is faster is the views' job, from the p50s)."""
    notes = []
    for entry in results:
        if not entry.ok:
            notes.append(
                f"{entry.name}: not timed here, so its speed-up over its own runtime's float build is unknown "
                "(no row run here stands in for it)"
            )
        elif entry.name == primary and entry.speedup_baseline is None:
            notes.append(f"{entry.name}: no {entry.label.rsplit(' ', 1)[0]} float build was timed, so no speed-up")
    for entry in results:
        # What the runtime says about its own choices (OpenVINO running float layers in bfloat16, say).
        notes += [f"{entry.name}: {warning}" for warning in (entry.info.get("runtime") or {}).get("warnings", [])]
    return notes


def _runtime_report(runner: RunnerLike) -> dict[str, Any] | None:
    """What the runtime says it really runs (precision per layer type), without the per-layer list."""
    report = getattr(runner, "precision_report", None)
    if report is None:
        return None
    try:
        return report().to_dict(layers=False)
    except Exception as err:  # a diagnostic must never fail the validation
        logger.warning("precision report failed: %s", err)
        return None


# Which number of a per-layer row ranks the layers, in order of preference (the quantize stage writes "gain":
# how much keeping that layer in float reduces the logit error).
SENSITIVITY_KEYS = ("gain", "top1_drop", "sensitivity", "error", "value")


def normalize_sensitivity(sensitivity: Any) -> list[dict[str, Any]] | None:
    """Per-layer sensitivity from the quantization stage as ``[{"layer", "value", "metric"}]``, largest first.

    Accepts ``{layer: value}``, a list of dicts with ``layer`` (and ``module``, shown instead when present) and
    a numeric field (``SENSITIVITY_KEYS`` first), or a dict holding such a list under ``layers`` (as
    :func:`edgeresnext.quantize.sensitivity.layer_sensitivity` writes); anything else is left out with a warning.
    """
    if not sensitivity:
        return None
    rows: list[dict[str, Any]] = []
    if isinstance(sensitivity, dict) and isinstance(sensitivity.get("layers"), list):
        sensitivity = sensitivity["layers"]
    if isinstance(sensitivity, dict):
        rows = [
            {"layer": str(k), "value": float(v), "metric": "error"}
            for k, v in sensitivity.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
    elif isinstance(sensitivity, list):
        for row in sensitivity:
            if not isinstance(row, dict) or "layer" not in row:
                continue
            numeric = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            key = next((k for k in SENSITIVITY_KEYS if k in numeric), next(iter(numeric), None))
            if key is None:
                continue
            metric = "logit MSE removed by keeping the layer in float" if key == "gain" else str(row.get("metric", key))
            rows.append(
                {"layer": str(row.get("module") or row["layer"]), "value": float(numeric[key]), "metric": metric}
            )
    if not rows:
        logger.warning("sensitivity data has no usable {layer: value} entries; left out of the report")
        return None
    return sorted(rows, key=lambda r: r["value"], reverse=True)


def validate_target(
    target: Target,
    build_root: str | Path = "build",
    artifact_specs: Sequence[str] = (),
    checkpoint: str | None = None,
    primary: str | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    command: str | None = None,
    progress: bool = True,
) -> ValidationReport:
    """``edgeresnext validate``: validate a build's artifacts under ``<build_root>/<target>/`` (or the given files).

    Gates are recorded, not raised (see :func:`raise_for_gates`); the caller writes the report.
    """
    from edgeresnext.models import load_checkpoint
    from edgeresnext.models.shipped import resolve_checkpoint

    root = build_folder(build_root, target.name)
    if threads is None:
        threads = target_threads(target)
    if threads is None:
        threads = usable_cores()
    staged = root / "model" / "model.safetensors"
    model_path = (
        resolve_checkpoint(checkpoint)
        if checkpoint
        else staged
        if staged.is_file()
        else resolve_checkpoint(target.model.checkpoint)
    )
    model = load_checkpoint(model_path)
    meta = model.meta
    artifacts = (
        artifacts_from_specs(artifact_specs, target, threads)
        if artifact_specs
        else discover_artifacts(root, target, threads)
    )
    data = load_validation_data(target.data, meta.preprocess, meta.class_names)
    report = validate(
        target,
        artifacts,
        model,
        data,
        primary=primary or pick_primary(target, artifacts),
        runs=runs,
        warmup=warmup,
        threads=threads,
        model_files=[model_path],
        sensitivity=find_sensitivity(root),
        command=command,
        progress=progress,
    )
    return report


def compare_artifacts(
    path_a: str,
    path_b: str,
    data: ValidationData,
    target: Target | None = None,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    worst: int = 10,
) -> dict[str, Any]:
    """Run two artifact files (``[BACKEND:]PATH``) on the same ``data`` and compare them (``b`` is the reference)."""
    items = artifacts_from_specs([f"a={path_a}", f"b={path_b}"], target)
    skipped = [i for i in items if not i.runnable]
    if skipped:
        raise BackendUnavailable(skipped[0].skip_reason)
    logits = [run_logits(item.runner, data.inputs) for item in items]  # type: ignore[union-attr]
    result = compare_outputs(logits[0], logits[1], data.labels, atol=atol, rtol=rtol, worst=worst)
    result.update({"a": path_a, "b": path_b, "data": data.name, "class_names": data.class_names})
    return result
