"""The report: report.json follows the committed schema, report.md reads as tables, report.html is one
self-contained file whose plots a real browser (headless Chromium) decodes and draws."""

from __future__ import annotations

import base64
import copy
import io
import itertools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from chromium_helpers import CHROMIUM, run_chromium

from edgeresnext.config import target_from_dict
from edgeresnext.data.validation import ValidationData
from edgeresnext.errors import ConfigError
from edgeresnext.report import check_report, load_schema, render_html, render_markdown, write_report
from edgeresnext.validate import ArtifactUnderTest, ValidationReport, validate


@pytest.fixture(scope="module")
def validated(shipped_model, fmnist_test, tmp_path_factory) -> ValidationReport:
    """A real report: the shipped model in PyTorch and as ONNX Runtime FP32, on 64 test images."""
    from edgeresnext.data.loaders import normalize_array
    from edgeresnext.export import onnx_from_torch
    from edgeresnext.validate import runner_from_file

    onnx_path = onnx_from_torch(shipped_model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    target = target_from_dict(
        {
            "name": "report-test",
            "backend": "onnxruntime",
            "precision": "fp32",
            "quant": {"method": "none"},
            # 0.06: what 64 images can prove for an identical export (one-sided 95 % bound 5.45 pt); the latency
            # gate cannot pass.
            "gates": {"max_top1_drop": 0.06, "max_latency_ms": 1e-6},
            "validate": {"latency_runs": 8, "warmup_runs": 2},
        }
    )
    data = ValidationData(
        inputs=normalize_array(fmnist_test.images[:64], fmnist_test.preprocess).numpy(),
        labels=fmnist_test.labels[:64],
        class_names=fmnist_test.class_names,
        name="fashion-mnist/test[:64]",
    )
    artifacts = [
        ArtifactUnderTest("onnx-fp32", runner_from_file(onnx_path, target), [onnx_path], "onnxruntime", "fp32"),
        ArtifactUnderTest.skipped("tensorrt-fp16", "tensorrt is not installed", backend="tensorrt", precision="fp16"),
    ]
    # Per-layer sensitivity as the quantization stage reports it: the real conv layers of the model.
    convs = [name for name, module in shipped_model.named_modules() if type(module).__name__ == "Conv2d"]
    sensitivity = [{"layer": name, "top1_drop": 0.001 * (i + 1)} for i, name in enumerate(convs)]
    return validate(
        target,
        artifacts,
        shipped_model,
        data,
        primary="onnx-fp32",
        threads=1,
        sensitivity=sensitivity,
        command="pytest report fixture",
        progress=False,
    )


@pytest.fixture(scope="module")
def report(validated: ValidationReport) -> dict:
    """The same report as its JSON record (what report.json holds and the Markdown/HTML render)."""
    return validated.to_dict()


def test_report_follows_the_schema(report):
    assert report["schema_version"] == load_schema()["properties"]["schema_version"]["const"]
    check_report(report)
    assert [a["status"] for a in report["artifacts"]] == ["ok", "ok", "skipped"]
    assert report["sensitivity"][0]["metric"] == "top1_drop"  # largest first
    assert report["sensitivity"][0]["value"] >= report["sensitivity"][-1]["value"]


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("artifacts", 1, "top1"), 1.5, "artifacts/1"),
        (("schema_version",), 1, "schema_version"),  # v1: speed-up against PyTorch, gates on the point
        (("artifacts", 1, "uncertainty", "drop", "interval"), [0.1], "artifacts/1"),
        (("gates", 0, "gate"), "max_speed", "gates/0/gate"),
    ],
)
def test_schema_rejects_broken_reports(report, path, value, where):
    broken = copy.deepcopy(report)
    cursor = broken
    for key in path[:-1]:
        cursor = cursor[key]
    cursor[path[-1]] = value
    with pytest.raises(ConfigError, match=where):
        check_report(broken)


def test_markdown_has_the_tables(validated, report):
    text = render_markdown(validated)
    assert text.startswith("# Validation report: report-test — FAILED")
    assert "| pytorch-fp32 | pytorch | fp32 |" in text and "| onnx-fp32 | onnxruntime | fp32 |" in text
    assert "skipped: tensorrt is not installed" in text
    # A drop of exactly 0: FP32 ONNX vs PyTorch differ by ~1e-5 and none of the 64 images is within 0.23 of a tie.
    bound = report["gates"][0]["value"]
    assert f"| max_top1_drop | onnx-fp32 | 6.00 pt | +0.00 pt | 95 % upper bound {bound * 100:.2f} pt | pass |" in text
    assert "FAIL: max_latency_ms: onnx-fp32 p50 latency (batch 1)" in text
    assert "## How sure: drop and agreement" in text and "| onnx-fp32 | 64 | 0 | 0 | +0.00 pt |" in text
    assert "| float baseline |" in text  # onnx-fp32 is ONNX Runtime's own float build
    assert "| Ankle boot |" in text and "## Quantization sensitivity" in text


def test_write_report_writes_three_files_and_html_is_self_contained(validated, tmp_path):
    paths = write_report(validated, tmp_path / "report")
    assert sorted(p.name for p in paths.values()) == ["report.html", "report.json", "report.md"]
    assert json.loads(paths["json"].read_text())["artifacts"][1]["name"] == "onnx-fp32"
    page = paths["html"].read_text()
    assert page.count("<img class='plot-img'") == 4
    # Nothing to fetch: the file opens the same offline, in a CI artifact or an e-mail.
    for remote in ("src='http", 'src="http', "href=", "<link", "@import", "<script src"):
        assert remote not in page
    assert not list((tmp_path / "report").glob(".*tmp*"))  # no half-written leftovers


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return run_chromium(
        "--force-device-scale-factor=1", "--window-size=1400,2600", "--hide-scrollbars", *args, profile=profile
    )


def _render_in_chromium(page: Path, tmp_path: Path) -> tuple[str, list[list[int]], Path]:
    """``(<body> tag, plot rectangles the page's script recorded, screenshot)`` of ``page`` in headless Chromium."""
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = dom.stdout[dom.stdout.index("<body") :]
    body = body[: body.index(">")]
    rects = json.loads(body.split('data-plot-rects="', 1)[1].split('"', 1)[0].replace("&quot;", '"'))
    shot = tmp_path / "shot.png"
    result = _chromium(
        "--virtual-time-budget=5000", f"--screenshot={shot}", page.as_uri(), profile=tmp_path / "profile"
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    return body, rects, shot


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_html_plots_render_in_headless_chromium(validated, tmp_path):
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(render_html(validated))
    # 1. The page's own script counts the plots the browser decoded and records where they are drawn;
    # 2. a screenshot: where each plot is, there must be a drawing, not blank page.
    body, rects, shot = _render_in_chromium(page, tmp_path)
    attrs = dict(part.split("=", 1) for part in body.replace('"', "").split()[1:] if "=" in part)
    assert attrs["data-plots"] == "4" and attrs["data-plots-decoded"] == "4", body
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert len(rects) == 4
    for left, top, width, height in rects:
        assert width > 200 and height > 200 and top + height <= pixels.shape[0], (left, top, width, height)
        region = pixels[top : top + height, left : left + width]
        inked = np.mean(region.min(axis=2) < 200)  # share of pixels darker than near-white
        colored = int(np.sum(region.max(axis=2) - region.min(axis=2) > 60))  # plot colours, never in plain text
        # A blank region has neither. Measured here: inked 0.021 (the sparse accuracy-vs-latency scatter; fonts and
        # browser scaling move it) to 0.29; colored >= 446 pixels, but only 56 once a load spike widened the latency
        # axis and squeezed the box plot's boxes to slivers (its orange median lines stay).
        assert inked > 0.01 and colored >= 20, (left, top, inked, colored)
    # The page background far right of the plots stays blank: the check above can tell ink from no ink.
    margin = pixels[: rects[0][1], -20:]
    assert np.mean(margin.min(axis=2) < 200) < 0.01


def _crowded(report: dict) -> ValidationReport:
    """The report with four more artifacts at the same top-1 and nearly the same latency as onnx-fp32: the case
    where labels placed at a fixed offset from their points ran over each other."""
    crowded = copy.deepcopy(report)
    model = next(a for a in crowded["artifacts"] if a["name"] == "onnx-fp32")
    p50 = model["latency"]["p50_ms"]
    for name, factor, drop in (
        ("openvino-fp32", 0.97, 0.0),
        ("openvino-int8", 0.95, 0.0001),
        ("qdq-int8 (onnxruntime)", 1.04, 0.0001),
        ("onnx-fp32 (onnxruntime)", 1.01, 0.0),
    ):
        twin = copy.deepcopy(model)
        twin["name"], twin["top1"] = name, model["top1"] - drop
        twin["latency"]["p50_ms"] = p50 * factor
        crowded["artifacts"].insert(2, twin)
    return ValidationReport.from_dict(crowded)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_accuracy_vs_latency_labels_never_overlap(report):
    """Five artifacts within 0.01 % top-1 and 10 % latency: every label has its own box, drawn where it says."""
    from PIL import Image

    from edgeresnext.report import accuracy_vs_latency

    crowded = _crowded(report)
    png, labels = accuracy_vs_latency(crowded)
    assert sorted(name for name, _ in labels) == sorted(a.name for a in crowded.artifacts[:-1])
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("L"), dtype=np.int16)
    for i, (name, box) in enumerate(labels):
        left, top, right, bottom = box
        assert 0 <= left < right <= pixels.shape[1] and 0 <= top < bottom <= pixels.shape[0], (name, box)
        assert np.mean(pixels[top:bottom, left:right] < 128) > 0.03, (name, box)  # text is drawn in the box
        for other, other_box in labels[i + 1 :]:
            assert not _overlap(box, other_box), (name, box, other, other_box)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_accuracy_vs_latency_labels_stay_apart_in_headless_chromium(report, tmp_path):
    """The page as a browser draws it: each label's box, scaled onto the screenshot, holds text and no other box."""
    from PIL import Image

    from edgeresnext.report import accuracy_vs_latency

    crowded = _crowded(report)
    page = tmp_path / "report.html"
    page.write_text(render_html(crowded))
    _body, rects, shot = _render_in_chromium(page, tmp_path)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.int16)
    left0, top0, width, _height = rects[0]  # the accuracy-vs-latency plot comes first
    png, labels = accuracy_vs_latency(crowded)
    scale = width / Image.open(io.BytesIO(base64.b64decode(png))).width
    drawn = [
        (name, tuple(round(v * scale) + offset for v, offset in zip(box, (left0, top0, left0, top0), strict=True)))
        for name, box in labels
    ]
    for i, (name, (left, top, right, bottom)) in enumerate(drawn):
        assert np.mean(pixels[top:bottom, left:right] < 128) > 0.03, (name, left, top, right, bottom)
        assert not any(_overlap((left, top, right, bottom), other) for _, other in drawn[i + 1 :]), name


@pytest.mark.parametrize(
    "points",
    [
        [(100.0, 200.0)] * 8,  # eight artifacts on one spot
        [(100.0 + 3 * i, 200.0 + (i % 2)) for i in range(6)],  # a row of nearly equal ones
        [(590.0, 30.0), (592.0, 31.0), (300.0, 31.0), (20.0, 370.0)],  # at the right edge and the corners
    ],
)
def test_placed_labels_never_overlap_each_other_or_other_points(points):
    from edgeresnext.report.plots import MARKER_RADIUS_PX, place_labels

    sizes = [(60.0 + 10 * (i % 3), 12.0) for i in range(len(points))]
    placed = place_labels(points, sizes, (0.0, 0.0, 620.0, 400.0))
    boxes = [
        (x, c - h / 2, x + w, c + h / 2) if right else (x - w, c - h / 2, x, c + h / 2)
        for (x, c, right), (w, h) in zip(placed, sizes, strict=True)
    ]
    for i, box in enumerate(boxes):
        assert box[2] <= 620.0, box  # never past the right edge
        for j, other in enumerate(boxes):
            assert i == j or not _overlap(box, other), (i, j, box, other)
        for j, (x, y) in enumerate(points):
            r = MARKER_RADIUS_PX
            assert points[j] == points[i] or not _overlap(box, (x - r, y - r, x + r, y + r)), (i, j)


def _spread(report: dict) -> ValidationReport:
    """The report with onnx-fp32's timings scaled to a 25th of PyTorch's: a log axis spanning under two decades,
    where matplotlib's own labels (2×10⁻¹ 3×10⁻¹ 4×10⁻¹ ...) ran into each other."""
    spread = copy.deepcopy(report)
    reference = next(a for a in spread["artifacts"] if a["name"] == "pytorch-fp32")
    model = next(a for a in spread["artifacts"] if a["name"] == "onnx-fp32")
    scale = reference["latency"]["p50_ms"] / model["latency"]["p50_ms"] / 25
    model["latency"]["samples_ms"] = [v * scale for v in model["latency"]["samples_ms"]]
    model["latency"]["p50_ms"] *= scale
    return ValidationReport.from_dict(spread)


def _assert_tick_labels_readable(labels: list[tuple[str, tuple[int, int, int, int]]]) -> None:
    texts = [text for text, _ in labels]
    assert 3 <= len(labels) <= 8, texts
    values = [float(text) for text in texts]  # plain decimals: no 10^x, no ×
    assert values == sorted(values) and len(set(values)) == len(values), texts
    for (text, box), (other, other_box) in itertools.pairwise(labels):
        assert other_box[0] - box[2] >= 6, (text, box, other, other_box)  # a gap between neighbours


def test_latency_axis_labels_are_few_plain_and_apart(report):
    from PIL import Image

    from edgeresnext.report.plots import latency_distribution

    spread = _spread(report)
    samples = [v for a in spread.measured for v in a.latency.samples_ms]
    assert 20 < max(samples) / min(samples) < 100  # a log axis spanning under two decades
    png, labels = latency_distribution(spread)
    _assert_tick_labels_readable(labels)
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("L"), dtype=np.int16)
    for text, (left, top, right, bottom) in labels:
        assert np.mean(pixels[top:bottom, left:right] < 128) > 0.03, (text, left, top)  # drawn where it says


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_latency_axis_labels_stay_apart_in_headless_chromium(report, tmp_path):
    """The latency plot as a browser draws it: each tick label's box, scaled onto the screenshot, holds text, and
    the screenshot's columns between neighbouring labels are blank."""
    from PIL import Image

    from edgeresnext.report.plots import latency_distribution

    spread = _spread(report)
    page = tmp_path / "report.html"
    page.write_text(render_html(spread))
    _body, rects, shot = _render_in_chromium(page, tmp_path)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.int16)
    left0, top0, width, _height = rects[1]  # the latency distribution comes second
    png, labels = latency_distribution(spread)
    scale = width / Image.open(io.BytesIO(base64.b64decode(png))).width
    drawn = [
        (text, [round(v * scale) + o for v, o in zip(box, (left0, top0, left0, top0), strict=True)])
        for text, box in labels
    ]
    _assert_tick_labels_readable([(text, tuple(box)) for text, box in drawn])
    for text, (left, top, right, bottom) in drawn:
        assert np.mean(pixels[top:bottom, left:right] < 128) > 0.03, (text, left, top, right, bottom)
    for (_, box), (_, nxt) in itertools.pairwise(drawn):
        between = pixels[box[1] : box[3], box[2] + 2 : nxt[0] - 2]
        assert between.size and np.mean(between < 128) < 0.01, (box, nxt)


def test_a_record_read_from_disk_is_rendered_as_its_typed_report(validated, report, tmp_path):
    """The boundary: a report.json record (``edgeresnext report`` reads the host's from a bundle) becomes the typed
    report once; the record is written as it was read, and its views are those of the typed report."""
    from edgeresnext.report import write_report_record

    typed = write_report(validated, tmp_path / "typed")
    read = json.loads(typed["json"].read_text())
    record = write_report_record(read, tmp_path / "record")
    assert record["json"].read_bytes() == typed["json"].read_bytes()
    assert record["md"].read_text() == render_markdown(ValidationReport.from_dict(read))
    assert record["html"].read_text() == render_html(ValidationReport.from_dict(read))
    device = {**report, "device_engine": "kit/model.engine (int8, on the device)", "device_check": {"status": "x"}}
    again = ValidationReport.from_dict(device)
    assert (again.device_engine, again.device_check) == ("kit/model.engine (int8, on the device)", {"status": "x"})
    assert again.to_dict() == device


def test_a_gate_recorded_before_measured_existed_shows_its_value_as_measured(report):
    from edgeresnext.report import gate_rows

    older = copy.deepcopy(report)
    for gate in older["gates"]:
        del gate["measured"]
    gates = ValidationReport.from_dict(older).gates
    assert [g.measured for g in gates] == [g["value"] for g in report["gates"]]
    # The cell shows the bound the gate was decided on (its value), not the measured drop; the bound depends on how
    # many of the 64 images PyTorch and ONNX Runtime disagree on, which can differ between CPU kinds.
    bound = report["gates"][0]["value"]
    assert report["gates"][0]["basis"] == "bound" and bound > report["gates"][0]["measured"]
    assert gate_rows(ValidationReport.from_dict(older))[1][3] == f"{bound * 100:+.2f} pt"
