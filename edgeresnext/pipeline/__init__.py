"""Runs the stages of one target into ``build/<target>/`` (see :mod:`.stages`), skipping stages whose inputs did
not change (see :mod:`.cache`), and prints what it did: :func:`build` for one target, :func:`build_all` for every
target with a comparison table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgeresnext.atomic import remove_stale_temporaries, write_json_atomic, write_text_atomic
from edgeresnext.config import SHIPPED_CHECKPOINT, Target, build_folder
from edgeresnext.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_UNPROVEN, ConfigError, EdgeResNeXtError, exit_code
from edgeresnext.pipeline.cache import BuildLock, StageResult, run_stage
from edgeresnext.pipeline.preflight import preflight
from edgeresnext.pipeline.stages import STAGE_FUNCTIONS, STAGES, BuildContext, load_report

if TYPE_CHECKING:
    from edgeresnext.pipeline.stage_info import FallbackRecord, QuantizeInfo
    from edgeresnext.validate import ArtifactResult, ValidationReport

__all__ = ["STAGES", "BuildContext", "BuildSummary", "StageResult", "build", "build_all", "prepare_inputs", "run_stage"]

logger = logging.getLogger(__name__)

# The summary's first line, by exit code.
VERDICTS = {EXIT_OK: "OK", EXIT_GATE_FAILED: "FAILED", EXIT_UNPROVEN: "OK, NOT PROVEN (exit 3: a gate passed unproven)"}


@dataclass
class BuildSummary:
    """What a build did: its stages, the validation report, notes and what is left for the device."""

    context: BuildContext
    stages: list[StageResult] = field(default_factory=list)
    report: ValidationReport | None = None
    notes: list[str] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)

    @property
    def target(self) -> Target:
        return self.context.target

    @property
    def root(self) -> Path:
        return self.context.root

    @property
    def ok(self) -> bool:
        """No gate failed (a NOT PROVEN gate passed on its measured value: see :attr:`exit_code`)."""
        return self.report is None or self.report.passed

    @property
    def exit_code(self) -> int:
        """0 every gate proven, 1 a gate failed, 3 every gate passed but at least one NOT PROVEN
        (:func:`edgeresnext.errors.exit_code`)."""
        return EXIT_OK if self.report is None else exit_code(self.report.gates)

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.name == name), None)

    def render(self) -> str:
        """The closing summary: stages, artifacts with sizes, accuracy and latency, gates, where things are."""
        lines = [
            f"build {self.target.name}: {VERDICTS[self.exit_code]}  "
            f"({self.target.backend}, {self.target.precision}; {self.root})"
        ]
        for stage in self.stages:
            state = "cached" if stage.skipped else f"{stage.seconds:.1f} s"
            why = f"  rerun: {stage.reason}" if stage.reason else ""
            lines.append(f"  {stage.name:9s} {state:>8s}{why}")
        compile_stage = self.stage("compile")
        if compile_stage:
            lines.append("artifacts:")
            for name in compile_stage.outputs:
                path = compile_stage.folder / name
                lines.append(f"  {path}  {path.stat().st_size / 1e6:.2f} MB")
        if self.report is not None:
            report = self.report
            level = next((f"{a.uncertainty.confidence * 100:g} %" for a in report.artifacts if a.uncertainty), "")
            lines.append(
                f"validation ({report.data.count:,} images, each artifact against {report.reference} on the same ones; "
                f"[{level} bound] from the per-image outcomes; batch-1 latency p50; speed-up against the same "
                "runtime's float build):"
            )
            for row in report.artifacts:
                lines.append(f"  {row.name:28s} {_summary_cells(row, report)}")
            for gate in report.gates:
                lines.append(f"  gate {gate.gate}: {gate.verdict} ({gate.message})")
            # The build's own notes (preflight, quantize) are printed once, below; the report adds its findings.
            said = [*report.speed_findings(), *(note for note in report.notes if note not in self.notes)]
            lines += [f"  {note}" if note.startswith("WARNING") else f"  note: {note}" for note in said]
            lines += deepstream_lines(report)
            lines.append(f"report: {self.context.folder('validate') / 'report.md'} (and report.html, report.json)")
        bundle_stage = self.stage("bundle")
        if bundle_stage:
            lines.append(f"bundle: {bundle_stage.folder} (edgeresnext bundle verify {bundle_stage.folder})")
        lines += [f"not done here: {item}" for item in self.not_done]
        lines += [note if note.startswith("WARNING") else f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def comparison_row(self) -> list[str]:
        """This build's line in ``build/comparison.md``."""
        head = [self.target.name, self.target.backend, self.target.precision]
        if self.report is None:
            return [*head, *["-"] * 7]
        primary = self.report.primary_result
        u = primary.uncertainty
        drop_bound = f" [{u.confidence * 100:g} % ≤ {u.drop_upper_bound * 100:.2f}]" if u else ""
        agreement_bound = f" [≥ {u.agreement_lower_bound * 100:.2f}]" if u else ""
        return [
            *head,
            primary.name,
            f"{primary.top1 * 100:.2f} %",
            f"{primary.top1_drop * 100:+.2f}{drop_bound}",
            f"{primary.agreement * 100:.2f} %{agreement_bound}",
            f"{primary.p50_ms:.3f}",
            _speedup_text(primary, self.report),
            {EXIT_OK: "pass", EXIT_GATE_FAILED: "FAIL", EXIT_UNPROVEN: "NOT PROVEN"}[self.exit_code],
        ]


def deepstream_lines(report: ValidationReport) -> list[str]:
    """The report's DeepStream section in the build summary: each setting of the configs and the figure that chose it
    (empty without one)."""
    section = report.deepstream
    if section is None:
        return []
    lines = [
        f"DeepStream preprocessing (nvinfer emulated on {section.images:,} validation images, scored with "
        f"{section.scored_with}; agreement: same top-1 as the bundle's preprocessing):"
    ]
    return lines + [f"  {section.choice_text(choice)}" for choice in section.choices]


def _speedup_text(row: ArtifactResult, report: ValidationReport) -> str:
    """``x3.40 vs OpenVINO FP32``; ``float baseline`` for the row others are timed against; why there is none."""
    is_baseline = any(other.speedup_baseline == row.name for other in report.measured)
    if row.speedup_baseline == row.name or (is_baseline and row.speedup is None):
        return "float baseline"
    if row.speedup is None:
        return f"no {row.label.rsplit(' ', 1)[0]} float build timed"
    return f"x{row.speedup:.2f} vs {report.result(row.speedup_baseline).label}"


def _summary_cells(row: ArtifactResult, report: ValidationReport) -> str:
    """One artifact in the build summary: ``top-1 94.05 %  drop +0.02 pt [95 % ≤ 0.14]  agreement 99.54 % [≥ 99.43]
    p50 0.332 ms  x2.59 vs OpenVINO FP32``."""
    if not row.ok:
        return f"not run here: {row.skip_reason}"
    u = row.uncertainty
    if u is None:  # the reference itself, in the width of the other rows' drop and agreement
        accuracy = f"{'accuracy reference':{len('drop +0.00 pt [95 % ≤ 0.00]  agreement 100.00 % [≥ 00.00]')}s}"
    else:
        accuracy = (
            f"drop {u.drop * 100:+.2f} pt [{u.confidence * 100:g} % ≤ {u.drop_upper_bound * 100:.2f}]  "
            f"agreement {u.agreement * 100:6.2f} % [≥ {u.agreement_lower_bound * 100:.2f}]"
        )
    cells = f"top-1 {row.top1 * 100:6.2f} %  {accuracy}  p50 {row.p50_ms:7.3f} ms  {_speedup_text(row, report)}"
    return cells + _integer_share(row)


def _integer_share(row: ArtifactResult) -> str:
    """What an INT8 artifact really runs, as its runtime reports it (convolutions as integer kernels)."""
    runtime = row.runtime_precision
    if "int8" not in row.precision or not runtime.int8_count:
        return ""
    return f"  (int8 kernels: {runtime.int8_count})"


def prepare_inputs(target: Target, say: Callable[[str], None], install: bool = False) -> None:
    """Set up the default inputs ``target`` reads, and only those: Fashion-MNIST when it validates (or calibrates)
    on it, and the generated ``calib_data/`` when it calibrates there and the folder holds no images yet (a
    folder with images is used as it is: they may be the user's own). ``install`` lets Fashion-MNIST come from
    apt-get (see :func:`~edgeresnext.data.fashion_mnist.ensure_fashion_mnist`)."""
    from edgeresnext.data import calibration
    from edgeresnext.data.fashion_mnist import ensure_fashion_mnist

    calib = Path(target.quant.calib_dir)
    if target.data.dataset == "fashion-mnist" and target.data.root is None:
        ensure_fashion_mnist(install=install)
    if target.precision == "int8" and calib == Path(calibration.DEFAULT_FOLDER):
        # Under the folder's lock: a build started beside this one may be writing it (it waits, then reads it).
        calibration.ensure_calibration_set(calib, count=calibration.DEFAULT_COUNT, install=install, say=say)


def build(
    target: Target,
    out_root: str | Path = "build",
    progress: bool = True,
    say: Callable[[str], None] = logger.info,
    install: bool = False,
    stop_after: str | None = None,
    sign_key: str | Path | None = None,
) -> BuildSummary:
    """Run the stages for ``target`` into ``<out_root>/<target.name>/``; returns the summary the CLI prints.

    ``say`` receives one line per stage as it starts and ends, and the build's notes (the CLI prints them; default:
    the log). Missing default inputs are set up first (:func:`prepare_inputs`; ``install`` allows apt-get for
    Fashion-MNIST).
    ``stop_after`` ends the build after that stage (``edgeresnext quantize``/``compile`` run the same stages).
    ``sign_key``: a PEM private key; a build that passes its gates signs its bundle with it (``bundle/bundle.sig``,
    :mod:`edgeresnext.bundle.signature`), cached stages or not. The key is checked before the first stage.
    """
    ctx = BuildContext(target=target, root=build_folder(out_root, target.name), progress=progress, say=say)
    planned = ctx.planned
    if stop_after is not None:
        if stop_after not in planned:
            raise ConfigError(f"stop_after={stop_after!r}; a {target.precision} build runs {', '.join(planned)}")
        planned = planned[: planned.index(stop_after) + 1]
    password = None
    if sign_key is not None:
        from edgeresnext.bundle.signature import private_key_password

        password = private_key_password(sign_key)
    prepare_inputs(target, say, install=install)
    summary = BuildSummary(context=ctx)
    # Classes, preprocessing, validation folder and calibration images are checked before any stage writes.
    checked = preflight(target)
    ctx.meta = checked.meta
    ctx.notes += checked.notes
    for note in checked.notes:
        say(f"note: {note}")
    with BuildLock(ctx.root, on_wait=say):
        # A build killed mid-write (kill -9, power loss) leaves hidden temporaries; the lock says none is live.
        remove_stale_temporaries(ctx.root)
        write_json_atomic(ctx.root / "config.json", target.resolved())
        for index, name in enumerate(planned, start=1):
            say(f"[{index}/{len(ctx.planned)}] {name} ...")
            result = STAGE_FUNCTIONS[name](ctx)
            ctx.done[name] = result
            summary.stages.append(result)
            state = "unchanged, skipped" if result.skipped else f"done in {result.seconds:.1f} s"
            rerun = f"rerunning: {result.reason}; " if result.reason else ""
            say(f"[{index}/{len(ctx.planned)}] {name}: {rerun}{state}")
            if name == "quantize":
                ctx.notes += _quantize_notes(result)
    summary.notes[:0] = ctx.notes
    if "validate" in ctx.done:
        summary.report = load_report(ctx)
    if "compile" in ctx.done:
        _device_step(ctx, summary)
    if target.model.checkpoint == SHIPPED_CHECKPOINT:
        summary.notes.append("model: the shipped Fashion-MNIST ResNeXt (override with CHECKPOINT=... / MODEL=...)")
    if sign_key is not None and "bundle" in ctx.done:
        summary.notes.append(_signed(ctx, summary, Path(sign_key), password))
    return summary


def _signed(ctx: BuildContext, summary: BuildSummary, sign_key: Path, password: bytes | None) -> str:
    """Sign the bundle of a build that passed (never one that failed its gates); the note saying what happened."""
    from edgeresnext.bundle.signature import sign_bundle

    bundle = ctx.folder("bundle")
    if not summary.ok:
        return f"bundle: NOT signed: the build failed its gates ({bundle} is not signed with {sign_key})"
    with BuildLock(ctx.root, on_wait=ctx.say):
        signature = sign_bundle(bundle, sign_key, password)
    return f"bundle: signed with {sign_key}: {signature} covers every file of it, manifest.json included"


def _device_step(ctx: BuildContext, summary: BuildSummary) -> None:
    """What is left to do on the device for an artifact finished there (its backend says): why, and with a bundle
    what it carries for the device and how to finish it there; without one, the device commands."""
    from edgeresnext.backends import get_backend

    artifact = ctx.done["compile"].info.artifact
    backend = get_backend(artifact.backend)
    reason = backend.awaits_device(artifact)
    if reason is None:
        return
    summary.not_done.append(reason)
    bundle = ctx.folder("bundle") if "bundle" in ctx.done else None  # the device step runs against the bundle copy
    record = ctx.done["bundle"].info.device_check_set if bundle is not None else None
    summary.notes += backend.device_step_notes(artifact, bundle, record)


def _quantize_notes(quantized: StageResult) -> list[str]:
    """What the quantize stage did besides PTQ/QAT (also when it was cached): skipped images, sensitivity, fallback."""
    info: QuantizeInfo = quantized.info
    notes = []
    near = info.calibration_near_copies
    if near is not None and near.count:
        first = near.images[0]
        notes.append(
            f"WARNING: calibration: {near.count} of {near.checked} calibration images are near-copies of "
            f"validation images (the same model input up to a resize, a re-encoding or an alpha channel; first: "
            f"{first['image']} ~ {first['near']}): the drop is measured partly on images the quantizer calibrated "
            f"on; all in {quantized.folder / 'quant.json'}"
        )
    skipped = info.calibration_skipped
    if skipped:
        notes.append(
            f"calibration: skipped {len(skipped)} unreadable image(s) (data.on_bad_image: skip) and took the next, "
            f"first: {skipped[0][1]}; all in {quantized.folder / 'quant.json'}"
        )
    # No timings here: the note goes into the report, which two builds of the same inputs write alike.
    notes.append(
        f"quantize: {info.method} on {info.calibration_images} calibration images; sensitivity {info.sensitivity}; "
        f"{_fallback_said(info.fallback)}"
    )
    return notes


def _fallback_said(fallback: FallbackRecord | None) -> str:
    """The quantize note's account of the fallback: not asked for, not run and why, or what it left in float."""
    if fallback is None:
        return "no fallback (no max_top1_drop gate, or quant.max_fallback_layers: 0)"
    if not fallback.run:
        return f"fallback not run: {fallback.why}"
    if fallback.layers_in_float:
        decided = (
            f"fallback on {fallback.images}: drop {fallback.top1_drop_before * 100:.2f} pt not within the gate, "
            f"{len(fallback.layers_in_float)} layer(s) left in float ({', '.join(fallback.layers_in_float)}), "
            f"drop {fallback.top1_drop_after * 100:.2f} pt"
        )
    else:
        decided = (
            f"fallback checked on {fallback.images}: drop {fallback.top1_drop_before * 100:.2f} pt within "
            "the gate, nothing left in float"
        )
    if fallback.near_copies:
        copies = fallback.near_copies
        decided += f" (near-copies left out, first: {copies[0]['image']} ~ {copies[0]['near']})"
    if fallback.decided_on:
        bound = fallback.top1_drop_upper_bound
        on_bound = bound is not None and fallback.decided_on == "bound"
        decided += f" (decided on the {fallback.decided_on}" + (
            f", upper bound {bound * 100:.2f} pt)" if on_bound else ")"
        )
    return decided


COMPARISON_HEADER = [
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


def build_all(
    targets: list[Target],
    out_root: str | Path = "build",
    progress: bool = True,
    say: Callable[[str], None] = logger.info,
    install: bool = False,
    sign_key: str | Path | None = None,
) -> tuple[str, int]:
    """Build each target (a failure is recorded, not fatal) and write ``<out_root>/comparison.md``; ``sign_key`` signs
    each bundle that passes (:func:`build`). Returns the table and the exit code: 1 when any build failed or erred,
    else 3 when any gate is NOT PROVEN, else 0."""
    rows = [COMPARISON_HEADER]
    codes = {EXIT_OK}
    for target in targets:
        try:
            summary = build(target, out_root=out_root, progress=progress, say=say, install=install, sign_key=sign_key)
        except EdgeResNeXtError as err:
            codes.add(EXIT_GATE_FAILED)
            rows.append([target.name, target.backend, target.precision, *["-"] * 6, f"error: {err}"])
            continue
        codes.add(summary.exit_code)
        rows.append(summary.comparison_row())
    table = "\n".join(
        "| " + " | ".join(row) + " |" + ("\n|" + "---|" * len(row) if i == 0 else "") for i, row in enumerate(rows)
    )
    path = write_text_atomic(Path(out_root) / "comparison.md", "# Targets compared\n\n" + table + "\n")
    code = EXIT_GATE_FAILED if EXIT_GATE_FAILED in codes else max(codes)
    return f"{table}\n\ncomparison written to {path}", code
