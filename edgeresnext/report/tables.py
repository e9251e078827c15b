"""The report's tables and findings as text, and report.md: views of the typed report (:class:`ValidationReport`)."""

from __future__ import annotations

import logging
from typing import Any

from edgeresnext.validate.results import ArtifactResult, GateResult, ValidationReport

logger = logging.getLogger(__name__)


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _size(value: int | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def _gate_verdict(gate: GateResult) -> str:
    """The gate table's verdict cell: :attr:`GateResult.verdict` with the gate's message."""
    if not gate.passed:
        return "FAIL: " + gate.message
    return "NOT PROVEN: " + gate.message.split("NOT PROVEN: ", 1)[-1] if gate.provable is False else "pass"


def speedup_cell(report: ValidationReport, artifact: ArtifactResult) -> str:
    """``3.40x vs OpenVINO FP32``: the speed-up names the same-runtime float build it is measured against."""
    speedup, name = artifact.speedup, artifact.name
    is_baseline = any(a.speedup_baseline == name for a in report.measured)
    if artifact.speedup_baseline == name or (is_baseline and speedup is None):
        return "float baseline"
    if speedup is None:
        return f"– (no {artifact.label.rsplit(' ', 1)[0]} float build timed)"
    return f"{speedup:.2f}x vs {report.result(artifact.speedup_baseline).label}"


def summary_rows(report: ValidationReport) -> list[list[str]]:
    """The main table: one row per artifact (header first)."""
    rows = [
        [
            "artifact",
            "backend",
            "precision",
            "top-1",
            "top-5",
            "top-1 drop",
            "agreement",
            "cosine (mean/min)",
            "max |Δlogit|",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "speed-up (same runtime)",
            f"img/s @{report.protocol['throughput_batch']}",
            "size",
            "peak RSS Δ",
        ]
    ]
    for a in report.artifacts:
        if not a.ok:
            rows.append([a.name, a.backend, a.precision, f"skipped: {a.skip_reason}", *[""] * 12])
            continue
        lat = a.latency
        rows.append(
            [
                a.name,
                a.backend,
                # for INT8, what its runtime reports running as integer kernels (ONNX Runtime: read from the
                # optimised graph; OpenVINO: from the compiled model)
                a.runtime_precision.summary(),
                _pct(a.top1),
                _pct(a.top5),
                f"{a.top1_drop * 100:+.2f} pt",
                _pct(a.agreement),
                f"{a.cosine_mean:.5f} / {a.cosine_min:.5f}",
                f"{a.max_abs_error:.4g}",
                _ms(lat.p50_ms),
                _ms(lat.p90_ms),
                _ms(lat.p99_ms),
                speedup_cell(report, a),
                f"{a.throughput.images_per_s:.0f}",
                _size(a.size_bytes),
                f"{a.peak_rss_delta_mb:.1f} MB",
            ]
        )
    return rows


def _confidence(report: ValidationReport) -> float | None:
    return next((a.uncertainty.confidence for a in report.measured if a.uncertainty), None)


def uncertainty_rows(report: ValidationReport) -> list[list[str]] | None:
    """How sure each artifact's drop and agreement are (header first); None when nothing was compared."""
    confidence = _confidence(report)
    if confidence is None:
        return None
    level = f"{confidence * 100:g} %"
    rows = [
        [
            "artifact",
            "images",
            "only FP32 right",
            "only this right",
            "top-1 drop",
            f"{level} interval",
            f"{level} upper bound",
            "McNemar p",
            "agreement",
            f"{level} interval",
            f"{level} lower bound",
        ]
    ]
    for a in report.measured:
        u = a.uncertainty
        if not u:
            continue
        low, high = u.drop_interval
        a_low, a_high = u.agreement_interval
        rows.append(
            [
                a.name,
                f"{u.n:,}",
                str(u.b),
                str(u.c),
                f"{u.drop * 100:+.2f} pt",
                f"[{low * 100:+.2f}, {high * 100:+.2f}] pt",
                f"{u.drop_upper_bound * 100:.2f} pt",
                f"{u.mcnemar_p:.3g}",
                _pct(u.agreement),
                f"[{a_low * 100:.2f}, {a_high * 100:.2f}] %",
                _pct(u.agreement_lower_bound),
            ]
        )
    return rows


_GATE_UNITS = {"max_top1_drop": "pt", "min_agreement": "%", "max_latency_ms": "ms", "min_speedup": "x"}


def _gate_number(gate: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    unit = _GATE_UNITS.get(gate, "")
    if unit == "pt":
        return f"{value * 100:+.2f} pt" if signed else f"{value * 100:.2f} pt"
    if unit == "%":
        return f"{value * 100:.2f} %"
    return f"{value:.4g} {unit}" if unit == "ms" else f"{value:.4g}{unit}"


def gate_rows(report: ValidationReport) -> list[list[str]]:
    """The gates table (header first): what each gate was decided on (a bound, or the measured value)."""
    rows = [["gate", "artifact", "limit", "measured", "decided on", "result"]]
    for g in report.gates:
        if g.basis == "bound":
            side = "upper" if g.gate == "max_top1_drop" else "lower"
            decided = f"{g.confidence * 100:g} % {side} bound {_gate_number(g.gate, g.value)}"
        else:
            decided = "the measured value"
        rows.append(
            [
                g.gate,
                g.artifact,
                _gate_number(g.gate, g.limit),
                _gate_number(g.gate, g.measured, signed=True),
                decided,
                _gate_verdict(g),
            ]
        )
    return rows


def speed_findings(report: ValidationReport) -> list[str]:
    """:meth:`ValidationReport.speed_findings`: which build is faster, where the report says it."""
    return report.speed_findings()


def speed_baselines(report: ValidationReport) -> str:
    """One sentence naming what the speed-ups are measured against."""
    pairs = sorted(
        {(a.name, a.speedup_baseline) for a in report.measured if a.speedup_baseline and a.speedup_baseline != a.name}
    )
    named = "; ".join(f"{name} against {baseline}" for name, baseline in pairs)
    return (
        "Speed-up: p50 of the same runtime's float build over the artifact's (PyTorch eager is the accuracy "
        f"reference, not the speed baseline){': ' + named if named else ''}."
    )


DEVICE_TEXT = (
    "The engine itself, run on the device after it was built there (`edgeresnext bundle build-engine` or the kit's "
    "build_engine.sh) on the bundle's check set: the first validation images, preprocessed by the bundle's own code, "
    "compared image by image with the host's outputs for the same images. Intervals and bounds come from the host's "
    "own statistics code; latency is trtexec's GPU Compute Time on the device. Host rows: the full validation set."
)


DEVICE_HEADER = [
    "artifact",
    "measured on",
    "images",
    "top-1",
    "agreement with FP32",
    "agreement with INT8 stand-in",
    "max / mean |Δlogit| vs stand-in",
    "p50 ms @1",
    "p99 ms @1",
    "img/s (batch)",
    "device check",
]


def device_rows(report: ValidationReport) -> list[list[str]]:
    """The device check's row beside the host rows it is compared with (empty without a device check)."""
    check = report.device_check
    if not check:
        return []
    rows = [DEVICE_HEADER, *_host_rows(report, check)]
    where = _device_where(check.get("device") or {})
    if check.get("status") == "unchecked" or "top1" not in check:
        rows.append([report.device_engine or DEVICE_ENGINE, where, "–", *["–"] * 7, "unchecked"])
        return rows
    rows.append(_device_row(report, check, where))
    return rows


# How the device row names the engine when the report does not (``ValidationReport.device_engine``).
DEVICE_ENGINE = "tensorrt engine"


def _host_rows(report: ValidationReport, check: dict[str, Any]) -> list[list[str]]:
    """The host's rows the device is compared with: the FP32 reference and the INT8 stand-in, as measured here."""
    by_name = {a.name: a for a in report.measured}
    rows = []
    for name in (report.reference, check.get("stand_in")):
        a = by_name.get(name)
        if a is None:
            continue
        lat, thr = a.latency, a.throughput
        rows.append(
            [
                a.name,
                f"host ({report.environment.get('cpu_model', 'CPU')})",
                str(report.data.count),
                _pct(a.top1),
                _pct(a.agreement),
                "–",
                "–",
                _ms(lat.p50_ms if lat else None),
                _ms(lat.p99_ms if lat else None),
                f"{thr.images_per_s:.1f} ({thr.batch})" if thr else "–",
                "",
            ]
        )
    return rows


def _device_where(device: dict[str, Any]) -> str:
    """``Orin SM 8.7, TensorRT 10.3, power mode MAXN``: the device the check ran on, as it reported itself (a backend
    whose device is no GPU names it in ``where``)."""
    if device.get("where"):
        return str(device["where"])
    where = f"{device.get('gpu_name') or 'device'} SM {device.get('gpu_sm') or '?'}, TensorRT " + str(
        device.get("tensorrt_version") or "?"
    )
    if device.get("power_mode"):
        where += f", power mode {device['power_mode']}"
    return where


def _device_row(report: ValidationReport, check: dict[str, Any], where: str) -> list[str]:
    """The engine's row: its figures on the check set with their intervals, trtexec's latency, the verdict."""

    def interval(part: dict[str, Any]) -> str:
        return f"{_pct(part['value'])} [{_pct(part['interval'][0])}, {_pct(part['interval'][1])}]"

    latency = check.get("latency") or {}
    one = latency.get("batch_1") or {}
    largest = max(latency.values(), key=lambda t: t["batch"]) if latency else {}
    dlogit = check.get("max_abs_dlogit_vs_stand_in")
    return [
        report.device_engine or DEVICE_ENGINE,
        where,
        str(check["images"]),
        interval(check["top1"]),
        interval(check["agreement_fp32"]),
        interval(check["agreement_stand_in"]),
        f"{'–' if dlogit is None else format(dlogit, '.4g')} / {check['mean_abs_dlogit_vs_stand_in']:.4g}",
        _ms(one.get("p50_ms")),
        _ms(one.get("p99_ms")),
        f"{largest['images_per_s']:.1f} ({largest['batch']})" if largest else "–",
        str(check["status"]).upper(),
    ]


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def render_markdown(report: ValidationReport) -> str:
    sections = [
        _md_heading(report),
        _md_artifacts(report),
        _md_device(report),
        _md_uncertainty(report),
        _md_gates(report),
        _md_deepstream(report),
        _md_per_class(report),
        _md_sensitivity(report),
        _md_environment(report),
    ]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"


def _md_heading(report: ValidationReport) -> list[str]:
    """Title and verdict, warnings, what was judged on which data, skipped images, the timing protocol and host."""
    env, proto, data, target = report.environment, report.protocol, report.data, report.target
    status = "PASSED" if report.passed else "FAILED"
    skipped = (
        [
            f"Skipped {len(data.skipped)} unreadable image(s) (data.on_bad_image: skip); first: "
            f"{data.skipped[0]['file']} ({data.skipped[0]['reason']}).",
            "",
        ]
        if data.skipped
        else []
    )
    return [
        f"# Validation report: {target['name']} — {status}",
        "",
        *[f"> **{note}**\n" for note in report.notes if note.startswith("WARNING")],
        f"Target `{target['name']}` ({target['backend']}, {target['precision']}); "
        f"gates apply to **{report.primary}**; reference **{report.reference}**.",
        "",
        f"Data: {data.name} ({data.count} images, {data.num_classes} classes, input "
        f"{'x'.join(map(str, data.input_shape))}).",
        "",
        *skipped,
        f"Latency: batch {proto['latency_batch']}, {proto['warmup']} warm-up + {proto['runs']} timed runs, "
        f"{proto['threads']} threads; throughput at batch {proto['throughput_batch']}. Timer: {proto['timer']}. "
        f"Host: {env['cpu_model']}, {env['cpu_cores']} cores ({env['cpu_cores_usable']} usable), load average "
        f"{', '.join(f'{x:.2f}' for x in env['load_average'] or [])} at the start.",
        "",
    ]


def _md_artifacts(report: ValidationReport) -> list[str]:
    findings = speed_findings(report)
    return [
        "## Artifacts",
        "",
        _md_table(summary_rows(report)),
        "",
        speed_baselines(report),
        "",
        *[f"- {finding}" for finding in findings],
        *([""] if findings else []),
    ]


def device_section(report: ValidationReport) -> tuple[list[list[str]], str] | None:
    """The device check's table (:func:`device_rows`) and what the check said (its verdict or why it did not
    run); None without a device check."""
    rows = device_rows(report)
    if not rows:
        return None
    check = report.device_check
    said = check.get("reason") or (check.get("gate") or {}).get("message", "")
    sample = check.get("sample")
    if sample:
        counts = ", ".join(f"{name} {count}" for name, count in (check.get("class_counts") or {}).items())
        drawn = (
            f"a class-stratified random sample of {sample['of']:,} validation images, data.sample_seed {sample['seed']}"
            if sample["of"] > (check.get("images") or 0)
            else "all the validation images"
        )
        said += f" (check set: {check.get('images')} images, {drawn}: {counts})"
    return rows, said


def _md_device(report: ValidationReport) -> list[str]:
    section = device_section(report)
    if section is None:
        return []
    rows, said = section
    return ["## On the device", "", DEVICE_TEXT, "", _md_table(rows), "", f"- {said}", ""]


def _md_uncertainty(report: ValidationReport) -> list[str]:
    uncertainty = uncertainty_rows(report)
    if not uncertainty:
        return []
    return [
        "## How sure: drop and agreement against FP32 on the same images",
        "",
        UNCERTAINTY_TEXT,
        "",
        _md_table(uncertainty),
        "",
    ]


def _md_gates(report: ValidationReport) -> list[str]:
    if not report.gates:
        return ["## Gates", "", "No gates set in the target.", ""]
    return ["## Gates", "", _md_table(gate_rows(report)), ""]


DEEPSTREAM_TEXT = (
    "What the bundle's deepstream/ configs make DeepStream's nvinfer do, measured: the validation images through an "
    "emulation of nvinfer's preprocessing (edgeresnext/data/nvinfer.py: the frame stretched or fitted to the network "
    "size, its scaling filter, the normalization), scored with {scored_with}. Agreement: share of images with the same "
    "top-1 class as the bundle's own preprocessing. Each setting of the configs is the measured row it names, chosen "
    "against the rows beside it."
)


def deepstream_section(report: ValidationReport) -> tuple[str, list[list[str]], list[list[str]]] | None:
    """The DeepStream section (a Jetson bundle's): its text, the measured rows, and each setting of the configs with
    the figure that chose it; None without one."""
    section = report.deepstream
    if section is None:
        return None
    rows = [["preprocessing", "top-1", "agreement with the bundle's", "no class kept by nvinfer's parser"]]
    for row in section.rows:
        rows.append(
            [row.name, _pct(row.top1), f"{_pct(row.agreement)} ({row.agree}/{row.images})", str(row.unclassified)]
        )
    choices = [["setting", "runs as", "agreement", "measured against", "why"]]
    for choice in section.choices:
        chosen = section.row(choice.chosen)
        against = "; ".join(f"{r.name}: {_pct(r.agreement)}" for r in map(section.row, choice.against)) or "–"
        choices.append([choice.setting, chosen.name, _pct(chosen.agreement), against, choice.rule])
    return DEEPSTREAM_TEXT.format(scored_with=section.scored_with), rows, choices


def _md_deepstream(report: ValidationReport) -> list[str]:
    section = deepstream_section(report)
    if section is None:
        return []
    text, rows, choices = section
    heading = "## DeepStream preprocessing (nvinfer): top-1 and agreement with the bundle's preprocessing"
    return [heading, "", text, "", _md_table(rows), "", _md_table(choices), ""]


def _md_per_class(report: ValidationReport) -> list[str]:
    ok = report.measured
    table = [["class", *[a.name for a in ok]]]
    table += [[name, *[_pct(a.per_class_accuracy[i], 1) for a in ok]] for i, name in enumerate(report.data.class_names)]
    return ["## Per-class top-1", "", _md_table(table), ""]


def _md_sensitivity(report: ValidationReport) -> list[str]:
    """The 15 most sensitive layers, when the quantize stage measured them."""
    if not report.sensitivity:
        return []
    lines = ["## Quantization sensitivity (most sensitive layers)", "", "| layer | metric | value |", "|---|---|---|"]
    lines += [f"| {r['layer']} | {r['metric']} | {r['value']:.4g} |" for r in report.sensitivity[:15]]
    return [*lines, ""]


def _md_environment(report: ValidationReport) -> list[str]:
    env, proto = report.environment, report.protocol
    return [
        "## Environment",
        "",
        f"- command: `{report.command}`",
        f"- platform: {env['platform']}, Python {env['python']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()),
        f"- memory: {proto['memory']}",
        "",
        *[f"- note: {n}" for n in report.notes],
    ]


UNCERTAINTY_TEXT = (
    "Only the images one model gets right and the other wrong move the top-1 drop. The interval is where the true "
    "drop lies at this confidence (Tango's paired score interval, corrected by half an image); the upper bound is "
    "what a `max_top1_drop` gate compares. McNemar p below 0.05 says the two models' top-1 accuracies differ by "
    "more than chance (it asks only whether one model wins more images than the other, and can stay above 0.05 "
    "when the interval excludes 0). Agreement: share of images with the same top-1 class as FP32 (exact "
    "Clopper-Pearson interval); its lower bound is what `min_agreement` compares."
)
