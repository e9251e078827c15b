"""Gates: the target's limits checked on the deployed artifact's results; each verdict says by how much it missed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeresnext.errors import ConfigError, GateFailed
from edgeresnext.validate.results import ArtifactResult, GateResult, ValidationReport

if TYPE_CHECKING:
    from edgeresnext.config import Gates

REFERENCE_NAME = "pytorch-fp32"


def evaluate_gates(
    gates: Gates, results: list[ArtifactResult], primary: str, reference: str = REFERENCE_NAME
) -> list[GateResult]:
    """Check each set gate on the ``primary`` artifact's result; the message says by how much it missed."""
    by_name = {r.name: r for r in results}
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

    add("max_top1_drop", gates.max_top1_drop, result.top1_drop, False, "top-1 drop vs FP32", " pp", 100)
    add("min_agreement", gates.min_agreement, result.agreement, True, "top-1 agreement with FP32", " %", 100)
    add("max_latency_ms", gates.max_latency_ms, result.p50_ms, False, "p50 latency (batch 1)", " ms")
    speedup = None
    if ref is not None and result.p50_ms and ref.p50_ms:
        speedup = ref.p50_ms / result.p50_ms
    add("min_speedup_vs_fp32", gates.min_speedup_vs_fp32, speedup, True, "p50 speed-up over PyTorch FP32", "x")
    return checks


def raise_for_gates(report: ValidationReport) -> None:
    """Raise :class:`GateFailed` naming every failed gate (after the report was written)."""
    failed = [g.message for g in report.gates if not g.passed]
    if failed:
        raise GateFailed("; ".join(failed))
