"""Typed validation results. They become JSON once, at the edge (``report.json``, a stage's record); everything
that reads them (the build summary, the bundle, the CLI) reads these fields, not dictionary keys."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_ID = "edgeresnext.report"
SCHEMA_VERSION = 1


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
    speedup_vs_fp32: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def p50_ms(self) -> float | None:
        return self.latency.p50_ms if self.latency else None

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
        return {**head, **{k: v for k, v in data.items() if k not in head}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactResult:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if data.get("latency"):
            values["latency"] = Latency(**data["latency"])
        if data.get("throughput"):
            values["throughput"] = Throughput(**data["throughput"])
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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped_count"] = len(self.skipped)
        order = ("name", "count", "num_classes", "class_names", "input_shape", "skipped_count", "skipped")
        return {k: data[k] for k in order}

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

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    def result(self, name: str) -> ArtifactResult:
        return next(a for a in self.artifacts if a.name == name)

    @property
    def primary_result(self) -> ArtifactResult:
        return self.result(self.primary)

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        return cls(
            created=data["created"],
            command=data["command"],
            target=data["target"],
            environment=data["environment"],
            data=DataSummary.from_dict(data["data"]),
            protocol=data["protocol"],
            reference=data["reference"],
            primary=data["primary"],
            artifacts=[ArtifactResult.from_dict(a) for a in data["artifacts"]],
            gates=[GateResult(**g) for g in data["gates"]],
            sensitivity=data.get("sensitivity"),
            notes=list(data.get("notes", [])),
        )

    @classmethod
    def load(cls, path: str | Path) -> ValidationReport:
        """A report.json written by :func:`edgeresnext.report.write_report`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
