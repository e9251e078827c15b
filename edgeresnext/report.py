"""The validation report: ``report.json`` (versioned schema), ``report.md`` (tables), ``report.html`` (one
self-contained page with plots embedded as base64 PNG).

The JSON is the record; the Markdown and HTML are views of it, so all three always show the same numbers.
The schema lives in ``edgeresnext/schemas/report.schema.json`` (``SCHEMA_VERSION`` bumps on any
incompatible change).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any

from edgeresnext.atomic import write_json_atomic, write_text_atomic
from edgeresnext.errors import ConfigError
from edgeresnext.validate.results import RUNTIME_NAMES, SCHEMA_ID, SCHEMA_VERSION, ValidationReport, runtime_label

logger = logging.getLogger(__name__)

__all__ = ["SCHEMA_ID", "SCHEMA_VERSION", "check_report", "render_html", "render_markdown", "write_report"]

SCHEMA_PATH = Path(__file__).parent / "schemas" / "report.schema.json"


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def check_report(report: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` if ``report`` does not follow the committed schema (needs ``jsonschema``)."""
    import jsonschema

    try:
        jsonschema.validate(report, load_schema())
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"report.json does not follow {SCHEMA_PATH.name} at {where}: {err.message}") from err


def _ok(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in report["artifacts"] if a["status"] == "ok"]


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _size(value: int | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


# --------------------------------------------------------------------------------------------- markdown
def _artifact(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in report["artifacts"] if a["name"] == name)


def _label(artifact: dict[str, Any]) -> str:
    return runtime_label(artifact.get("backend", ""), artifact.get("precision", ""))


def _gate_verdict(gate: dict[str, Any]) -> str:
    """The gate table's verdict cell (the JSON record's view of GateResult.verdict)."""
    if not gate["passed"]:
        return "FAIL: " + gate["message"]
    return "NOT PROVEN: " + gate["message"].split("NOT PROVEN: ", 1)[-1] if gate.get("provable") is False else "pass"


def speedup_cell(report: dict[str, Any], artifact: dict[str, Any]) -> str:
    """``3.40x vs OpenVINO FP32``: the speed-up names the same-runtime float build it is measured against."""
    speedup, name = artifact.get("speedup_vs_fp32"), artifact["name"]
    is_baseline = any(a.get("speedup_baseline") == name for a in _ok(report))
    if artifact.get("speedup_baseline") == name or (is_baseline and speedup is None):
        return "float baseline"
    if speedup is None:
        return f"– (no {_label(artifact).rsplit(' ', 1)[0]} float build timed)"
    return f"{artifact['speedup_vs_fp32']:.2f}x vs {_label(_artifact(report, artifact['speedup_baseline']))}"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
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
            f"img/s @{report['protocol']['throughput_batch']}",
            "size",
            "peak RSS Δ",
        ]
    ]
    for a in report["artifacts"]:
        if a["status"] != "ok":
            rows.append(
                [a["name"], a.get("backend", ""), a.get("precision", ""), f"skipped: {a['skip_reason']}", *[""] * 12]
            )
            continue
        lat = a["latency"]
        rows.append(
            [
                a["name"],
                a["backend"],
                a["precision"],
                _pct(a["top1"]),
                _pct(a["top5"]),
                f"{a['top1_drop'] * 100:+.2f} pt",
                _pct(a["agreement"]),
                f"{a['cosine_mean']:.5f} / {a['cosine_min']:.5f}",
                f"{a['max_abs_error']:.4g}",
                _ms(lat["p50_ms"]),
                _ms(lat["p90_ms"]),
                _ms(lat["p99_ms"]),
                speedup_cell(report, a),
                f"{a['throughput']['images_per_s']:.0f}",
                _size(a["size_bytes"]),
                f"{a['peak_rss_delta_mb']:.1f} MB",
            ]
        )
    return rows


def _confidence(report: dict[str, Any]) -> float | None:
    return next((a["uncertainty"]["confidence"] for a in _ok(report) if a.get("uncertainty")), None)


def uncertainty_rows(report: dict[str, Any]) -> list[list[str]] | None:
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
    for a in _ok(report):
        u = a.get("uncertainty")
        if not u:
            continue
        drop, agreement = u["drop"], u["agreement"]
        low, high = drop["interval"]
        a_low, a_high = agreement["interval"]
        rows.append(
            [
                a["name"],
                f"{u['images']:,}",
                str(u["paired"]["b"]),
                str(u["paired"]["c"]),
                f"{drop['point'] * 100:+.2f} pt",
                f"[{low * 100:+.2f}, {high * 100:+.2f}] pt",
                f"{drop['upper_bound'] * 100:.2f} pt",
                f"{u['mcnemar_p']:.3g}",
                _pct(agreement["point"]),
                f"[{a_low * 100:.2f}, {a_high * 100:.2f}] %",
                _pct(agreement["lower_bound"]),
            ]
        )
    return rows


_GATE_UNITS = {"max_top1_drop": "pt", "min_agreement": "%", "max_latency_ms": "ms", "min_speedup_vs_fp32": "x"}


def _gate_number(gate: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    unit = _GATE_UNITS.get(gate, "")
    if unit == "pt":
        return f"{value * 100:+.2f} pt" if signed else f"{value * 100:.2f} pt"
    if unit == "%":
        return f"{value * 100:.2f} %"
    return f"{value:.4g} {unit}" if unit == "ms" else f"{value:.4g}{unit}"


def gate_rows(report: dict[str, Any]) -> list[list[str]]:
    """The gates table (header first): what each gate was decided on (a bound, or the measured value)."""
    rows = [["gate", "artifact", "limit", "measured", "decided on", "result"]]
    for g in report["gates"]:
        basis = g.get("basis", "value")
        if basis == "bound":
            side = "upper" if g["gate"] == "max_top1_drop" else "lower"
            decided = f"{g['confidence'] * 100:g} % {side} bound {_gate_number(g['gate'], g['value'])}"
        else:
            decided = "the measured value"
        measured = g.get("measured", g["value"])
        rows.append(
            [
                g["gate"],
                g["artifact"],
                _gate_number(g["gate"], g["limit"]),
                _gate_number(g["gate"], measured, signed=True),
                decided,
                _gate_verdict(g),
            ]
        )
    return rows


def speed_findings(report: dict[str, Any]) -> list[str]:
    """Which build is faster, where a quantized artifact is slower than its runtime's float build, and for
    TensorRT always (the FP16 engine can beat INT8 on a GPU): the build to deploy is then the other one."""
    findings = []
    for a in _ok(report):
        name, baseline_name, speedup = a["name"], a.get("speedup_baseline"), a.get("speedup_vs_fp32")
        if speedup is None or baseline_name in (None, name) or (speedup >= 1 and a["backend"] != "tensorrt"):
            continue
        baseline = _artifact(report, baseline_name)
        faster, slower = (a, baseline) if speedup >= 1 else (baseline, a)
        findings.append(
            f"{RUNTIME_NAMES.get(a['backend'], a['backend'])}: {faster['precision'].upper()} ({faster['name']}) is "
            f"faster than {slower['precision'].upper()} ({slower['name']}) on this host, p50 "
            f"{faster['latency']['p50_ms']:.3f} ms against {slower['latency']['p50_ms']:.3f} ms"
        )
    return findings


def speed_baselines(report: dict[str, Any]) -> str:
    """One sentence naming what the speed-ups are measured against."""
    pairs = sorted(
        {
            (a["name"], a["speedup_baseline"])
            for a in _ok(report)
            if a.get("speedup_baseline") and a["speedup_baseline"] != a["name"]
        }
    )
    named = "; ".join(f"{name} against {baseline}" for name, baseline in pairs)
    return (
        "Speed-up: p50 of the same runtime's float build over the artifact's (PyTorch eager is the accuracy "
        f"reference, not the speed baseline){': ' + named if named else ''}."
    )


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    env, proto, data = report["environment"], report["protocol"], report["data"]
    status = "PASSED" if report["passed"] else "FAILED"
    lines = [
        f"# Validation report: {report['target']['name']} — {status}",
        "",
        *[f"> **{note}**\n" for note in report.get("notes", []) if note.startswith("WARNING")],
        f"Target `{report['target']['name']}` ({report['target']['backend']}, {report['target']['precision']}); "
        f"gates apply to **{report['primary']}**; reference **{report['reference']}**.",
        "",
        f"Data: {data['name']} ({data['count']} images, {data['num_classes']} classes, input "
        f"{'x'.join(map(str, data['input_shape']))}).",
        "",
        *(
            [
                f"Skipped {data['skipped_count']} unreadable image(s) (data.on_bad_image: skip); first: "
                f"{data['skipped'][0]['file']} ({data['skipped'][0]['reason']}).",
                "",
            ]
            if data.get("skipped_count")
            else []
        ),
        f"Latency: batch {proto['latency_batch']}, {proto['warmup']} warm-up + {proto['runs']} timed runs, "
        f"{proto['threads']} threads; throughput at batch {proto['throughput_batch']}. Timer: {proto['timer']}. "
        f"Host: {env['cpu_model']}, {env['cpu_cores']} cores ({env['cpu_cores_usable']} usable), load average "
        f"{', '.join(f'{x:.2f}' for x in env['load_average'] or [])} at the start.",
        "",
        "## Artifacts",
        "",
        _md_table(summary_rows(report)),
        "",
        speed_baselines(report),
        "",
        *[f"- {finding}" for finding in speed_findings(report)],
        *([""] if speed_findings(report) else []),
    ]
    uncertainty = uncertainty_rows(report)
    if uncertainty:
        lines += ["## How sure: drop and agreement against FP32 on the same images", "", UNCERTAINTY_TEXT, ""]
        lines += [_md_table(uncertainty), ""]
    if report["gates"]:
        lines += ["## Gates", "", _md_table(gate_rows(report)), ""]
    else:
        lines += ["## Gates", "", "No gates set in the target.", ""]
    classes = data["class_names"]
    ok = _ok(report)
    lines += [
        "## Per-class top-1",
        "",
        _md_table(
            [["class", *[a["name"] for a in ok]]]
            + [[name, *[_pct(a["per_class_accuracy"][i], 1) for a in ok]] for i, name in enumerate(classes)]
        ),
        "",
    ]
    if report.get("sensitivity"):
        lines += [
            "## Quantization sensitivity (most sensitive layers)",
            "",
            "| layer | metric | value |",
            "|---|---|---|",
        ]
        lines += [f"| {r['layer']} | {r['metric']} | {r['value']:.4g} |" for r in report["sensitivity"][:15]]
        lines.append("")
    lines += [
        "## Environment",
        "",
        f"- command: `{report['command']}`",
        f"- platform: {env['platform']}, Python {env['python']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()),
        f"- memory: {proto['memory']}",
        "",
    ]
    lines += [f"- note: {n}" for n in report.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


UNCERTAINTY_TEXT = (
    "Only the images one model gets right and the other wrong move the top-1 drop. The interval is where the true "
    "drop lies at this confidence (Newcombe's paired interval); the upper bound is what a `max_top1_drop` gate "
    "compares. McNemar p below 0.05 says the two models' errors differ by more than chance. Agreement: share of "
    "images with the same top-1 class as FP32 (Wilson interval); its lower bound is what `min_agreement` compares."
)


# --------------------------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    # Reports are written on headless build machines: never ask for a display.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, tight: bool = True) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI, bbox_inches="tight" if tight else None)
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


PLOT_DPI = 100
LABEL_GAP_PX = 8  # between a point and its label
LABEL_PAD_PX = 2  # between two stacked labels


def _stack_labels(desired: list[float], heights: list[float], low: float, high: float) -> list[float]:
    """Vertical centres for labels wanted at ``desired`` (display y, up is larger) so that no two overlap.

    Labels whose boxes would touch are stacked into one group, top to bottom in the order of their points, centred
    on the mean of what they wanted and kept inside ``[low, high]`` (the axes) where the group fits; groups that
    then touch merge, until none do. The labels are taken as one column: x is not looked at.
    """
    order = sorted(range(len(desired)), key=lambda i: -desired[i])
    groups = [[i] for i in order]

    def layout(group: list[int]) -> tuple[float, float, list[float]]:
        total = sum(heights[i] for i in group) + LABEL_PAD_PX * (len(group) - 1)
        centre = sum(desired[i] for i in group) / len(group)
        top = min(high, max(low + total, centre + total / 2))
        centres, cursor = [], top
        for i in group:
            centres.append(cursor - heights[i] / 2)
            cursor -= heights[i] + LABEL_PAD_PX
        return top, top - total, centres

    merged = True
    while merged:
        merged = False
        for k in range(len(groups) - 1):
            _, bottom, _ = layout(groups[k])
            top_next, _, _ = layout(groups[k + 1])
            if top_next + LABEL_PAD_PX > bottom:
                groups[k : k + 2] = [groups[k] + groups[k + 1]]
                merged = True
                break
    centres = [0.0] * len(desired)
    for group in groups:
        for i, centre in zip(group, layout(group)[2], strict=True):
            centres[i] = centre
    return centres


MARKER_RADIUS_PX = 6  # a label must not cover another artifact's point


def place_labels(
    points: list[tuple[float, float]], sizes: list[tuple[float, float]], area: tuple[float, float, float, float]
) -> list[tuple[float, float, bool]]:
    """Where each point's label goes, in display pixels: ``(x of the edge next to the point, vertical centre,
    right of the point?)``. ``sizes`` are the labels' (width, height), ``area`` is (left, bottom, right, top).

    Each label starts just right of its point (left when it would leave ``area``). Labels that would touch each
    other or cover another point form a group: a group's labels are aligned past its outermost point, so none
    covers a point of the group, and stacked in the order of their points (:func:`_stack_labels`). Groups whose
    boxes then touch merge, until none do: labels of one group share no y, groups share no box, so no two labels
    overlap.
    """
    _left, bottom, right_edge, top = area
    groups = [[i] for i in range(len(points))]

    def layout(group: list[int]) -> list[tuple[float, float, bool]]:
        widest = max(sizes[i][0] for i in group)
        past_right = max(points[i][0] for i in group) + LABEL_GAP_PX
        on_right = past_right + widest <= right_edge
        text_x = past_right if on_right else min(points[i][0] for i in group) - LABEL_GAP_PX
        if len(group) == 1:
            return [(text_x, points[group[0]][1], on_right)]
        centres = _stack_labels([points[i][1] for i in group], [sizes[i][1] for i in group], bottom, top)
        return [(text_x, centre, on_right) for centre in centres]

    def label_box(i: int, place: tuple[float, float, bool]) -> tuple[float, float, float, float]:
        text_x, centre, on_right = place
        width, height = sizes[i]
        x0 = text_x if on_right else text_x - width
        return (x0, centre - height / 2, x0 + width, centre + height / 2)

    def touches(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
        pad = LABEL_PAD_PX
        return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad

    r = MARKER_RADIUS_PX
    marks = [(x - r, y - r, x + r, y + r) for x, y in points]
    while True:
        places = {i: place for group in groups for i, place in zip(group, layout(group), strict=True)}
        boxes = {i: label_box(i, places[i]) for i in places}
        clash = None
        for g, h in itertools.combinations(range(len(groups)), 2):
            pairs = [(i, j) for i in groups[g] for j in groups[h]] + [(j, i) for i in groups[g] for j in groups[h]]
            if any(touches(boxes[i], boxes[j]) or touches(boxes[i], marks[j]) for i, j in pairs):
                clash = (g, h)
                break
        if clash is None:
            return [places[i] for i in range(len(points))]
        g, h = clash
        groups[g] = sorted(groups[g] + groups[h], key=lambda i: -points[i][1])
        del groups[h]


def accuracy_vs_latency(report: dict[str, Any]) -> tuple[str, list[tuple[str, tuple[int, int, int, int]]]]:
    """The accuracy-vs-latency plot as base64 PNG, and each label's box in the PNG's pixels
    (``name, (left, top, right, bottom)``, top-left origin): labels sit beside their points, stacked where points
    are close (several artifacts often share a top-1 to 0.01 %), with a thin line back to the point when moved."""
    plt = _pyplot()
    from matplotlib.text import Text

    ok = _ok(report)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=PLOT_DPI)
    markers = "osD^vP*X"
    for index, a in enumerate(ok):
        ax.scatter(
            a["latency"]["p50_ms"], a["top1"] * 100, s=90, alpha=0.8, marker=markers[index % len(markers)], zorder=3
        )
    p50s = [a["latency"]["p50_ms"] for a in ok]
    log = min(p50s) > 0 and max(p50s) / min(p50s) > 20
    if log:
        ax.set_xscale("log")  # PyTorch eager can be 50x slower than a compiled runtime: keep the rest apart
    ax.margins(x=0.25, y=0.25)
    if not log:
        ax.set_xlim(left=0)
    ax.set_xlabel("p50 latency, batch 1 (ms)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    points = [ax.transData.transform((a["latency"]["p50_ms"], a["top1"] * 100)) for a in ok]
    texts = [ax.text(0, 0, a["name"], fontsize=8, transform=None) for a in ok]
    sizes = [t.get_window_extent(renderer) for t in texts]
    for text in texts:
        text.remove()
    placed = place_labels(
        [(float(x), float(y)) for x, y in points],
        [(float(s.width), float(s.height)) for s in sizes],
        (float(box.x0) + 2, float(box.y0) + 2, float(box.x1) - 2, float(box.y1) - 2),
    )
    for a, (x, y), (text_x, centre, right) in zip(ok, points, placed, strict=True):
        moved = abs(centre - y) > 2 or abs(abs(text_x - x) - LABEL_GAP_PX) > 1
        ax.annotate(
            a["name"],
            xy=(x, y),
            xycoords="figure pixels",
            xytext=(text_x, centre),
            textcoords="figure pixels",
            fontsize=8,
            ha="left" if right else "right",
            va="center",
            arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.6, "shrinkA": 1, "shrinkB": 5} if moved else None,
            zorder=4,
        )
    fig.canvas.draw()
    height = fig.bbox.height
    labels = []
    for annotation in [c for c in ax.texts if hasattr(c, "xyann")]:
        # The text's own box: an Annotation's extent also covers its leader line.
        extent = Text.get_window_extent(annotation, renderer)
        labels.append(
            (
                annotation.get_text(),
                (
                    math.floor(extent.x0),
                    math.floor(height - extent.y1),
                    math.ceil(extent.x1),
                    math.ceil(height - extent.y0),
                ),
            )
        )
    return _png(fig, tight=False), labels


def plot_accuracy_vs_latency(report: dict[str, Any]) -> str:
    return accuracy_vs_latency(report)[0]


def plot_latency_distribution(report: dict[str, Any]) -> str:
    plt = _pyplot()
    ok = _ok(report)
    fig, ax = plt.subplots(figsize=(6.4, 0.6 * len(ok) + 1.8))
    boxes = ax.boxplot(
        [a["latency"]["samples_ms"] for a in ok], orientation="horizontal", whis=(1, 99), patch_artist=True
    )
    for box in boxes["boxes"]:
        box.set_facecolor("#9ecae1")
    ax.set_yticks(range(1, len(ok) + 1), [a["name"] for a in ok])
    ax.set_xlabel(f"latency per call, batch 1 (ms); whiskers p1–p99, {report['protocol']['runs']} runs")
    low = min(min(a["latency"]["samples_ms"]) for a in ok)
    high = max(max(a["latency"]["samples_ms"]) for a in ok)
    if low > 0 and high / low > 20:
        # Artifacts an order of magnitude apart would squash the fast ones into a line.
        ax.set_xscale("log")
    ax.set_title("Latency distribution")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def plot_sensitivity(report: dict[str, Any], top: int = 20) -> str | None:
    rows = (report.get("sensitivity") or [])[:top]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.28 * len(rows) + 1.2))
    ax.barh([r["layer"] for r in rows][::-1], [r["value"] for r in rows][::-1], color="tab:orange")
    ax.set_xlabel(rows[0]["metric"])
    ax.set_title("Per-layer quantization sensitivity")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def plot_confusion(report: dict[str, Any], artifact: dict[str, Any]) -> str | None:
    if not artifact.get("confusion"):
        return None
    import numpy as np

    plt = _pyplot()

    matrix = np.asarray(artifact["confusion"], dtype=float)
    names = report["data"]["class_names"]
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix: {artifact['name']}")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(
                col,
                row,
                int(count),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if count > matrix.max() / 2 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _png(fig)


# --------------------------------------------------------------------------------------------- html
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 20px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.pass{color:#176d2c;font-weight:600}.fail{color:#b00020;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plot{border:1px solid #ddd;padding:6px}
code{background:#f6f6f6;padding:1px 4px}
"""

# Marks on <body> how many plots the browser decoded (tests read it; a person never sees it).
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('img.plot-img'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-plots', String(imgs.length));
  document.body.setAttribute('data-plots-decoded', String(ok.length));
  document.body.setAttribute('data-plot-rects', JSON.stringify(ok.map(function (i) {
    var r = i.getBoundingClientRect();
    return [Math.round(r.left + window.scrollX), Math.round(r.top + window.scrollY), Math.round(r.width),
            Math.round(r.height)];
  })));
});
"""


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any]) -> str:
    """One self-contained page: tables plus plots as base64 PNG (no external files, scripts or fonts)."""
    ok = _ok(report)
    primary = next((a for a in ok if a["name"] == report["primary"]), ok[-1])
    plots = [
        ("accuracy-vs-latency", plot_accuracy_vs_latency(report)),
        ("latency-distribution", plot_latency_distribution(report)),
        ("sensitivity", plot_sensitivity(report)),
        ("confusion", plot_confusion(report, primary)),
    ]
    status = "PASSED" if report["passed"] else "FAILED"
    title = f"Validation report: {report['target']['name']} — {status}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>{html.escape(report['target']['name'])}: "
        f"<span class='{'pass' if report['passed'] else 'fail'}'>{status}</span></h1>",
        *[f"<p class='fail'>{html.escape(n)}</p>" for n in report.get("notes", []) if n.startswith("WARNING")],
        f"<p>Gates apply to <b>{html.escape(report['primary'])}</b>; reference "
        f"<b>{html.escape(report['reference'])}</b>. Data: {html.escape(report['data']['name'])} "
        f"({report['data']['count']} images).</p>",
        "<div class='plots'>",
    ]
    for plot_id, png in plots:
        if png:
            parts.append(
                f"<div class='plot' id='plot-{plot_id}'><img class='plot-img' alt='{plot_id}' "
                f"src='data:image/png;base64,{png}'></div>"
            )
    parts.append("</div><h2>Artifacts</h2>" + _html_table(summary_rows(report)))
    parts.append(f"<p>{html.escape(speed_baselines(report))}</p>")
    findings = speed_findings(report)
    if findings:
        parts.append("<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in findings) + "</ul>")
    uncertainty = uncertainty_rows(report)
    if uncertainty:
        parts.append(
            "<h2>How sure: drop and agreement against FP32 on the same images</h2>"
            f"<p>{html.escape(UNCERTAINTY_TEXT).replace('`', '')}</p>" + _html_table(uncertainty)
        )
    if report["gates"]:
        header, *rows = gate_rows(report)
        body = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(cell)}</td>" for cell in row[:-1])
            + f"<td class='{'pass' if _gate_verdict(g) == 'pass' else 'fail'}'>{html.escape(g['message'])}</td></tr>"
            for row, g in zip(rows, report["gates"], strict=True)
        )
        parts.append(
            "<h2>Gates</h2><table><thead><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in header)
            + f"</tr></thead><tbody>{body}</tbody></table>"
        )
    else:
        parts.append("<h2>Gates</h2><p>No gates set in the target.</p>")
    classes = report["data"]["class_names"]
    parts.append(
        "<h2>Per-class top-1</h2>"
        + _html_table(
            [["class", *[a["name"] for a in ok]]]
            + [[name, *[_pct(a["per_class_accuracy"][i], 1) for a in ok]] for i, name in enumerate(classes)]
        )
    )
    env, proto = report["environment"], report["protocol"]
    parts.append(
        "<h2>Environment and protocol</h2><ul>"
        f"<li>command: <code>{html.escape(report['command'])}</code></li>"
        f"<li>host: {html.escape(env['cpu_model'])}, {env['cpu_cores']} cores ({env['cpu_cores_usable']} usable), "
        f"{html.escape(env['platform'])}, Python {env['python']}</li>"
        f"<li>latency: batch {proto['latency_batch']}, {proto['warmup']} warm-up + {proto['runs']} timed runs, "
        f"{proto['threads']} threads; {html.escape(proto['timer'])}</li>"
        f"<li>memory: {html.escape(proto['memory'])}</li>"
        "<li>packages: "
        + html.escape(", ".join(f"{k} {v}" for k, v in env["packages"].items()))
        + "</li>"
        + "".join(f"<li>note: {html.escape(n)}</li>" for n in report.get("notes", []))
        + "</ul></body></html>"
    )
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------- writing
def write_report(result: ValidationReport, out_dir: str | Path, html_report: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and (unless disabled) report.html into ``out_dir``, each atomically.

    The typed report becomes JSON here, once; the Markdown and HTML are rendered from that JSON record.
    """
    out_dir = Path(out_dir)
    report = result.to_dict()
    try:
        check_report(report)
    except ModuleNotFoundError:
        logger.debug("jsonschema not installed; report.json written without a schema check")
    paths = {
        "json": write_json_atomic(out_dir / "report.json", report),
        "md": write_text_atomic(out_dir / "report.md", render_markdown(report)),
    }
    if html_report:
        paths["html"] = write_text_atomic(out_dir / "report.html", render_html(report))
    logger.info("report written to %s", out_dir)
    return paths
