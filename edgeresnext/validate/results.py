"""Typed validation results. They become JSON once, at the edge (``report.json``, a stage's record); everything
that reads them (the build summary, the bundle, the CLI) reads these fields, not dictionary keys."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnext.backends import PrecisionReport, backend_facts, display_name
from edgeresnext.stats import PairedCounts
from edgeresnext.validate.deepstream import DeepStreamPreprocessing

SCHEMA_ID = "edgeresnext.report"
# 2: speedup_vs_fp32 is against the same runtime's float build (speedup_baseline names it), no longer PyTorch
# eager; an accuracy gate's value is the bound it was decided on (basis), no longer the measured value.
# 3: speedup_vs_fp32 renamed speedup (its baseline may be FP16: TensorRT); version 2 records still load.
SCHEMA_VERSION = 3


def runtime_name(backend: str) -> str:
    """How the report names a runtime: the backend's ``display_name`` (PyTorch for the reference)."""
    return "PyTorch" if backend == "pytorch" else display_name(backend)


def runtime_label(backend: str, precision: str) -> str:
    """``openvino``, ``fp32`` -> ``OpenVINO FP32`` (as in "x3.4 vs OpenVINO FP32")."""
    return f"{runtime_name(backend)} {precision.upper()}".strip()


@dataclass
class GateResult:
    """One gate's verdict. ``value`` is what was compared with ``limit``: for an accuracy gate decided on a bound
    (``basis == "bound"``) the one-sided bound at ``confidence``, with the measured value in ``measured``;
    ``provable`` False says the validation set is too small for any result equal to FP32 to pass, and
    ``min_images`` how many images would be."""

    gate: str
    artifact: str
    limit: float
    value: float | None
    passed: bool
    message: str
    basis: str = "value"  # "bound" | "point" (an accuracy gate with confidence: null) | "value"
    measured: float | None = None
    confidence: float | None = None
    provable: bool | None = None
    min_images: int | None = None

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL``, or ``NOT PROVEN`` (passed on the measured value; the set cannot prove the limit)."""
        if not self.passed:
            return "FAIL"
        return "NOT PROVEN" if self.provable is False else "pass"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        """A gate of report.json; one recorded before ``measured`` existed was decided on the measured value."""
        return cls(**({"measured": data["value"]} if "measured" not in data else {}), **data)


@dataclass
class Uncertainty:
    """How sure an artifact's top-1 drop and agreement are, from the paired per-image outcomes against the
    reference (both ran on the same images).

    ``a``: images both get right, ``b``: only the reference gets right, ``c``: only this artifact, ``d``: neither;
    ``agree``: images whose top-1 class equals the reference's. Intervals are two-sided at ``confidence``; the
    bounds are one-sided at ``confidence`` (what a gate compares): the drop's upper and the agreement's lower.
    """

    confidence: float
    a: int
    b: int
    c: int
    d: int
    agree: int
    drop: float
    drop_interval: tuple[float, float]
    drop_upper_bound: float
    mcnemar_p: float
    agreement: float
    agreement_interval: tuple[float, float]
    agreement_lower_bound: float
    drop_method: str = "tango-score-cc"
    agreement_method: str = "exact"

    @property
    def counts(self) -> PairedCounts:
        """The paired 2x2 table (``n``, ``discordant``, ``drop``)."""
        return PairedCounts(self.a, self.b, self.c, self.d)

    @property
    def n(self) -> int:
        return self.counts.n

    @property
    def discordant(self) -> int:
        return self.counts.discordant

    def to_dict(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "images": self.n,
            "paired": {"a": self.a, "b": self.b, "c": self.c, "d": self.d},
            "discordant": self.discordant,
            "drop": {
                "point": self.drop,
                "interval": list(self.drop_interval),
                "upper_bound": self.drop_upper_bound,
                "method": self.drop_method,
            },
            "mcnemar_p": self.mcnemar_p,
            "agreement": {
                "agree": self.agree,
                "point": self.agreement,
                "interval": list(self.agreement_interval),
                "lower_bound": self.agreement_lower_bound,
                "method": self.agreement_method,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Uncertainty:
        drop, agreement, paired = data["drop"], data["agreement"], data["paired"]
        return cls(
            confidence=data["confidence"],
            **{k: paired[k] for k in "abcd"},
            agree=agreement["agree"],
            drop=drop["point"],
            drop_interval=tuple(drop["interval"]),
            drop_upper_bound=drop["upper_bound"],
            mcnemar_p=data["mcnemar_p"],
            agreement=agreement["point"],
            agreement_interval=tuple(agreement["interval"]),
            agreement_lower_bound=agreement["lower_bound"],
            drop_method=drop["method"],
            agreement_method=agreement["method"],
        )


@dataclass
class Latency:
    """Batch-1 latency of one artifact as recorded in the report (milliseconds)."""

    batch: int
    warmup: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    samples_ms: list[float]
    timed: str
    call_p50_ms: float | None = None

    @classmethod
    def from_samples(
        cls, batch: int, warmup: int, samples_ms: list[float], call_samples_ms: list[float], bound: bool
    ) -> Latency:
        """The summary of timed calls: percentiles from the raw samples, the samples kept to 0.1 us."""
        samples = np.asarray(samples_ms)
        return cls(
            batch=batch,
            warmup=warmup,
            runs=len(samples_ms),
            p50_ms=float(np.percentile(samples, 50)),
            p90_ms=float(np.percentile(samples, 90)),
            p99_ms=float(np.percentile(samples, 99)),
            mean_ms=float(samples.mean()),
            min_ms=float(samples.min()),
            max_ms=float(samples.max()),
            samples_ms=[round(s, 4) for s in samples_ms],
            timed="inference, input bound once" if bound else "runner(batch) call",
            call_p50_ms=float(np.percentile(call_samples_ms, 50)) if call_samples_ms else None,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["call_p50_ms"] is None:
            del data["call_p50_ms"]
        return data


@dataclass
class Throughput:
    batch: int
    runs: int
    images_per_s: float
    batch_p50_ms: float


@dataclass
class ArtifactResult:
    """One artifact's row of the report: measured (``status == "ok"``) or not runnable here (``"skipped"``)."""

    name: str
    backend: str
    precision: str
    files: list[dict[str, Any]]
    status: str = "ok"
    skip_reason: str | None = None
    size_bytes: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    top1: float = 0.0
    top5: float = 0.0
    per_class_accuracy: list[float | None] = field(default_factory=list)
    confusion: list[list[int]] | None = None
    agreement: float = 0.0
    cosine_mean: float = 0.0
    cosine_min: float = 0.0
    max_abs_error: float = 0.0
    mean_abs_error: float = 0.0
    latency: Latency | None = None
    throughput: Throughput | None = None
    peak_rss_mb: float = 0.0
    peak_rss_delta_mb: float = 0.0
    memory_method: str = ""
    top1_drop: float = 0.0
    # p50 of the same runtime's float build (``speedup_baseline``: OpenVINO FP32 for an OpenVINO INT8 IR, ONNX
    # Runtime FP32, a TensorRT FP16 engine) over this one's; None when no such build was timed here.
    speedup: float | None = None
    speedup_baseline: str | None = None
    uncertainty: Uncertainty | None = None  # None for the reference itself

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def label(self) -> str:
        """The runtime and precision in words: ``OpenVINO INT8``."""
        return runtime_label(self.backend, self.precision)

    @property
    def p50_ms(self) -> float | None:
        return self.latency.p50_ms if self.latency else None

    @property
    def runtime_precision(self) -> PrecisionReport:
        """What the runtime reports running in which precision (``info["runtime"]``), for the precision built."""
        return PrecisionReport.from_dict({**((self.info or {}).get("runtime") or {}), "precision": self.precision})

    def to_dict(self) -> dict[str, Any]:
        head = {"name": self.name, "status": self.status}
        if not self.ok:
            return {
                **head,
                "skip_reason": self.skip_reason,
                "backend": self.backend,
                "precision": self.precision,
                "files": self.files,
            }
        data = asdict(self)
        data.pop("skip_reason")
        data["latency"] = self.latency.to_dict() if self.latency else None
        data["uncertainty"] = self.uncertainty.to_dict() if self.uncertainty else None
        return {**head, **{k: v for k, v in data.items() if k not in head}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactResult:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if data.get("latency"):
            values["latency"] = Latency(**data["latency"])
        if data.get("throughput"):
            values["throughput"] = Throughput(**data["throughput"])
        if data.get("uncertainty"):
            values["uncertainty"] = Uncertainty.from_dict(data["uncertainty"])
        return cls(**values)


@dataclass
class DataSummary:
    """The images the artifacts were judged on."""

    name: str
    count: int
    num_classes: int
    class_names: list[str]
    input_shape: list[int]
    skipped: list[dict[str, str]] = field(default_factory=list)
    # The images are the first of the set's class-stratified order (data.sample_seed) among `total`; None: as given.
    sample_seed: int | None = None
    total: int | None = None
    class_counts: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped_count"] = len(self.skipped)
        order = ("name", "count", "num_classes", "class_names", "input_shape", "skipped_count", "skipped")
        extra = ("sample_seed", "total", "class_counts")
        return {**{k: data[k] for k in order}, **{k: data[k] for k in extra if data[k] is not None}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSummary:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class ValidationReport:
    """The whole validation: the target, where and how it was measured, every artifact's result, the gates."""

    created: str
    command: str
    target: dict[str, Any]
    environment: dict[str, Any]
    data: DataSummary
    protocol: dict[str, Any]
    reference: str
    primary: str
    artifacts: list[ArtifactResult]
    gates: list[GateResult]
    sensitivity: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
    # For a bundle with DeepStream configs: nvinfer's preprocessing measured on the same images (.deepstream).
    deepstream: DeepStreamPreprocessing | None = None
    # Only in the report of a bundle back from the device (``edgeresnext report BUNDLE``): the engine built there and
    # the manifest's record of its device check, shown beside the host rows.
    device_engine: str | None = None
    device_check: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    def result(self, name: str) -> ArtifactResult:
        return next(a for a in self.artifacts if a.name == name)

    @property
    def primary_result(self) -> ArtifactResult:
        return self.result(self.primary)

    def speed_findings(self) -> list[str]:
        """Which build is faster, where the deployed (primary) artifact is slower than its runtime's float build, and
        always for a backend that asks for it (TensorRT: the FP16 engine can beat INT8 on a GPU): the build to deploy
        is then the other one. Other rows (the Q/DQ ONNX in ONNX Runtime on a cpu target, say) are context."""
        findings = []
        for row in self.artifacts:
            always = _always_compare_speed(row.backend)
            if not row.ok or row.speedup is None or row.speedup_baseline in (None, row.name):
                continue
            if (row.speedup >= 1 or row.name != self.primary) and not always:
                continue
            baseline = self.result(row.speedup_baseline)
            faster, slower = (row, baseline) if row.speedup >= 1 else (baseline, row)
            findings.append(
                f"{runtime_name(row.backend)}: {faster.precision.upper()} ({faster.name}) is faster than "
                f"{slower.precision.upper()} ({slower.name}) on this host, p50 {faster.p50_ms:.3f} ms against "
                f"{slower.p50_ms:.3f} ms"
            )
        return findings

    @property
    def reference_result(self) -> ArtifactResult:
        return self.result(self.reference)

    @property
    def measured(self) -> list[ArtifactResult]:
        return [a for a in self.artifacts if a.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_ID,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "command": self.command,
            "target": self.target,
            "environment": self.environment,
            "data": self.data.to_dict(),
            "protocol": self.protocol,
            "reference": self.reference,
            "primary": self.primary,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
            "sensitivity": self.sensitivity,
            "notes": self.notes,
            **({"deepstream": self.deepstream.to_dict()} if self.deepstream else {}),
            **({"device_engine": self.device_engine} if self.device_engine is not None else {}),
            **({"device_check": self.device_check} if self.device_check is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        data = upgrade_record(data)
        plain = {key: data[key] for key in ("created", "command", "target", "environment", "protocol")}
        return cls(
            **plain,
            data=DataSummary.from_dict(data["data"]),
            reference=data["reference"],
            primary=data["primary"],
            artifacts=[ArtifactResult.from_dict(a) for a in data["artifacts"]],
            gates=[GateResult.from_dict(g) for g in data["gates"]],
            sensitivity=data.get("sensitivity"),
            notes=list(data.get("notes", [])),
            deepstream=DeepStreamPreprocessing.from_dict(data["deepstream"]) if data.get("deepstream") else None,
            device_engine=data.get("device_engine"),
            device_check=data.get("device_check"),
        )

    @classmethod
    def load(cls, path: str | Path) -> ValidationReport:
        """A report.json written by :func:`edgeresnext.report.write_report`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def upgrade_record(data: dict[str, Any]) -> dict[str, Any]:
    """A report.json record of an older schema version in the current one (a copy; a current record as it is):
    version 2 named the speed-up ``speedup_vs_fp32`` and its gate ``min_speedup_vs_fp32``."""
    if data.get("schema_version") != 2:
        return data
    data = json.loads(json.dumps(data))
    for artifact in data.get("artifacts", []):
        if "speedup_vs_fp32" in artifact:
            artifact["speedup"] = artifact.pop("speedup_vs_fp32")
    gates = (data.get("target") or {}).get("gates") or {}
    if "min_speedup_vs_fp32" in gates:
        gates["min_speedup"] = gates.pop("min_speedup_vs_fp32")
    for gate in data.get("gates", []):
        if gate.get("gate") == "min_speedup_vs_fp32":
            gate["gate"] = "min_speedup"
    data["schema_version"] = SCHEMA_VERSION
    return data


def _always_compare_speed(backend: str) -> bool:
    """Whether the report always says which of INT8 and the float build is faster (``Backend.always_compare_speed``)."""
    facts = backend_facts(backend)
    return facts is not None and facts.always_compare_speed
