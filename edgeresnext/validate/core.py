"""``validate``: every artifact against the FP32 PyTorch model on the same images, into one typed report."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnext.data.sampling import class_counts
from edgeresnext.data.validation import ValidationData, load_validation_data
from edgeresnext.environment import environment
from edgeresnext.errors import BackendUnavailable, ConfigError
from edgeresnext.validate.artifacts import (
    ArtifactUnderTest,
    artifacts_from_specs,
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


@dataclass
class _Pass:
    """How every row of one validation is run and timed, and what the rows share (the reference's logits)."""

    data: ValidationData
    runs: int
    warmup: int
    throughput_batch: int
    confidence: float
    progress: bool
    kept_logits: dict[str, np.ndarray] | None
    kept_images: int
    reference_logits: np.ndarray | None = None
    broken_reference: str | None = None
    subsets: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        return [f"WARNING: {self.broken_reference}"] if self.broken_reference else []


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
    """Validate ``artifacts`` against the FP32 ``model`` on ``data``; returns the report (see the report package).

    ``model`` is the torch module (or any batch -> logits callable) every artifact is compared with, image by
    image: each artifact's top-1 drop and agreement get intervals from the paired per-image outcomes
    (:func:`~edgeresnext.validate.metrics.paired_uncertainty`, at ``target.gates.confidence``). Each artifact's
    speed-up is against the float build of its own runtime among ``artifacts`` (:func:`speedup_baseline`).
    ``primary`` names the artifact the gates apply to (default: :func:`pick_primary`). Gates are evaluated and
    recorded but not raised: call :func:`raise_for_gates` after writing the report so a failed build still leaves
    its report behind. ``kept_logits``, when given, receives each runnable row's logits for the first
    ``kept_images`` images (the device check set reuses them).
    """
    threads = threads if threads is not None else target_threads(target)
    run = _Pass(
        data=data,
        runs=runs if runs is not None else target.validate_.latency_runs,
        warmup=warmup if warmup is not None else target.validate_.warmup_runs,
        throughput_batch=target.input.batch.opt,
        confidence=target.gates.confidence or DEFAULT_CONFIDENCE,
        progress=progress,
        kept_logits=kept_logits,
        kept_images=kept_images,
    )
    rows = [_reference_row(model, model_files), *(a for a in _checked_names(artifacts) if a.runnable)]
    with _torch_threads(threads) as previous_threads:
        results = [_measure_row(item, run) for item in rows]
    _set_drops_and_speedups(results, len(data))
    primary = primary or pick_primary(target, artifacts)
    gates = evaluate_gates(target.gates, results, primary)
    results += [_skipped_result(item) for item in artifacts if not item.runnable]
    threads_used = threads if threads is not None else previous_threads
    return ValidationReport(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        command=command or " ".join(["edgeresnext", *sys.argv[1:]]),
        target=_target_summary(target),
        environment=environment(threads_used),
        data=_data_summary(data),
        protocol=_protocol(run, threads_used),
        reference=REFERENCE_NAME,
        primary=primary,
        artifacts=results,
        gates=gates,
        sensitivity=normalize_sensitivity(sensitivity),
        notes=[*run.warnings(), *notes, *run.subsets, *_notes(results, primary)],
    )


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[int]:
    """Torch runs on ``threads`` (None: as it is) inside the block; yields the count it had before."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield previous
    finally:
        torch.set_num_threads(previous)


def _reference_row(model: torch.nn.Module | RunnerLike, model_files: Sequence[Path]) -> ArtifactUnderTest:
    import torch

    return ArtifactUnderTest(
        name=REFERENCE_NAME,
        runner=TorchRunner(model) if isinstance(model, torch.nn.Module) else model,
        files=list(model_files),
        backend="pytorch",
        precision="fp32",
    )


def _checked_names(artifacts: Sequence[ArtifactUnderTest]) -> Sequence[ArtifactUnderTest]:
    names = [a.name for a in artifacts]
    duplicate = next((n for n in names if names.count(n) > 1 or n == REFERENCE_NAME), None)
    if duplicate:
        raise ConfigError(f"artifact name {duplicate!r} is used twice (or clashes with the reference)")
    return artifacts


def _measure_row(item: ArtifactUnderTest, run: _Pass) -> ArtifactResult:
    """One runnable row: its logits on the set (or the first ``item.images``: a stand-in), latency, throughput and
    peak memory; metrics against the reference's logits (the reference row is measured first and sets them)."""
    data = run.data
    count = len(data) if item.images is None or run.reference_logits is None else min(item.images, len(data))
    inputs, labels = data.inputs[:count], data.labels[:count]
    if count < len(data):
        run.subsets.append(
            f"{item.name}: validated on {data.sample_of(count)} (validate.stand_in_images); its top-1, drop and "
            "intervals are over those images"
        )
    logger.info("validating %s on %d images", item.name, count)
    with PeakMemory() as memory:
        logits = run_logits(item.runner, inputs, progress=run.progress, desc=item.name)
        if run.kept_logits is not None and run.kept_images > 0:
            run.kept_logits[item.name] = np.array(logits[: run.kept_images], copy=True)
        latency = measure_latency(item.runner, data.inputs[:1], runs=run.runs, warmup=run.warmup)
        batch = _tile(data.inputs, run.throughput_batch)
        throughput = measure_throughput(item.runner, batch, runs=max(3, min(20, run.runs // 5)), warmup=2)
    uncertainty = None
    if run.reference_logits is None:
        run.reference_logits = logits
        run.broken_reference = reference_warning(logits, data.labels, data.class_names)
    else:
        uncertainty = paired_uncertainty(logits, run.reference_logits[:count], labels, run.confidence)
    runtime = _runtime_report(item.runner)
    result = ArtifactResult(
        name=item.name,
        backend=item.backend,
        precision=item.precision,
        files=_file_entries(item.files),
        size_bytes=sum(Path(p).stat().st_size for p in item.files if Path(p).is_file()) or None,
        info={**item.info, "runtime": runtime} if runtime else item.info,
        **classification_metrics(logits, labels, len(data.class_names)),
        **fidelity_metrics(logits, run.reference_logits[:count]),
        latency=latency,
        throughput=throughput,
        peak_rss_mb=round(memory.peak_mb, 2),
        peak_rss_delta_mb=round(memory.delta_mb, 2),
        memory_method=memory.method,
        uncertainty=uncertainty,
    )
    logger.info("%s: top-1 %.4f, agreement %.4f, p50 %.3f ms", item.name, result.top1, result.agreement, result.p50_ms)
    return result


def _set_drops_and_speedups(results: list[ArtifactResult], images: int) -> None:
    """Each row's top-1 drop against the reference (the first row; a stand-in's against FP32 on its own subset)
    and its speed-up over its runtime's float build."""
    reference = results[0]
    for result in results:
        result.top1_drop = reference.top1 - result.top1
        if result.uncertainty is not None and result.uncertainty.n != images:
            result.top1_drop = result.uncertainty.drop
        baseline = speedup_baseline(result, results)
        if baseline is not None and baseline.p50_ms and result.p50_ms:
            result.speedup_baseline = baseline.name
            result.speedup = baseline.p50_ms / result.p50_ms


def _skipped_result(item: ArtifactUnderTest) -> ArtifactResult:
    return ArtifactResult(
        name=item.name,
        backend=item.backend,
        precision=item.precision,
        files=_file_entries(item.files),
        status="skipped",
        skip_reason=item.skip_reason,
    )


def _target_summary(target: Target) -> dict[str, Any]:
    summary = {key: getattr(target, key) for key in ("name", "backend", "precision", "source")}
    return {**summary, "gates": target.gates.model_dump(mode="json")}


def _data_summary(data: ValidationData) -> DataSummary:
    return DataSummary(
        name=data.name,
        count=len(data),
        num_classes=len(data.class_names),
        class_names=data.class_names,
        input_shape=list(data.inputs.shape[1:]),
        skipped=[{"file": file, "reason": reason} for file, reason in data.skipped],
        sample_seed=data.sample_seed,
        total=data.total,
        class_counts=class_counts(data.labels, data.class_names),
    )


def _protocol(run: _Pass, threads: int) -> dict[str, Any]:
    return {
        "latency_batch": 1,
        "warmup": run.warmup,
        "runs": run.runs,
        "throughput_batch": run.throughput_batch,
        "threads": threads,
        "timer": "time.perf_counter around one inference with the input bound once (as benchmark_app and "
        "trtexec time it); call_p50_ms: around one runner(batch) call from Python",
        "memory": "process peak RSS during the artifact's accuracy pass and timing, minus RSS before",
    }


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
    artifacts: Sequence[ArtifactUnderTest],
    model_path: Path,
    *,
    primary: str | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    sensitivity_json: Path | None = None,
    command: str | None = None,
    progress: bool = True,
) -> ValidationReport:
    """``edgeresnext validate``: ``artifacts`` (a finished build's, as the build chose them, or files named on the
    command line) against the FP32 checkpoint ``model_path`` on the target's validation set.

    Gates are recorded, not raised (see :func:`raise_for_gates`); the caller writes the report.
    """
    from edgeresnext.models import load_checkpoint

    model = load_checkpoint(model_path)
    data = load_validation_data(target.data, model.meta.preprocess, model.meta.class_names)
    return validate(
        target,
        artifacts,
        model,
        data,
        primary=primary,
        runs=runs,
        warmup=warmup,
        threads=threads,
        model_files=[model_path],
        sensitivity=read_sensitivity(sensitivity_json),
        command=command,
        progress=progress,
    )


def read_sensitivity(path: Path | None) -> Any:
    """The quantize stage's per-layer sensitivity record, if it wrote one and it can be read."""
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        logger.warning("%s: cannot read sensitivity data (%s)", path, err)
        return None


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
    for row in result["worst"]:  # which image: its dataset index or file (the set is a class-stratified sample)
        row["image"] = data.ids[row["index"]] if data.ids else str(row["index"])
    return result
