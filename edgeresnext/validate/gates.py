"""Gates: the target's limits checked on the deployed artifact's results; each verdict says by how much it missed.

The accuracy gates (``max_top1_drop``, ``min_agreement``) are decided on a one-sided confidence bound at
``gates.confidence`` computed from the paired per-image outcomes (:class:`~edgeresnext.validate.results.Uncertainty`),
not on the measured value: a drop of +0.00 pt on 121 images passes only what 121 images can prove. When the set is
too small for even an artifact equal to FP32 to pass and the bound does not pass, the verdict says NOT PROVEN and
how many images would be needed (a bound that passes always passes, however small the set). The decisions (bounds,
provable or not) are in :mod:`edgeresnext.stats`, which the device check runs too; this module only words them.
``max_latency_ms`` and ``min_speedup`` compare the measured p50; the speed-up is against the same
runtime's float build, never PyTorch eager.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeresnext.errors import ConfigError, GateFailed
from edgeresnext.validate.results import ArtifactResult, GateResult, ValidationReport

if TYPE_CHECKING:
    from edgeresnext.config import Gates

REFERENCE_NAME = "pytorch-fp32"


def _pt(fraction: float, signed: bool = False) -> str:
    """A fraction in percentage points: 0.0014 -> ``0.14 pt``."""
    return f"{100 * fraction:{'+' if signed else ''}.2f} pt"


def _limit_pt(fraction: float) -> str:
    return f"{100 * fraction:.4g} pt"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def _level(confidence: float) -> str:
    return f"{100 * confidence:g} %"


def min_images_for_agreement(limit: float, confidence: float) -> int | None:
    """See :func:`edgeresnext.stats.min_images_for_agreement` (the device check uses it too)."""
    from edgeresnext import stats

    return stats.min_images_for_agreement(limit, confidence)


def _unbounded(gate: str, name: str, limit: float, confidence: float, what: str, measured: float) -> GateResult:
    """A gate to decide on a bound for an artifact without per-image outcomes against FP32: it cannot pass."""
    message = f"{gate}: {name} has no per-image outcomes against FP32 to bound its {what} at {_level(confidence)}"
    return GateResult(gate, name, limit, None, False, message, basis="bound", measured=measured, confidence=confidence)


def _point_gate(gate: str, name: str, limit: float, value: float) -> GateResult:
    """An accuracy gate decided on the measured value alone (``gates.confidence: null``)."""
    if gate == "max_top1_drop":
        passed, shown, bound, miss = value <= limit, _pt(value, True), _limit_pt(limit), _pt(value - limit)
        what, relation = "top-1 drop", ("<=", ">", "over")
    else:
        passed, shown, bound, miss = value >= limit, _pct(value), _pct(limit), _pt(limit - value)
        what, relation = "top-1 agreement with FP32", (">=", "<", "short")
    message = (
        f"{gate}: {name} {what} {shown} {relation[0]} {bound} (passed on the measured value; gates.confidence: "
        "null, not proven)"
        if passed
        else f"{gate}: {name} {what} {shown} {relation[1]} {bound}, {relation[2]} by {miss}"
    )
    return GateResult(gate, name, limit, value, passed, message, basis="point", measured=value)


def _accuracy_gate(
    gate: str, limit: float, confidence: float | None, result: ArtifactResult, unproven: str
) -> GateResult:
    """``max_top1_drop`` or ``min_agreement``: on the measured value, or on its one-sided bound at ``confidence``."""
    value = result.top1_drop if gate == "max_top1_drop" else result.agreement
    if confidence is None:
        return _point_gate(gate, result.name, limit, value)
    if result.uncertainty is None:
        return _unbounded(
            gate, result.name, limit, confidence, "drop" if gate == "max_top1_drop" else "agreement", value
        )
    decide = _drop_gate if gate == "max_top1_drop" else _agreement_gate
    return decide(limit, confidence, result, unproven)


def _drop_gate(limit: float, confidence: float, result: ArtifactResult, unproven: str) -> GateResult:
    gate, name, u = "max_top1_drop", result.name, result.uncertainty
    from edgeresnext import stats

    verdict = stats.drop_gate(stats.PairedCounts(u.a, u.b, u.c, u.d), limit, confidence)
    level, bound = _level(confidence), verdict.upper_bound
    if verdict.passed_on_bound:
        message = (
            f"{gate}: {name} top-1 drop {_pt(verdict.point, True)}, {level} upper bound {_pt(bound)} <= "
            f"{_limit_pt(limit)} (passed)"
        )
    else:
        on_point = "; the measured drop alone would pass, but these images do not prove it"
        on_point = on_point if verdict.passed_on_point else ""
        message = (
            f"{gate}: {name} top-1 drop {level} upper bound {_pt(bound)} > {_limit_pt(limit)}, over by "
            f"{_pt(bound - limit)} (measured {_pt(verdict.point, True)} on {u.n:,} images, {u.discordant} "
            f"discordant{on_point})"
        )
    passed = verdict.holds(unproven)  # the bound; on a set too small to prove the limit, gates.unproven decides
    if not verdict.provable:
        needed = "no finite set can" if verdict.min_images is None else f"at least {verdict.min_images:,} images needed"
        too_small = f"{u.n:,} images cannot prove a {_limit_pt(limit)} drop at {level}: {needed}"
        message = (
            f"{gate}: NOT PROVEN: {too_small}; decided on the measured drop {_pt(verdict.point, True)} <= "
            f"{_limit_pt(limit)} ({level} upper bound {_pt(bound)}; gates.unproven: fail would fail it)"
            if passed
            else f"{gate}: {too_small} ({name}: measured drop {_pt(verdict.point, True)}, {level} upper bound "
            f"{_pt(bound)} > {_limit_pt(limit)})"
        )
    provable, needed = verdict.provable, verdict.min_images
    return GateResult(gate, name, limit, bound, passed, message, "bound", verdict.point, confidence, provable, needed)


def _agreement_gate(limit: float, confidence: float, result: ArtifactResult, unproven: str) -> GateResult:
    gate, name, u = "min_agreement", result.name, result.uncertainty
    from edgeresnext import stats

    level = _level(confidence)
    # Uncertainty keeps the bound at its own level; the gate's level decides (the same unless re-evaluated).
    bound = stats.agreement_lower_bound(u.agree, u.n, confidence)
    passed = bound >= limit
    needed_images = min_images_for_agreement(limit, confidence)
    provable = passed or stats.agreement_gate_provable(u.n, limit, confidence)
    if passed:
        message = (
            f"{gate}: {name} top-1 agreement with FP32 {_pct(u.agreement)}, {level} lower bound {_pct(bound)} >= "
            f"{_pct(limit)} (passed)"
        )
    else:
        message = (
            f"{gate}: {name} top-1 agreement {level} lower bound {_pct(bound)} < {_pct(limit)}, short by "
            f"{_pt(limit - bound)} (measured {_pct(u.agreement)} on {u.n:,} images)"
        )
    if not provable:
        needed = "no finite set can" if needed_images is None else f"at least {needed_images:,} images needed"
        too_small = f"{u.n:,} images cannot prove {_pct(limit)} agreement at {level}: {needed}"
        passed = u.agreement >= limit and unproven == "warn"
        message = (
            f"{gate}: NOT PROVEN: {too_small}; decided on the measured agreement {_pct(u.agreement)} >= "
            f"{_pct(limit)} ({level} lower bound {_pct(bound)}; gates.unproven: fail would fail it)"
            if passed
            else f"{gate}: {too_small} ({name}: measured {_pct(u.agreement)}, {level} lower bound {_pct(bound)} < "
            f"{_pct(limit)})"
        )
    measured = u.agreement
    return GateResult(gate, name, limit, bound, passed, message, "bound", measured, confidence, provable, needed_images)


def _value_gate(
    gate: str,
    artifact: str,
    limit: float,
    value: float | None,
    higher_is_better: bool,
    what: str,
    unit: str = "",
    missing: str = "could not be measured",
) -> GateResult:
    if value is None:
        return GateResult(gate, artifact, limit, None, False, f"{gate}: {what} of {artifact} {missing}")
    passed = value >= limit if higher_is_better else value <= limit
    shown, bound = f"{value:.4g}{unit}", f"{limit:.4g}{unit}"
    if passed:
        message = f"{gate}: {what} {shown} {'>=' if higher_is_better else '<='} {bound} (passed)"
    else:
        message = (
            f"{gate}: {artifact} {what} {shown} {'<' if higher_is_better else '>'} {bound}, "
            f"{'short' if higher_is_better else 'over'} by {abs(value - limit):.4g}{unit}"
        )
    return GateResult(gate, artifact, limit, value, passed, message, measured=value)


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
    checks: list[GateResult] = []
    if gates.max_top1_drop is not None:
        checks.append(_accuracy_gate("max_top1_drop", gates.max_top1_drop, gates.confidence, result, gates.unproven))
    if gates.min_agreement is not None:
        checks.append(_accuracy_gate("min_agreement", gates.min_agreement, gates.confidence, result, gates.unproven))
    if gates.max_latency_ms is not None:
        checks.append(
            _value_gate(
                "max_latency_ms", primary, gates.max_latency_ms, result.p50_ms, False, "p50 latency (batch 1)", " ms"
            )
        )
    if gates.min_speedup is not None:
        baseline = by_name.get(result.speedup_baseline or "")
        what = f"p50 speed-up over {baseline.label if baseline else 'the same runtime in FP32'}"
        missing = (
            f"is unknown: no {result.label.rsplit(' ', 1)[0]} float build was timed here "
            "(PyTorch eager is not a stand-in for it)"
        )
        checks.append(
            _value_gate(
                "min_speedup",
                primary,
                gates.min_speedup,
                result.speedup,
                True,
                what,
                "x",
                missing,
            )
        )
    return checks


def raise_for_gates(report: ValidationReport) -> None:
    """Raise :class:`GateFailed` naming every failed gate (after the report was written)."""
    failed = [g.message for g in report.gates if not g.passed]
    if failed:
        raise GateFailed("; ".join(failed))
