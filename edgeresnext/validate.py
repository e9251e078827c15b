"""Each artifact of a build against the FP32 PyTorch model: accuracy, agreement, latency, memory, gates.

Every artifact is anything that maps a float32 NCHW batch to logits (a backend :class:`Runner`, the FP32
torch model, a plain function), so the same code measures ONNX Runtime, OpenVINO, TensorRT and PyTorch.
All of them see the same preprocessed validation array, the same batch for latency (1), the same warm-up
and run counts, and the same thread count.

What the numbers mean (they go into report.json under these names):

* ``top1``/``top5``: share of images whose label is the top / among the top-5 logits;
* ``top1_drop``: reference top-1 minus this artifact's top-1 (fraction; positive = worse than FP32);
* ``agreement``: share of images where this artifact's top-1 class equals the reference's;
* ``cosine_mean``/``cosine_min``: cosine similarity of each image's logit vector with the reference's;
* ``max_abs_error``: largest absolute logit difference over all images and classes;
* latency (``p50_ms``...): wall-clock of one inference at batch 1 with the input bound once (as benchmark_app and
  trtexec time it; see :func:`measure_latency`) after ``warmup`` calls, over ``runs`` calls; ``call_p50_ms``: the
  median of whole ``runner(batch)`` calls from Python, input checks and conversion included;
* ``peak_rss_delta_mb``: the process's peak resident memory while validating this artifact (accuracy pass
  and timing) minus its resident memory just before; the peak is reset per artifact through
  ``/proc/self/clear_refs`` where the kernel allows it, else it is the growth of ``ru_maxrss``.
"""

from __future__ import annotations

import functools
import logging
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnext.backends import backend_for_path
from edgeresnext.data.validation import ValidationData, load_validation_data
from edgeresnext.environment import environment, usable_cores
from edgeresnext.errors import BackendUnavailable, ConfigError, DataError, GateFailed
from edgeresnext.timing import time_calls

if TYPE_CHECKING:
    import torch

    from edgeresnext.config import Gates, Target

logger = logging.getLogger(__name__)

RunnerLike = Callable[[np.ndarray], np.ndarray]
REFERENCE_NAME = "pytorch-fp32"
CONFUSION_MAX_CLASSES = 20
EVAL_BATCH = 64


# --------------------------------------------------------------------------------------------- inputs
@dataclass
class ArtifactUnderTest:
    """One thing to validate: a name for the report, something that maps a batch to logits, its files."""

    name: str
    runner: RunnerLike
    files: list[Path] = field(default_factory=list)
    backend: str = ""
    precision: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SkippedArtifact:
    """An artifact the build produced that cannot run here (e.g. a TensorRT engine on a CPU host)."""

    name: str
    reason: str
    files: list[Path] = field(default_factory=list)
    backend: str = ""
    precision: str = ""


# --------------------------------------------------------------------------------------------- metrics
def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the ``k`` largest logits (ties broken by class index)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    k = min(k, logits.shape[1])
    # Stable sort on the negated logits: equal logits rank the lower class index first, like argmax.
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Top-1 accuracy of each class (None for a class absent from the labels)."""
    result: list[float | None] = []
    for cls in range(num_classes):
        mask = labels == cls
        result.append(float(np.mean(predictions[mask] == cls)) if mask.any() else None)
    return result


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[list[int]]:
    """Counts ``[true][predicted]``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix.tolist()


def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> dict[str, Any]:
    """top-1, top-5, per-class accuracy and (for <= 20 classes) the confusion matrix."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = num_classes or logits.shape[1]
    predictions = np.argmax(logits, axis=1)
    return {
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "per_class_accuracy": per_class_accuracy(predictions, labels, num_classes),
        "confusion": confusion_matrix(predictions, labels, num_classes)
        if num_classes <= CONFUSION_MAX_CLASSES
        else None,
    }


def cosine_similarity_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (two zero rows count as 1)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, np.clip(cosine, -1.0, 1.0))


def fidelity_metrics(logits: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How closely ``logits`` follow the reference's: agreement, cosine (mean/min), abs error (max/mean)."""
    logits = np.asarray(logits, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if logits.shape != reference.shape:
        raise DataError(f"logits of shape {logits.shape} cannot be compared with reference {reference.shape}")
    cosine = cosine_similarity_rows(logits, reference)
    error = np.abs(logits - reference)
    return {
        "agreement": float(np.mean(np.argmax(logits, axis=1) == np.argmax(reference, axis=1))),
        "cosine_mean": float(np.mean(cosine)),
        "cosine_min": float(np.min(cosine)),
        "max_abs_error": float(np.max(error)),
        "mean_abs_error": float(np.mean(error)),
    }


# --------------------------------------------------------------------------------------------- running
def _batch_limits(runner: RunnerLike) -> tuple[int, int] | None:
    return getattr(runner, "batch_range", None)


def run_logits(
    runner: RunnerLike, inputs: np.ndarray, batch_size: int = EVAL_BATCH, progress: bool = False, desc: str = ""
) -> np.ndarray:
    """Logits of every input, in batches; a last short batch is zero-padded when the runner needs a fixed batch."""
    limits = _batch_limits(runner)
    if limits is not None:
        batch_size = max(limits[0], min(batch_size, limits[1]))
    chunks = []
    starts = range(0, len(inputs), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc or "inference", unit="batch", leave=False)
    for start in starts:
        batch = inputs[start : start + batch_size]
        count = len(batch)
        if limits is not None and count < limits[0]:
            batch = np.concatenate([batch, np.zeros((limits[0] - count, *batch.shape[1:]), dtype=batch.dtype)])
        chunks.append(np.asarray(runner(np.ascontiguousarray(batch)), dtype=np.float32)[:count])
    return np.concatenate(chunks)


@dataclass
class LatencyStats:
    """Wall-clock per call, in milliseconds, after warm-up."""

    batch: int
    warmup: int
    runs: int
    samples_ms: list[float]
    call_samples_ms: list[float] = field(default_factory=list)
    bound: bool = False  # samples_ms timed the runner's bound inference (input set once), not runner(batch)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    def to_dict(self) -> dict[str, Any]:
        samples = np.asarray(self.samples_ms)
        return {
            "batch": self.batch,
            "warmup": self.warmup,
            "runs": self.runs,
            "p50_ms": self.percentile(50),
            "p90_ms": self.percentile(90),
            "p99_ms": self.percentile(99),
            "mean_ms": float(samples.mean()),
            "min_ms": float(samples.min()),
            "max_ms": float(samples.max()),
            "samples_ms": [round(s, 4) for s in self.samples_ms],
            "timed": "inference, input bound once" if self.bound else "runner(batch) call",
            **({"call_p50_ms": float(np.percentile(self.call_samples_ms, 50))} if self.call_samples_ms else {}),
        }


def measure_latency(runner: RunnerLike, sample: np.ndarray, runs: int = 50, warmup: int = 10) -> LatencyStats:
    """Time ``runs`` inferences of ``sample`` after ``warmup`` untimed ones (perf_counter, per call).

    A runner with ``bind()`` (every backend :class:`Runner`, the torch reference) is timed on its bound
    call: the input is set once and each call is inference alone, which is how OpenVINO's benchmark_app and
    trtexec time a model. A plain callable is timed on ``runner(sample)``. Either way, ``runs`` plain
    ``runner(sample)`` calls follow, for ``call_samples_ms``: what a Python caller sees, input checks and
    conversions included.
    """
    if runs < 1:
        raise ConfigError(f"latency runs={runs}; expected >= 1")
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    bind = getattr(runner, "bind", None)
    infer = bind(sample) if callable(bind) else functools.partial(runner, sample)
    samples = time_calls(infer, runs, warmup)
    calls = time_calls(functools.partial(runner, sample), runs, min(warmup, 3))
    return LatencyStats(
        batch=int(sample.shape[0]),
        warmup=warmup,
        runs=runs,
        samples_ms=samples,
        call_samples_ms=calls,
        bound=callable(bind),
    )


def measure_throughput(runner: RunnerLike, sample: np.ndarray, runs: int = 10, warmup: int = 2) -> dict[str, Any]:
    """Images per second over ``runs`` back-to-back calls at the batch of ``sample``."""
    stats = measure_latency(runner, sample, runs=runs, warmup=warmup)
    total_s = sum(stats.samples_ms) / 1e3
    return {
        "batch": stats.batch,
        "runs": runs,
        "images_per_s": stats.batch * runs / total_s,
        "batch_p50_ms": stats.percentile(50),
    }


class PeakMemory:
    """Peak resident memory of this process over a ``with`` block, relative to the RSS at its start (MB)."""

    def __init__(self) -> None:
        self.method = ""
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self.delta_mb = 0.0

    @staticmethod
    def _status_mb(key: str) -> float | None:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> PeakMemory:
        self._reset = False
        try:
            # Writing 5 resets the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0).
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self._reset = True
        except OSError:
            self._reset = False
        self.start_mb = self._status_mb("VmRSS") or 0.0
        self._maxrss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = self._status_mb("VmHWM") if self._reset else None
        if hwm is not None:
            self.method = "VmHWM after /proc/self/clear_refs reset"
            self.peak_mb = hwm
            self.delta_mb = max(0.0, hwm - self.start_mb)
        else:
            self.method = "ru_maxrss growth (a lower bound: the earlier peak hides smaller ones)"
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.delta_mb = max(0.0, self.peak_mb - self._maxrss_start)


class TorchRunner:
    """The FP32 reference: a torch module as a batch -> logits callable."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    def bind(self, batch: np.ndarray) -> Callable[[], object]:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))

        def run() -> torch.Tensor:
            with torch.inference_mode():
                return self.model(tensor)

        return run


# --------------------------------------------------------------------------------------------- gates
@dataclass
class GateResult:
    gate: str
    artifact: str
    limit: float
    value: float | None
    passed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "artifact": self.artifact,
            "limit": self.limit,
            "value": self.value,
            "passed": self.passed,
            "message": self.message,
        }


def evaluate_gates(
    gates: Gates, results: list[dict[str, Any]], primary: str, reference: str = REFERENCE_NAME
) -> list[GateResult]:
    """Check each set gate on the ``primary`` artifact's result; the message says by how much it missed."""
    by_name = {r["name"]: r for r in results}
    if primary not in by_name:
        raise ConfigError(
            f"gates apply to artifact {primary!r}, which was not validated; validated: {', '.join(by_name) or '(none)'}"
        )
    result = by_name[primary]
    ref = by_name.get(reference)
    checks: list[GateResult] = []

    def add(
        gate: str,
        limit: float | None,
        value: float | None,
        higher_is_better: bool,
        what: str,
        unit: str = "",
        scale: float = 1.0,
    ) -> None:
        if limit is None:
            return
        if value is None:
            checks.append(
                GateResult(gate, primary, limit, None, False, f"{gate}: {what} of {primary} could not be measured")
            )
            return
        passed = value >= limit if higher_is_better else value <= limit
        shown = f"{value * scale:.4g}{unit}"
        bound = f"{limit * scale:.4g}{unit}"
        if passed:
            message = f"{gate}: {what} {shown} {'>=' if higher_is_better else '<='} {bound} (passed)"
        else:
            miss = abs(value - limit) * scale
            # A difference of percentages is in percentage points.
            unit = " pp" if unit == " %" else unit
            message = (
                f"{gate}: {primary} {what} {shown} {'<' if higher_is_better else '>'} {bound}, "
                f"{'short' if higher_is_better else 'over'} by {miss:.4g}{unit}"
            )
        checks.append(GateResult(gate, primary, limit, value, passed, message))

    add("max_top1_drop", gates.max_top1_drop, result.get("top1_drop"), False, "top-1 drop vs FP32", " pp", 100)
    add("min_agreement", gates.min_agreement, result.get("agreement"), True, "top-1 agreement with FP32", " %", 100)
    add(
        "max_latency_ms",
        gates.max_latency_ms,
        (result.get("latency") or {}).get("p50_ms"),
        False,
        "p50 latency (batch 1)",
        " ms",
    )
    speedup = None
    if ref is not None and result.get("latency") and ref.get("latency"):
        speedup = ref["latency"]["p50_ms"] / result["latency"]["p50_ms"]
    add("min_speedup_vs_fp32", gates.min_speedup_vs_fp32, speedup, True, "p50 speed-up over PyTorch FP32", "x")
    return checks


def raise_for_gates(report: dict[str, Any]) -> None:
    """Raise :class:`GateFailed` naming every failed gate (after the report was written)."""
    failed = [g["message"] for g in report.get("gates", []) if not g["passed"]]
    if failed:
        raise GateFailed("; ".join(failed))


def target_threads(target: Target) -> int | None:
    """The thread count the target asks its backend for, so every artifact runs with the same."""
    from edgeresnext.backends import get_backend

    return get_backend(target.backend).threads(target)


# --------------------------------------------------------------------------------------------- validate
def _file_entries(files: Sequence[Path]) -> list[dict[str, Any]]:
    entries = []
    for path in files:
        path = Path(path)
        entries.append({"path": str(path), "bytes": path.stat().st_size if path.is_file() else None})
    return entries


def validate(
    target: Target,
    artifacts: Sequence[ArtifactUnderTest | SkippedArtifact],
    model: torch.nn.Module,
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
) -> dict[str, Any]:
    """Validate ``artifacts`` against the FP32 ``model`` on ``data``; returns the report (see report.py).

    ``primary`` names the artifact the gates apply to (default: the last runnable one, i.e. the target's
    deployed artifact). Gates are evaluated and recorded but not raised: call :func:`raise_for_gates`
    after writing the report so a failed build still leaves its report behind.
    """
    import torch

    runs = runs if runs is not None else target.validate_.latency_runs
    warmup = warmup if warmup is not None else target.validate_.warmup_runs
    threads = threads if threads is not None else target_threads(target)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    throughput_batch = target.input.batch.opt
    reference = ArtifactUnderTest(
        name=REFERENCE_NAME, runner=TorchRunner(model), files=list(model_files), backend="pytorch", precision="fp32"
    )
    runnable = [reference] + [a for a in artifacts if isinstance(a, ArtifactUnderTest)]
    names = [a.name for a in artifacts]
    duplicate = next((n for n in names if names.count(n) > 1 or n == REFERENCE_NAME), None)
    if duplicate:
        raise ConfigError(f"artifact name {duplicate!r} is used twice (or clashes with the reference)")
    num_classes = len(data.class_names)
    results: list[dict[str, Any]] = []
    reference_logits: np.ndarray | None = None
    try:
        for item in runnable:
            logger.info("validating %s on %d images", item.name, len(data))
            with PeakMemory() as memory:
                logits = run_logits(item.runner, data.inputs, progress=progress, desc=item.name)
                latency = measure_latency(item.runner, data.inputs[:1], runs=runs, warmup=warmup)
                throughput = measure_throughput(
                    item.runner, _tile(data.inputs, throughput_batch), runs=max(3, min(20, runs // 5)), warmup=2
                )
            if reference_logits is None:
                reference_logits = logits
            entry: dict[str, Any] = {
                "name": item.name,
                "status": "ok",
                "backend": item.backend,
                "precision": item.precision,
                "files": _file_entries(item.files),
                "size_bytes": sum(Path(p).stat().st_size for p in item.files if Path(p).is_file()) or None,
                "info": item.info,
            }
            entry.update(classification_metrics(logits, data.labels, num_classes))
            entry.update(fidelity_metrics(logits, reference_logits))
            entry["latency"] = latency.to_dict()
            entry["throughput"] = throughput
            entry["peak_rss_mb"] = round(memory.peak_mb, 2)
            entry["peak_rss_delta_mb"] = round(memory.delta_mb, 2)
            entry["memory_method"] = memory.method
            runtime = _runtime_report(item.runner)
            if runtime:
                entry["info"] = {**entry["info"], "runtime": runtime}
            results.append(entry)
            logger.info(
                "%s: top-1 %.4f, agreement %.4f, p50 %.3f ms",
                item.name,
                entry["top1"],
                entry["agreement"],
                entry["latency"]["p50_ms"],
            )
    finally:
        torch.set_num_threads(previous_threads)
    ref = results[0]
    for entry in results:
        entry["top1_drop"] = ref["top1"] - entry["top1"]
        entry["speedup_vs_fp32"] = ref["latency"]["p50_ms"] / entry["latency"]["p50_ms"]
    for item in artifacts:
        if isinstance(item, SkippedArtifact):
            results.append(
                {
                    "name": item.name,
                    "status": "skipped",
                    "skip_reason": item.reason,
                    "backend": item.backend,
                    "precision": item.precision,
                    "files": _file_entries(item.files),
                }
            )
    measured = [r["name"] for r in results if r["status"] == "ok"]
    primary = primary or measured[-1]
    gates = evaluate_gates(target.gates, [r for r in results if r["status"] == "ok"], primary)
    from edgeresnext.report import SCHEMA_ID, SCHEMA_VERSION

    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command or " ".join(["edgeresnext", *sys.argv[1:]]),
        "target": {
            "name": target.name,
            "backend": target.backend,
            "precision": target.precision,
            "source": target.source,
            "gates": target.gates.model_dump(mode="json"),
        },
        "environment": environment(threads if threads is not None else previous_threads),
        "data": {
            "name": data.name,
            "count": len(data),
            "num_classes": num_classes,
            "class_names": data.class_names,
            "input_shape": list(data.inputs.shape[1:]),
            "skipped_count": len(data.skipped),
            "skipped": [{"file": file, "reason": reason} for file, reason in data.skipped],
        },
        "protocol": {
            "latency_batch": 1,
            "warmup": warmup,
            "runs": runs,
            "throughput_batch": throughput_batch,
            "threads": threads if threads is not None else previous_threads,
            "timer": "time.perf_counter around one inference with the input bound once (as benchmark_app and "
            "trtexec time it); call_p50_ms: around one runner(batch) call from Python",
            "memory": "process peak RSS during the artifact's accuracy pass and timing, minus RSS before",
        },
        "reference": REFERENCE_NAME,
        "primary": primary,
        "artifacts": results,
        "gates": [g.to_dict() for g in gates],
        "passed": all(g.passed for g in gates),
        "sensitivity": normalize_sensitivity(sensitivity),
        "notes": _notes(results),
    }


def _notes(results: list[dict[str, Any]]) -> list[str]:
    notes = []
    for entry in results:
        precision = ((entry.get("info") or {}).get("runtime") or {}).get("inference_precision", "")
        if "bf16" in precision.lower() or "bfloat16" in precision.lower():
            notes.append(
                f"{entry['name']}: OpenVINO runs its float layers in bfloat16 on this CPU "
                "(INFERENCE_PRECISION_HINT); set it to f32 for an FP32 comparison"
            )
    return notes


def _runtime_report(runner: RunnerLike) -> dict[str, Any] | None:
    """What the runtime says it really runs (precision per layer type), without the per-layer list."""
    report = getattr(runner, "precision_report", None)
    if report is None:
        return None
    try:
        data = dict(report())
    except Exception as err:  # a diagnostic must never fail the validation
        logger.warning("precision report failed: %s", err)
        return None
    data.pop("layers", None)
    compiled = getattr(runner, "compiled", None)
    if compiled is not None and hasattr(compiled, "get_property"):
        # OpenVINO's CPU plugin silently runs float layers in bf16 on CPUs with AVX512_BF16/AMX: say so.
        try:
            data["inference_precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        except Exception:  # noqa: S110 - older plugins lack the property; the report just omits it
            pass
    return data


def _tile(inputs: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // len(inputs))
    return np.ascontiguousarray(np.concatenate([inputs] * reps)[:batch]) if reps > 1 else inputs[:batch].copy()


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


# --------------------------------------------------------------------------------------------- runners from files


def _artifact_suffixes() -> list[str]:
    from edgeresnext.backends import get_backend, list_backends

    return [suffix for name in list_backends() for suffix in get_backend(name).suffixes]


def with_threads(target: Target, threads: int | None) -> Target:
    """A copy of ``target`` whose every CPU backend uses ``threads`` (so all artifacts run alike)."""
    copy = target.model_copy(deep=True)
    if threads is not None:
        copy.backend_options.openvino.threads = threads
        copy.backend_options.onnxruntime.threads = threads
    return copy


def runner_from_file(path: str | Path, target: Target | None = None, backend: str | None = None) -> RunnerLike:
    """A runner for an artifact file: ``.onnx`` (ONNX Runtime), ``.xml`` (OpenVINO IR), ``.engine`` (TensorRT),
    ``.safetensors``/``.pt`` (an edgeresnext checkpoint in PyTorch). ``backend`` overrides the guess (e.g. an
    ``.onnx`` in OpenVINO). Hint and threads come from ``target.backend_options``.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: artifact file not found")
    if path.suffix in (".safetensors", ".pt", ".pth") and backend in (None, "pytorch"):
        from edgeresnext.models import load_checkpoint

        return TorchRunner(load_checkpoint(path))
    backend = backend or backend_for_path(path)
    if backend is None:
        raise ConfigError(
            f"{path}: cannot tell which runtime runs this file; expected one of "
            f"{', '.join([*_artifact_suffixes(), '.safetensors', '.pt'])} or name the backend"
        )
    from edgeresnext.backends import Artifact, get_backend

    kind = {"onnxruntime": "onnx", "openvino": "ir" if path.suffix == ".xml" else "onnx", "tensorrt": "engine"}[backend]
    artifact = Artifact(backend=backend, precision=_guess_precision(path), kind=kind, path=path, files=[path])
    try:
        return get_backend(backend).load(artifact, target)
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("edgeresnext"):
            raise  # our own module missing is a bug, not a host limitation
        raise BackendUnavailable(f"{backend} cannot run {path} here: {err}") from err


def artifacts_from_specs(
    specs: Sequence[str], target: Target | None = None
) -> list[ArtifactUnderTest | SkippedArtifact]:
    """``NAME=PATH`` (or ``NAME=BACKEND:PATH``) strings from the command line to artifacts."""
    items: list[ArtifactUnderTest | SkippedArtifact] = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise ConfigError(
                f"--artifact {spec!r}; expected NAME=PATH or NAME=BACKEND:PATH, e.g. "
                "int8-ov=build/cpu/compile/model.xml"
            )
        backend, colon, path_text = rest.partition(":")
        if not colon or backend not in ("onnxruntime", "openvino", "tensorrt", "pytorch"):
            backend, path_text = "", rest
        path = Path(path_text)
        files = [path] + (
            [path.with_suffix(".bin")] if path.suffix == ".xml" and path.with_suffix(".bin").is_file() else []
        )
        chosen = backend or backend_for_path(path) or "pytorch"
        try:
            runner = runner_from_file(path, target, backend or None)
        except BackendUnavailable as err:
            items.append(SkippedArtifact(name=name, reason=str(err), files=files, backend=chosen))
            continue
        precision = getattr(getattr(runner, "artifact", None), "precision", "") or _guess_precision(path)
        items.append(ArtifactUnderTest(name=name, runner=runner, files=files, backend=chosen, precision=precision))
    return items


def _guess_precision(path: Path) -> str:
    """INT8 if the graph holds quantize nodes (Q/DQ ONNX or OpenVINO FakeQuantize), else FP32."""
    if path.suffix == ".onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return "int8" if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node) else "fp32"
    if path.suffix == ".xml":
        text = path.read_text(errors="ignore")
        return (
            "int8" if "FakeQuantize" in text or 'element_type="i8"' in text or 'element_type="u8"' in text else "fp32"
        )
    return "unknown"


# --------------------------------------------------------------------------------------------- a whole build
def discover_artifacts(root: str | Path, target: Target) -> list[ArtifactUnderTest | SkippedArtifact]:
    """Every runnable model file a build left under ``root`` (ONNX, OpenVINO IR, TensorRT engines), once each.

    Names are ``<backend>-<precision>`` (plus the stage folder when two would clash); files with the same
    content (a bundle's copy of the exported ONNX) are validated once.
    """
    from edgeresnext.atomic import sha256_file

    root = Path(root)
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for path in sorted(root.rglob("*")):
        backend = backend_for_path(path)
        if backend is None or not path.is_file() or path.name.startswith("."):
            continue
        if any(part.startswith(".") or part == "report" for part in path.relative_to(root).parts):
            continue
        digest = sha256_file(path)
        if digest in seen:
            continue
        seen.add(digest)
        found.append((backend, path))
    specs = []
    names: dict[str, int] = {}
    for backend, path in found:
        base = f"{'onnx' if backend == 'onnxruntime' and path.suffix == '.onnx' else backend}-{_guess_precision(path)}"
        names[base] = names.get(base, 0) + 1
        specs.append((base, backend, path))
    spec_strings = []
    for base, backend, path in specs:
        name = base if names[base] == 1 else f"{base}-{path.relative_to(root).parts[0]}"
        spec_strings.append(f"{name}={backend}:{path}")
    if not spec_strings:
        raise ConfigError(
            f"{root}: no artifacts to validate (no .onnx, .xml or .engine files); run "
            f"`edgeresnext build --target {target.name}` first or pass --artifact NAME=PATH"
        )
    return artifacts_from_specs(spec_strings, target)


def pick_primary(target: Target, artifacts: Sequence[ArtifactUnderTest | SkippedArtifact]) -> str | None:
    """The artifact the target deploys: its backend at its precision (the last such), else None (the last)."""
    runnable = [a for a in artifacts if isinstance(a, ArtifactUnderTest)]
    matches = [a for a in runnable if a.backend == target.backend and a.precision == target.precision]
    return matches[-1].name if matches else None


def find_sensitivity(root: str | Path) -> Any:
    """The quantization stage's per-layer sensitivity (``*sensitivity*.json`` under ``root``), if any."""
    import json

    for path in sorted(Path(root).rglob("*sensitivity*.json")):
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("%s: cannot read sensitivity data (%s)", path, err)
    return None


def validate_target(
    target: Target,
    build_root: str | Path = "build",
    artifact_specs: Sequence[str] = (),
    out_dir: str | Path | None = None,
    checkpoint: str | None = None,
    primary: str | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    command: str | None = None,
    progress: bool = True,
    html_report: bool = True,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """``edgeresnext validate``: validate a build's artifacts (or the given ones) and write the report.

    Returns ``(report, paths)``; gates are recorded, not raised (see :func:`raise_for_gates`).
    """
    from edgeresnext.models import load_checkpoint
    from edgeresnext.models.shipped import resolve_checkpoint
    from edgeresnext.report import write_report

    root = Path(build_root) / target.name
    if threads is None:
        threads = target_threads(target)
    if threads is None:
        threads = usable_cores()
    run_target = with_threads(target, threads)
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
        artifacts_from_specs(artifact_specs, run_target) if artifact_specs else discover_artifacts(root, run_target)
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
    paths = write_report(report, Path(out_dir) if out_dir else root / "report", html_report=html_report)
    return report, paths


# --------------------------------------------------------------------------------------------- compare
def compare_outputs(
    a: np.ndarray,
    b: np.ndarray,
    labels: np.ndarray | None = None,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    worst: int = 10,
) -> dict[str, Any]:
    """Polygraphy-style comparison of two artifacts' logits on the same inputs (``b`` is the reference).

    An element passes when ``|a - b| <= atol + rtol * |b|``; the comparison passes when all do. The
    ``worst`` images (largest absolute error) are listed with both predictions.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"outputs of shape {a.shape} and {b.shape} cannot be compared")
    error = np.abs(a - b)
    relative = error / np.maximum(np.abs(b), 1e-12)
    within = error <= atol + rtol * np.abs(b)
    per_image = error.max(axis=1)
    cosine = cosine_similarity_rows(a, b)
    pred_a, pred_b = a.argmax(axis=1), b.argmax(axis=1)
    order = np.argsort(-per_image, kind="stable")[:worst]
    worst_rows = [
        {
            "index": int(i),
            "label": None if labels is None else int(labels[i]),
            "pred_a": int(pred_a[i]),
            "pred_b": int(pred_b[i]),
            "max_abs_error": float(per_image[i]),
            "cosine": float(cosine[i]),
        }
        for i in order
    ]
    return {
        "images": int(a.shape[0]),
        "atol": atol,
        "rtol": rtol,
        "passed": bool(within.all()),
        "elements_within_tolerance": float(within.mean()),
        "images_within_tolerance": float(within.all(axis=1).mean()),
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "median_abs_error": float(np.median(error)),
        "max_rel_error": float(relative.max()),
        "agreement": float(np.mean(pred_a == pred_b)),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "top1_a": None if labels is None else float(np.mean(pred_a == labels)),
        "top1_b": None if labels is None else float(np.mean(pred_b == labels)),
        "worst": worst_rows,
    }


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
    skipped = [i for i in items if isinstance(i, SkippedArtifact)]
    if skipped:
        raise BackendUnavailable(skipped[0].reason)
    logits = [run_logits(item.runner, data.inputs) for item in items]  # type: ignore[union-attr]
    result = compare_outputs(logits[0], logits[1], data.labels, atol=atol, rtol=rtol, worst=worst)
    result.update({"a": path_a, "b": path_b, "data": data.name, "class_names": data.class_names})
    return result
