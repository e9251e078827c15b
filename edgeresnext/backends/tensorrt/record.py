"""What the TensorRT device step records in the manifest: an engine artifact's ``engine`` section (what the engine
was built from, with and on) and its device check, as typed records.

:class:`~edgeresnext.backends.tensorrt.backend.TensorRTBackend` names :class:`EngineRecord` as its ``device_record``;
the manifest (:mod:`edgeresnext.bundle.model`) reads an artifact's section through its backend, and the manifest's
schema takes this section's from here. The device writes the section with the standard library alone
(:mod:`.seal`, :mod:`.device_check`: hand-written, kept in step by tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgeresnext.records import DeviceRecord, Record, key

CHECK_STATUSES = ("checked", "failed", "unchecked")


@dataclass(kw_only=True)
class CheckGate(Record):
    """The device check's gate ``max_device_disagreement`` (``device_check.gate``): its verdict in words, and
    whether the check set can prove the limit at all."""

    passed: bool | None = None
    provable: bool | None = None
    message: str | None = None


@dataclass(kw_only=True)
class DeviceCheck(Record):
    """The engine run on the device on the bundle's check set, compared with the build host's outputs (top-1,
    agreement, |delta logit|, trtexec latency, the gate). ``failed``: beyond the gate (device apps refuse the engine);
    ``unchecked``: the check did not run (``reason``)."""

    DESCRIPTION = (
        "the engine run on the device on the bundle's check set (kit/check) right after it was built, compared with "
        "the build host's outputs for the same images: top-1, agreement with FP32 and with the INT8 stand-in "
        "(intervals from the host's stats.py), max/mean |delta logit|, trtexec latency, the gate "
        "max_device_disagreement. failed: beyond the gate (device apps refuse the engine); unchecked: the check did "
        "not run (reason)"
    )

    status: Literal["checked", "failed", "unchecked"]
    reason: str | None = None
    gate: CheckGate | None = None


@dataclass(kw_only=True)
class EngineSource(Record):
    """The model the engine was built from: its bundle path and sha256."""

    CLOSED = True
    DESCRIPTION = "the model the engine was built from: its bundle path and sha256"

    path: str
    sha256: str = key(pattern="^[0-9a-f]{64}$")


@dataclass(kw_only=True)
class EngineRecord(DeviceRecord):
    """An engine artifact's ``engine`` section: what it was built with and on (runtimes compare ``tensorrt_version``
    and ``gpu_sm`` with their own before deserialising it), its source ONNX and build record, its device check."""

    DESCRIPTION = (
        "a TensorRT engine built on the device (edgeresnext bundle build-engine, or the kit's build_engine.sh): what "
        "it runs on. Runtimes compare tensorrt_version (major.minor.patch) and gpu_sm with their own before "
        "deserialising it. Its sha256 and that of its build record are in files."
    )

    tensorrt_version: str = key(pattern="^[0-9]+\\.[0-9]+")
    gpu_name: str
    gpu_sm: str = key(pattern="^[0-9]+\\.[0-9]+$", description="compute capability, e.g. 8.7 (Jetson Orin)")
    build_mode: Literal["strongly_typed", "weakly_typed"]
    onnx: EngineSource
    record: str = key(description="bundle path of the build record (model.engine.json)")
    built_with: str | None = key(None, description="trtexec or tensorrt-python")
    sealed_by: str | None = key(None, description="what recorded the engine in the manifest")
    built_at: str | None = None
    dla_core: int | None = key(None, nullable=True, write_none=False)
    device_check: DeviceCheck | None = None

    def sources(self) -> list[tuple[str, str, str | None]]:
        return [
            ("the ONNX it is built from", self.onnx.path, self.onnx.sha256),
            ("its build record", self.record, None),
        ]

    def check(self) -> DeviceCheck:
        """The device check as recorded; an engine sealed without one is ``unchecked``."""
        return self.device_check or DeviceCheck(status="unchecked", reason="no device check recorded")
