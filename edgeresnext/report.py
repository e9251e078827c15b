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
import json
import logging
from pathlib import Path
from typing import Any

from edgeresnext.atomic import write_json_atomic, write_text_atomic
from edgeresnext.errors import ConfigError
from edgeresnext.validate.results import SCHEMA_ID, SCHEMA_VERSION, ValidationReport

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
            "speed-up",
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
                f"{a['top1_drop'] * 100:+.2f} pp",
                _pct(a["agreement"]),
                f"{a['cosine_mean']:.5f} / {a['cosine_min']:.5f}",
                f"{a['max_abs_error']:.4g}",
                _ms(lat["p50_ms"]),
                _ms(lat["p90_ms"]),
                _ms(lat["p99_ms"]),
                f"{a['speedup_vs_fp32']:.2f}x",
                f"{a['throughput']['images_per_s']:.0f}",
                _size(a["size_bytes"]),
                f"{a['peak_rss_delta_mb']:.1f} MB",
            ]
        )
    return rows


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
    ]
    if report["gates"]:
        lines += ["## Gates", "", "| gate | artifact | limit | value | result |", "|---|---|---|---|---|"]
        for g in report["gates"]:
            value = "–" if g["value"] is None else f"{g['value']:.4g}"
            lines.append(
                f"| {g['gate']} | {g['artifact']} | {g['limit']:.4g} | {value} | "
                f"{'pass' if g['passed'] else 'FAIL: ' + g['message']} |"
            )
        lines.append("")
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


# --------------------------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    # Reports are written on headless build machines: never ask for a display.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_accuracy_vs_latency(report: dict[str, Any]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for a in _ok(report):
        ax.scatter(a["latency"]["p50_ms"], a["top1"] * 100, s=120)
        ax.annotate(
            a["name"], (a["latency"]["p50_ms"], a["top1"] * 100), textcoords="offset points", xytext=(6, 4), fontsize=8
        )
    p50s = [a["latency"]["p50_ms"] for a in _ok(report)]
    if min(p50s) > 0 and max(p50s) / min(p50s) > 20:
        ax.set_xscale("log")  # PyTorch eager can be 50x slower than a compiled runtime: keep the rest apart
    ax.set_xlabel("p50 latency, batch 1 (ms)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy vs latency")
    ax.grid(alpha=0.3)
    return _png(fig)


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
    if report["gates"]:
        rows = "".join(
            f"<tr><td>{html.escape(g['gate'])}</td><td>{html.escape(g['artifact'])}</td><td>{g['limit']:.4g}</td>"
            f"<td>{'–' if g['value'] is None else format(g['value'], '.4g')}</td>"
            f"<td class='{'pass' if g['passed'] else 'fail'}'>{html.escape(g['message'])}</td></tr>"
            for g in report["gates"]
        )
        parts.append(
            "<h2>Gates</h2><table><thead><tr><th>gate</th><th>artifact</th><th>limit</th><th>value</th>"
            f"<th>result</th></tr></thead><tbody>{rows}</tbody></table>"
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
