"""What each stage of a build records about itself: one small dataclass per stage, the ``info`` of its
:class:`~edgeresnext.pipeline.cache.StageResult`. The build summary, the CLI and the later stages read these fields.

``to_dict`` is the JSON form ``stage.json`` (and the quantize stage's ``quant.json``) holds, key for key as before the
records were typed, so a build folder of an earlier version is read as it is (``from_dict``) and a new one is written
byte for byte alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from edgeresnext.backends import Artifact


class StageRecord:
    """A dataclass that is one JSON object: its fields in order; those in ``_optional`` left out when None (a key the
    stage writes only when it has something to say); a field whose type is in ``_nested`` is that type's
    ``to_dict``/``from_dict``."""

    _optional: ClassVar[tuple[str, ...]] = ()
    _nested: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name in self._optional:
                continue
            data[f.name] = value.to_dict() if f.name in self._nested and value is not None else value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """The record of ``data`` (a stage.json's ``info``); KeyError/TypeError when a field it needs is missing."""
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                continue
            value = data[f.name]
            nested = cls._nested.get(f.name)
            values[f.name] = nested.from_dict(value) if nested is not None and value is not None else value
        return cls(**values)


@dataclass
class ModelInfo(StageRecord):
    """The model stage: the checkpoint it stored and what it holds."""

    arch: str
    num_classes: int
    source: str  # the checkpoint file it was read from
    parameters: int


@dataclass
class ExportInfo(StageRecord):
    """The export stage: how close the FP32 ONNX's outputs are to PyTorch's, on how many validation images."""

    max_abs_error_vs_torch: float
    parity_images: int


@dataclass
class NearCopies(StageRecord):
    """Which calibration images are near-copies of validation images (named, not removed). ``images``: one
    ``{"image", "near", "score"}`` row each."""

    checked: int
    count: int
    disjoint_from_validation: bool
    against: str  # the validation set they were compared with
    images: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FallbackRecord(StageRecord):
    """The quantize stage's fallback: layers back to float until the drop on held-out tuning images meets the gate.
    Not run (``run`` False): ``why`` alone; run: every other field."""

    run: bool
    why: str | None = None
    images: str | None = None  # the tuning images, in words
    disjoint_from_validation: bool | None = None
    overlap_excluded: int | None = None
    near_copies: list[dict[str, Any]] | None = None
    top1_drop_before: float | None = None
    top1_drop_after: float | None = None
    layers_in_float: list[str] = field(default_factory=list)
    steps: list[Any] = field(default_factory=list)
    gate_reached: bool | None = None
    decided_on: str | None = None  # "bound" | "point": as the validation gate decides
    top1_drop_upper_bound: float | None = None

    def to_dict(self) -> dict[str, Any]:
        if not self.run:
            return {"run": False, "why": self.why}
        return {k: v for k, v in super().to_dict().items() if k != "why"}


@dataclass
class QuantizeInfo(StageRecord):
    """The quantize stage (also its ``quant.json``): the method, the calibration images (skipped, near-copies of
    validation images), the sensitivity ranking and the fallback."""

    method: str = "ptq"
    calibration_images: int | None = None
    calibration_skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    quantize_seconds: float | None = None
    calibration_near_copies: NearCopies | None = None
    most_sensitive: list[str] | None = None  # the three layers the ranking puts first, when it ran
    sensitivity: str | None = None  # whether the ranking ran, and why, in words
    fallback: FallbackRecord | None = None  # None: no max_top1_drop gate, or quant.max_fallback_layers: 0
    seconds: float | None = None

    _optional: ClassVar[tuple[str, ...]] = ("most_sensitive", "fallback")
    _nested: ClassVar[dict[str, Any]] = {"calibration_near_copies": NearCopies, "fallback": FallbackRecord}

    def __post_init__(self) -> None:
        self.calibration_skipped = [(str(name), str(why)) for name, why in self.calibration_skipped]


@dataclass
class LintInfo(StageRecord):
    """The lint stage: the findings that did not stop the build (all in its lint.json)."""

    errors: int
    warnings: int


@dataclass
class CompileInfo(StageRecord):
    """The compile stage: the artifact (its artifact.json)."""

    artifact: Artifact

    _nested: ClassVar[dict[str, Any]] = {"artifact": Artifact}


@dataclass
class ValidateInfo(StageRecord):
    """The validate stage: the verdict and the artifact the gates judged (report.json holds the rest)."""

    passed: bool
    primary: str


@dataclass
class BundleInfo(StageRecord):
    """The bundle stage: the manifest's validation summary, an on-device build's check set, the DeepStream export."""

    validation_summary: dict[str, Any]
    device_check_set: dict[str, Any] | None = None
    deepstream: dict[str, Any] | None = None

    _optional: ClassVar[tuple[str, ...]] = ("device_check_set", "deepstream")


# Each stage's record type, by stage name (``pipeline.stages.STAGES``).
STAGE_INFO: dict[str, type[StageRecord]] = {
    "model": ModelInfo,
    "export": ExportInfo,
    "quantize": QuantizeInfo,
    "lint": LintInfo,
    "compile": CompileInfo,
    "validate": ValidateInfo,
    "bundle": BundleInfo,
}
