"""report.html: one self-contained page (tables and plots embedded), a view of the typed report."""

from __future__ import annotations

import html
import logging

from edgeresnext.report.plots import (
    plot_accuracy_vs_latency,
    plot_confusion,
    plot_latency_distribution,
    plot_sensitivity,
)
from edgeresnext.report.tables import (
    DEVICE_TEXT,
    UNCERTAINTY_TEXT,
    _gate_verdict,
    _pct,
    deepstream_section,
    device_section,
    gate_rows,
    speed_baselines,
    speed_findings,
    summary_rows,
    uncertainty_rows,
)
from edgeresnext.validate.results import ValidationReport

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

logger = logging.getLogger(__name__)


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: ValidationReport) -> str:
    """One self-contained page: tables plus plots as base64 PNG (no external files, scripts or fonts)."""
    return "\n".join(part for section in _SECTIONS for part in section(report))


def _html_heading(report: ValidationReport) -> list[str]:
    """The document head (title, style, the plot-counting script), the verdict, warnings, what was judged."""
    status = "PASSED" if report.passed else "FAILED"
    title = f"Validation report: {report.target['name']} — {status}"
    return [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>{html.escape(report.target['name'])}: "
        f"<span class='{'pass' if report.passed else 'fail'}'>{status}</span></h1>",
        *[f"<p class='fail'>{html.escape(n)}</p>" for n in report.notes if n.startswith("WARNING")],
        f"<p>Gates apply to <b>{html.escape(report.primary)}</b>; reference "
        f"<b>{html.escape(report.reference)}</b>. Data: {html.escape(report.data.name)} "
        f"({report.data.count} images).</p>",
    ]


def _html_plots(report: ValidationReport) -> list[str]:
    """The plots as embedded PNG (the confusion matrix of the primary artifact, else of the last one run)."""
    ok = report.measured
    primary = next((a for a in ok if a.name == report.primary), ok[-1])
    plots = [
        ("accuracy-vs-latency", plot_accuracy_vs_latency(report)),
        ("latency-distribution", plot_latency_distribution(report)),
        ("sensitivity", plot_sensitivity(report)),
        ("confusion", plot_confusion(report, primary)),
    ]
    parts = ["<div class='plots'>"]
    for plot_id, png in plots:
        if png:
            parts.append(
                f"<div class='plot' id='plot-{plot_id}'><img class='plot-img' alt='{plot_id}' "
                f"src='data:image/png;base64,{png}'></div>"
            )
    return [*parts, "</div>"]


def _html_artifacts(report: ValidationReport) -> list[str]:
    """The artifacts table, what the speed-ups are against, and the speed findings."""
    parts = ["<h2>Artifacts</h2>" + _html_table(summary_rows(report))]
    parts.append(f"<p>{html.escape(speed_baselines(report))}</p>")
    findings = speed_findings(report)
    if findings:
        parts.append("<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in findings) + "</ul>")
    return parts


def _html_device(report: ValidationReport) -> list[str]:
    """The device check beside the host rows (only in a report with a device check)."""
    section = device_section(report)
    if section is None:
        return []
    rows, said = section
    return [
        f"<h2>On the device</h2><p>{html.escape(DEVICE_TEXT).replace('`', '')}</p>"
        + _html_table(rows)
        + f"<p>{html.escape(said)}</p>"
    ]


def _html_uncertainty(report: ValidationReport) -> list[str]:
    uncertainty = uncertainty_rows(report)
    if not uncertainty:
        return []
    return [
        "<h2>How sure: drop and agreement against FP32 on the same images</h2>"
        f"<p>{html.escape(UNCERTAINTY_TEXT).replace('`', '')}</p>" + _html_table(uncertainty)
    ]


def _html_gates(report: ValidationReport) -> list[str]:
    """The gates table, each verdict cell coloured pass or fail and holding the gate's message."""
    if not report.gates:
        return ["<h2>Gates</h2><p>No gates set in the target.</p>"]
    header, *rows = gate_rows(report)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(cell)}</td>" for cell in row[:-1])
        + f"<td class='{'pass' if _gate_verdict(g) == 'pass' else 'fail'}'>{html.escape(g.message)}</td></tr>"
        for row, g in zip(rows, report.gates, strict=True)
    )
    return [
        "<h2>Gates</h2><table><thead><tr>"
        + "".join(f"<th>{html.escape(c)}</th>" for c in header)
        + f"</tr></thead><tbody>{body}</tbody></table>"
    ]


def _html_deepstream(report: ValidationReport) -> list[str]:
    """nvinfer's preprocessing measured, and what the DeepStream configs chose with it (a Jetson bundle's)."""
    section = deepstream_section(report)
    if section is None:
        return []
    text, rows, choices = section
    return [
        "<h2>DeepStream preprocessing (nvinfer): top-1 and agreement with the bundle's preprocessing</h2>"
        + f"<p>{html.escape(text)}</p>"
        + _html_table(rows)
        + _html_table(choices)
    ]


def _html_per_class(report: ValidationReport) -> list[str]:
    ok = report.measured
    classes = report.data.class_names
    return [
        "<h2>Per-class top-1</h2>"
        + _html_table(
            [["class", *[a.name for a in ok]]]
            + [[name, *[_pct(a.per_class_accuracy[i], 1) for a in ok]] for i, name in enumerate(classes)]
        )
    ]


def _html_environment(report: ValidationReport) -> list[str]:
    """Command, host, timing protocol, memory method, packages and notes; closes the page."""
    env, proto = report.environment, report.protocol
    return [
        "<h2>Environment and protocol</h2><ul>"
        f"<li>command: <code>{html.escape(report.command)}</code></li>"
        f"<li>host: {html.escape(env['cpu_model'])}, {env['cpu_cores']} cores ({env['cpu_cores_usable']} usable), "
        f"{html.escape(env['platform'])}, Python {env['python']}</li>"
        f"<li>latency: batch {proto['latency_batch']}, {proto['warmup']} warm-up + {proto['runs']} timed runs, "
        f"{proto['threads']} threads; {html.escape(proto['timer'])}</li>"
        f"<li>memory: {html.escape(proto['memory'])}</li>"
        "<li>packages: "
        + html.escape(", ".join(f"{k} {v}" for k, v in env["packages"].items()))
        + "</li>"
        + "".join(f"<li>note: {html.escape(n)}</li>" for n in report.notes)
        + "</ul></body></html>"
    ]


# The page from top to bottom: each section's HTML parts (none when the report has nothing for it).
_SECTIONS = (
    _html_heading,
    _html_plots,
    _html_artifacts,
    _html_device,
    _html_uncertainty,
    _html_gates,
    _html_deepstream,
    _html_per_class,
    _html_environment,
)
