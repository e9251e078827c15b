"""The report's plots (matplotlib, headless) as base64 PNG, with labels placed so they never overlap."""

from __future__ import annotations

import base64
import io
import itertools
import logging
import math
from typing import Any

from edgeresnext.validate.results import ArtifactResult, ValidationReport

logger = logging.getLogger(__name__)


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


def log_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Round values for a log axis from ``low`` to ``high``: 1-2-5 steps (0.2, 0.5, 1, 2, 5 ...), or 1-3 or decades
    alone where 1-2-5 would give more than ``most`` ticks."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks: list[float] = []
    for steps in ((1, 2, 5), (1, 3), (1,)):
        ticks = [float(f"{step}e{exponent}") for exponent in decades for step in steps]
        ticks = [tick for tick in ticks if low <= tick <= high]
        if len(ticks) <= most:
            break
    return ticks


def tick_text(value: float) -> str:
    """A tick value as a plain decimal: ``0.2``, ``1``, ``50``, ``1000``."""
    return f"{value:.{max(0, -math.floor(math.log10(value)))}f}"


def _plain_log_axis(ax: Any) -> None:
    """Label a log x axis at a few round values, in plain decimals, and leave its minor ticks unlabelled.

    On an axis spanning under about two decades matplotlib labels the minor ticks as well, in scientific notation
    (``2×10⁻¹ 3×10⁻¹ 4×10⁻¹ …``), and the labels run into each other."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter

    low, high = ax.get_xlim()
    ticks = log_ticks(low, high)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([tick_text(t) for t in ticks]))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _text_boxes(fig: Any, texts: list[Any]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Each drawn text's box in the PNG's pixels (``text, (left, top, right, bottom)``, top-left origin) for a
    figure saved without cropping. An Annotation's own text box is taken, not the extent of its leader line."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    height = fig.bbox.height
    boxes = []
    for text in texts:
        extent = Text.get_window_extent(text, renderer)
        box = (
            math.floor(extent.x0),
            math.floor(height - extent.y1),
            math.ceil(extent.x1),
            math.ceil(height - extent.y0),
        )
        boxes.append((text.get_text(), box))
    return boxes


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


def accuracy_vs_latency(report: ValidationReport) -> tuple[str, list[tuple[str, tuple[int, int, int, int]]]]:
    """The accuracy-vs-latency plot as base64 PNG, and each label's box in the PNG's pixels
    (``name, (left, top, right, bottom)``, top-left origin): labels sit beside their points, stacked where points
    are close (several artifacts often share a top-1 to 0.01 %), with a thin line back to the point when moved."""
    plt = _pyplot()
    ok = report.measured
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=PLOT_DPI)
    markers = "osD^vP*X"
    for index, a in enumerate(ok):
        ax.scatter(a.latency.p50_ms, a.top1 * 100, s=90, alpha=0.8, marker=markers[index % len(markers)], zorder=3)
    p50s = [a.latency.p50_ms for a in ok]
    log = min(p50s) > 0 and max(p50s) / min(p50s) > 20
    if log:
        ax.set_xscale("log")  # PyTorch eager can be 50x slower than a compiled runtime: keep the rest apart
    ax.margins(x=0.25, y=0.25)
    if log:
        _plain_log_axis(ax)
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel("p50 latency, batch 1 (ms)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    points = [ax.transData.transform((a.latency.p50_ms, a.top1 * 100)) for a in ok]
    texts = [ax.text(0, 0, a.name, fontsize=8, transform=None) for a in ok]
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
            a.name,
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
    labels = _text_boxes(fig, [c for c in ax.texts if hasattr(c, "xyann")])
    return _png(fig, tight=False), labels


def plot_accuracy_vs_latency(report: ValidationReport) -> str:
    return accuracy_vs_latency(report)[0]


def plot_latency_distribution(report: ValidationReport) -> str:
    return latency_distribution(report)[0]


def latency_distribution(report: ValidationReport) -> tuple[str, list[tuple[str, tuple[int, int, int, int]]]]:
    """The latency box plot as base64 PNG, and its x tick labels' boxes in the PNG's pixels (as
    :func:`accuracy_vs_latency` gives its labels). Artifacts an order of magnitude apart get a log axis, labelled
    at a few round values (:func:`_plain_log_axis`)."""
    plt = _pyplot()
    ok = report.measured
    fig, ax = plt.subplots(figsize=(6.4, 0.6 * len(ok) + 1.8), dpi=PLOT_DPI)
    boxes = ax.boxplot([a.latency.samples_ms for a in ok], orientation="horizontal", whis=(1, 99), patch_artist=True)
    for box in boxes["boxes"]:
        box.set_facecolor("#9ecae1")
    ax.set_yticks(range(1, len(ok) + 1), [a.name for a in ok])
    ax.set_xlabel(f"latency per call, batch 1 (ms); whiskers p1–p99, {report.protocol['runs']} runs")
    low = min(min(a.latency.samples_ms) for a in ok)
    high = max(max(a.latency.samples_ms) for a in ok)
    if low > 0 and high / low > 20:
        # Artifacts an order of magnitude apart would squash the fast ones into a line.
        ax.set_xscale("log")
        _plain_log_axis(ax)
    ax.set_title("Latency distribution")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.canvas.draw()
    left, right = ax.get_xlim()
    ticks = [t for loc, t in zip(ax.get_xticks(), ax.get_xticklabels(), strict=True) if left <= loc <= right]
    boxes = _text_boxes(fig, ticks)
    return _png(fig, tight=False), boxes


def plot_sensitivity(report: ValidationReport, top: int = 20) -> str | None:
    rows = (report.sensitivity or [])[:top]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.28 * len(rows) + 1.2))
    ax.barh([r["layer"] for r in rows][::-1], [r["value"] for r in rows][::-1], color="tab:orange")
    ax.set_xlabel(rows[0]["metric"])
    ax.set_title("Per-layer quantization sensitivity")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def plot_confusion(report: ValidationReport, artifact: ArtifactResult) -> str | None:
    if not artifact.confusion:
        return None
    import numpy as np

    plt = _pyplot()

    matrix = np.asarray(artifact.confusion, dtype=float)
    names = report.data.class_names
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix: {artifact.name}")
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
