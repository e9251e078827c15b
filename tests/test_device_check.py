"""The device check: after the device step builds the engine, it runs it on the bundle's check set and seals what it
measured into the engine record; a failed check exits 1 and device apps refuse the engine; `edgeresnext report`
shows the device row beside the host rows.

The real kit runs as on a Jetson without edgeresnext (PATH only, python3 -I -S); the stand-in trtexec of
tests/jetson_helpers.py accepts only TensorRT 10.3's documented options, reads --loadInputs, writes --exportOutput in
trtexec's JSON layout and computes with ONNX Runtime on the ONNX the engine was built from.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jetson_helpers import (
    copy_bundle,
    jetson_bundle,
    jetson_fixtures,
    run_device_command,
    sealed_copy,
    stand_in_python_api_build,
)

from edgeresnext import stats
from edgeresnext.bundle import BundleError, read_manifest, verify_bundle
from edgeresnext.cli import main
from edgeresnext.errors import BackendUnavailable
from edgeresnext.runtime import load_bundle

# FAKE_FLIP=0.05 changes images 0, 20, 40 and 60 of the 64: 6.25 %, over the 5 % gate by 1.25 pt.
FLIPPED = (
    "max_device_disagreement: the engine disagrees with the host's INT8 stand-in on 4 of 64 images (6.25 %), over the "
    "5.00 % limit by 1.25 pt (95 % upper bound 13.73 %; 64 images prove <= 5.00 % when at most 0 disagree)"
)


built, bin_dir = jetson_fixtures()


@pytest.fixture(scope="module")
def checked(built, bin_dir, tmp_path_factory) -> Path:
    return sealed_copy(built, bin_dir, tmp_path_factory.mktemp("checked"))


@pytest.fixture(scope="module")
def failed(built, bin_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    bundle = copy_bundle(built, tmp_path_factory.mktemp("failed") / "bundle")
    return bundle, run_device_command(bundle, bin_dir, FAKE_FLIP="0.05")


# ------------------------------------------------------------------------------------------ the kit
def _imports(source: str) -> tuple[set[str], set[str]]:
    """Top-level modules a file imports: (anywhere, inside a ``try`` that catches ImportError)."""
    imported, optional = set(), set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers
        ):
            optional |= {a.name.split(".")[0] for n in node.body if isinstance(n, ast.Import) for a in n.names}
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    return imported, optional


def test_the_kit_carries_the_check_set_and_the_hosts_own_stats(built):
    from edgeresnext.backends.tensorrt import device_check
    from edgeresnext.backends.tensorrt.checkset import check_inputs
    from edgeresnext.data import load_dataset
    from edgeresnext.data.sampling import stratified_sample

    kit = built / "kit"
    assert (kit / "check" / "stats.py").read_bytes() == Path(stats.__file__).read_bytes()
    assert (kit / "device_check.py").read_bytes() == Path(device_check.__file__).read_bytes()
    imported, optional = _imports((kit / "device_check.py").read_text())
    # JetPack's python3 and its standard library; numpy only where it is there (an ImportError falls back)
    assert imported - {"__future__"} - optional <= set(sys.stdlib_module_names), imported
    assert optional == {"numpy"}
    check = json.loads((kit / "check" / "check.json").read_text())
    # The default size (124, derived from the gate) is more than the 64 validated images: all 64, in batches of 8.
    assert [b["size"] for b in check["batches"]] == [8] * 8 and check["version"] == 2 and check["dtype"] == "uint8"
    assert len(check["labels"]) == len(check["host"]["stand_in_top1"]) == len(check["ids"]) == 64
    assert check["gate"] == {"max_device_disagreement": 0.05, "confidence": 0.95, "unproven": "warn"}
    # A seeded class-stratified sample of the test split (the validation set's own first 64), seed and counts recorded
    test = load_dataset("fashion-mnist", split="test")
    index = stratified_sample(test.labels, 64, seed=0)
    assert check["ids"] == [f"fashion-mnist/test#{i}" for i in index] and check["labels"] == test.labels[index].tolist()
    assert check["sample"]["seed"] == 0 and check["sample"]["of"] == 10000
    assert check["class_counts"] == dict(zip(test.class_names, np.bincount(test.labels[index]).tolist(), strict=True))
    assert set(check["class_counts"].values()) == {6, 7}
    # What it proves: <= 5 % when none of the 64 disagrees (59 images at least); a drop against FP32 of 5 images.
    assert check["proves"]["max_disagreements"] == 0 and check["proves"]["min_images"] == 59
    assert check["proves"]["detectable_drop"]["images_lost"] == stats.min_detectable_drop(64)
    # The pixels are stored as uint8 after resize and crop (a quarter of float32, then losslessly compressed), the
    # test images themselves.
    assert check["encoding"] == device_check.PIXEL_ENCODING
    pixels = np.concatenate(
        [
            np.frombuffer(device_check.decoded_pixels((kit / "check" / b["file"]).read_bytes(), [1, 28, 28]), np.uint8)
            for b in check["batches"]
        ]
    ).reshape(64, 1, 28, 28)
    np.testing.assert_array_equal(pixels[:, 0], test.images[index])
    host = json.loads((kit / "check" / "host_report.json").read_text())
    assert host["target"]["name"] == "jetson-small" and host["data"]["count"] == 64
    assert host["data"]["sample_seed"] == 0 and host["data"]["total"] == 10000
    stand_in_row = next(a for a in host["artifacts"] if a["name"] == "qdq-int8-fp16 (onnxruntime)")
    assert stand_in_row["uncertainty"]["images"] == 40  # validate.stand_in_images: 40 of the 64
    assert (
        "qdq-int8-fp16 (onnxruntime): validated on a class-stratified random sample of 40 of 64 images "
        "(data.sample_seed 0) (validate.stand_in_images)"
    ) in " ".join(host["notes"])
    # The host's outputs are computed on exactly the float32 bytes the device makes of the pixels: FP32's are the
    # validate stage's own (it ran on those very bytes); the stand-in's, validated on 40 images only, are run here.
    inputs = check_inputs(pixels, test.preprocess)
    kept = np.load(built.parent / "validate" / "check_logits.npz")
    names = list(kept["names"])
    assert check["host"]["fp32_top1"] == kept[f"row{names.index('pytorch-fp32')}"].argmax(1).tolist()
    from edgeresnext.validate import runner_from_file
    from edgeresnext.validate.measure import run_logits

    runner = runner_from_file(kit / "model.qdq-fp16.onnx", None, "onnxruntime")
    np.testing.assert_allclose(
        check["host"]["stand_in_logits"], run_logits(runner, inputs, progress=False), rtol=1e-6, atol=1e-6
    )
    # The build summary states the set's size (the bundle stage's record is what it reads).
    stage = json.loads((built.parent / "bundle.stage.json").read_text())
    check_set = stage["info"]["device_check_set"]
    assert (check_set["images"], check_set["batches"], check_set["batch"]) == (64, 8, 8)
    assert check_set["megabytes"] < 0.3  # pixels at most 0.05 MB + check.json + host report
    listed = {f.path for f in read_manifest(built).files}
    assert {"kit/device_check.py", "kit/check/stats.py", "kit/check/check.json", "kit/check/pixels-007.u8.z"} <= listed


def test_the_device_step_records_the_check_in_the_sealed_manifest(checked, capsys):
    manifest = verify_bundle(checked)
    check = manifest.artifacts[0].engine.device_check.to_json()  # the record as the device wrote it
    assert check["status"] == "checked" and check["checked_with"] == "trtexec" and check["images"] == 64
    # The stand-in engine computes what the host's stand-in computed: full agreement, |Δlogit| at print precision.
    assert check["agreement_stand_in"]["value"] == 1.0 and check["max_abs_dlogit_vs_stand_in"] < 1e-3
    host_fp32 = check["host_top1_fp32"]
    agree_fp32 = check["agreement_fp32"]["count"]
    # The host's statistics, computed by the kit's verbatim copy of stats.py: the same numbers as here, with the
    # host report's agreement interval (exact, validate.metrics.paired_uncertainty).
    interval = stats.proportion_interval(agree_fp32, 64, 0.95, "exact")
    assert check["agreement_fp32"]["interval"] == [interval.lower, interval.upper]
    assert check["agreement_stand_in"]["lower_bound"] == stats.agreement_lower_bound(64, 64, 0.95)
    assert 0 <= host_fp32 <= 1 and check["top1_drop_vs_fp32"]["mcnemar_p"] <= 1
    # 64 agreeing images prove <= 5 %: the gate is passed on its bound, not NOT PROVEN
    gate = check["gate"]
    assert gate["passed"] and gate["provable"] and gate["max_disagreements"] == 0
    assert gate["upper_bound"] == pytest.approx(1 - 0.05 ** (1 / 64)) and gate["upper_bound"] <= 0.05
    assert "(passed: 64 images prove <= 5.00 % when at most 0 disagree)" in gate["message"]
    assert check["sample"]["seed"] == 0 and sum(check["class_counts"].values()) == 64
    assert check["disagreeing_images"] == []
    assert sorted(check["latency"]) == ["batch_1", "batch_8"]
    assert check["latency"]["batch_8"]["images_per_s"] == pytest.approx(
        8 * check["latency"]["batch_8"]["throughput_qps"]
    )
    assert check["device"] == {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "gpu_sm": "8.7", "power_mode": None}
    assert main(["bundle", "verify", str(checked)]) == 0
    assert "device check: checked: max_device_disagreement: the engine disagrees with the host's INT8 stand-in on " in (
        capsys.readouterr().out
    )


def test_a_stand_in_that_changes_5_percent_of_the_top1s_fails_the_device_step(failed, bin_dir, monkeypatch, capsys):
    bundle, done = failed
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip() == (
        f"seal.py: error: the device check FAILED: {FLIPPED}; the engine is sealed as failed (load_bundle and the C++ "
        "samples refuse it); compare the build's Q/DQ scales and the engine's precision, then rebuild"
    )
    assert "device check: FAILED on 64 images" in done.stdout
    manifest = verify_bundle(bundle)  # sealed, and says so
    typed = manifest.artifacts[0].engine.device_check
    assert typed.status == "failed" and typed.gate.passed is False and typed.gate.message == FLIPPED
    check = typed.to_json()
    assert check["agreement_stand_in"]["count"] == 60
    assert check["disagreeing_images"] == [check_id for i, check_id in enumerate(_check_ids(bundle)) if i % 20 == 0]
    with pytest.raises(BundleError, match=r"this engine FAILED its device check \(max_device_disagreement: .*6\.25 %"):
        load_bundle(bundle)
    # edgeresnext's own device command says the same and exits 1 as well.
    monkeypatch.setenv("FAKE_FLIP", "0.05")
    assert main(["bundle", "build-engine", str(bundle), "--trtexec", str(bin_dir / "trtexec")]) == 1
    assert f"edgeresnext: error: the device check FAILED: {FLIPPED}" in capsys.readouterr().err


def test_an_app_may_run_a_failed_engine_only_when_it_asks(failed, monkeypatch):
    from edgeresnext.backends.tensorrt import backend

    bundle, _ = failed
    monkeypatch.setattr(backend.TensorRTBackend, "available", lambda self: None)
    monkeypatch.setattr(backend, "device_facts", lambda: {"tensorrt_version": "10.3.0", "gpu_sm": "8.7"})

    def runner(artifact, options):
        raise AssertionError("reached TensorRT")

    monkeypatch.setattr(backend, "TensorRTRunner", runner)
    with pytest.raises(AssertionError, match="reached TensorRT"):
        load_bundle(bundle, allow_failed_check=True)


def test_an_unchecked_engine_loads_with_a_warning(built, tmp_path, monkeypatch, caplog, capsys):
    """The Python API build where no trtexec is found: the engine is sealed, its check says why it did not run."""
    from edgeresnext.bundle import finish_on_device

    bundle = copy_bundle(built, tmp_path / "bundle")
    stand_in_python_api_build(monkeypatch)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("TRTEXEC", raising=False)
    manifest = finish_on_device(bundle, python_api=True)
    check = manifest["artifacts"][0]["engine"]["device_check"]
    assert check["status"] == "unchecked" and check["reason"].startswith("trtexec not found")
    with caplog.at_level(logging.WARNING), pytest.raises(BackendUnavailable):
        load_bundle(bundle)  # no TensorRT here: the warning comes before the runtime is asked
    assert "this engine is UNCHECKED on the device (trtexec not found" in caplog.text
    # The device command seals it, but exits 3: an engine whose gate was never checked must not read as a pass.
    assert main(["bundle", "build-engine", str(bundle), "--python-api"]) == 3
    assert "edgeresnext: the device check is UNCHECKED: trtexec not found" in capsys.readouterr().err


def _check_ids(bundle: Path) -> list[str]:
    return json.loads((bundle / "kit" / "check" / "check.json").read_text())["ids"]


@pytest.fixture(scope="module")
def unproven(tmp_path_factory, calib_dir, bin_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """backend_options.tensorrt.device_check_images: 32, fewer than the 59 that can prove a 5 % gate: the device step
    on an engine that agrees everywhere."""
    built = jetson_bundle(tmp_path_factory, calib_dir, device_check_images=32)
    bundle = copy_bundle(built, tmp_path_factory.mktemp("unproven") / "bundle")
    return bundle, run_device_command(bundle, bin_dir)


def test_a_check_set_too_small_to_prove_the_gate_exits_3(unproven, bin_dir, tmp_path, monkeypatch, capsys):
    """NOT PROVEN is not a pass: the engine is sealed as checked (it passed on the measured value), and every
    command that reports the device step exits 3: build_engine.sh (seal.py), device_check.py on its own, `edgeresnext
    bundle build-engine` and `edgeresnext report`."""
    bundle, done = unproven
    assert done.returncode == 3, done.stdout + done.stderr
    gate = verify_bundle(bundle).artifacts[0].engine.device_check.gate
    assert gate.passed and gate.provable is False and gate.extra["max_disagreements"] is None
    assert "NOT PROVEN: 32 images cannot prove it at 95 % (at least 59 images needed" in gate.message
    assert done.stderr.startswith("seal.py: the device check is NOT PROVEN: max_device_disagreement: ")
    assert "the engine is sealed (exit code 3: built, but its gate is not proven" in done.stderr
    alone = subprocess.run(
        [sys.executable, "-I", "-S", str(bundle / "kit" / "device_check.py")],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert alone.returncode == 3 and json.loads(alone.stdout)["gate"]["provable"] is False
    assert main(["report", str(bundle), "--out", str(tmp_path / "report")]) == 3
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert main(["bundle", "build-engine", str(bundle), "--trtexec", str(bin_dir / "trtexec")]) == 3
    assert "edgeresnext: the device check is NOT PROVEN" in capsys.readouterr().err


@pytest.mark.promise("docs/jetson.md", "both give the same bytes, the ones the host computed its outputs on")
def test_the_device_normalizes_the_pixels_into_the_hosts_very_bytes(tmp_path):
    """Every uint8 value of every channel, for the shipped model's, ImageNet's and an odd mean/std: the kit's standard
    library path (run under python3 -I -S, no numpy, as on a bare JetPack: decode the stored pixels, normalize), its
    numpy path, the host's Preprocess.normalize and the check set's own inputs give the same float32 bytes."""
    from edgeresnext.backends.tensorrt.checkset import check_inputs
    from edgeresnext.backends.tensorrt.device_check import decoded_pixels, encoded_pixels, normalized_bytes
    from edgeresnext.data.preprocess import Preprocess

    script = Path(__file__).resolve().parents[1] / "edgeresnext" / "backends" / "tensorrt" / "device_check.py"
    for mean, std in (
        ((0.286,), (0.353,)),
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ((0.1, 0.9, 0.5), (1e-3, 7.0, 0.31)),
    ):
        channels = len(mean)
        pixels = np.stack([np.arange(256, dtype=np.uint8).reshape(16, 16)] * channels)[None]  # 1 x C x 16 x 16
        pixels = np.concatenate([pixels, pixels[:, :, ::-1]])  # two images, values in another order
        stored = encoded_pixels(pixels.tobytes(), [channels, 16, 16])
        assert decoded_pixels(stored, [channels, 16, 16]) == pixels.tobytes()
        numpy_bytes = normalized_bytes(pixels.tobytes(), [channels, 16, 16], list(mean), list(std))
        (tmp_path / "pixels.u8.z").write_bytes(stored)
        code = (
            f"import sys; sys.path.insert(0, {str(script.parent)!r}); import device_check as d; "
            f"pixels = d.decoded_pixels(open({str(tmp_path / 'pixels.u8.z')!r}, 'rb').read(), [{channels}, 16, 16]); "
            "assert 'numpy' not in sys.modules; "
            f"sys.stdout.buffer.write(d.normalized_bytes(pixels, [{channels}, 16, 16], {list(mean)!r}, {list(std)!r}))"
        )
        stdlib_bytes = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, check=True).stdout
        preprocess = Preprocess(channels="L" if channels == 1 else "RGB", mean=mean, std=std)
        host = np.stack([preprocess.normalize(image.transpose(1, 2, 0)) for image in pixels])
        assert stdlib_bytes == numpy_bytes == host.astype("<f4").tobytes() == check_inputs(pixels, preprocess).tobytes()


# ------------------------------------------------------------------------------------------ back on the host
def test_report_shows_the_device_row_beside_the_host_rows(checked, tmp_path, capsys):
    assert main(["report", str(checked), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("device check: checked: max_device_disagreement:")
    markdown = (tmp_path / "report" / "report.md").read_text()
    section = markdown.split("## On the device", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| artifact | measured on | images | top-1 |")
    assert rows[1].startswith("| pytorch-fp32 | host (") and rows[2].startswith(
        "| qdq-int8-fp16 (onnxruntime) | host ("
    )
    assert rows[3].startswith("| kit/model.engine (int8, on the device) | Orin SM 8.7, TensorRT 10.3.0 | 64 | ")
    assert rows[3].endswith("| CHECKED |") and "100.00 % [" in rows[3]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["device_check"] == read_manifest(checked).artifacts[0].engine.device_check.to_json()
    assert "On the device" in (tmp_path / "report" / "report.html").read_text()
    assert (
        "(check set: 64 images, a class-stratified random sample of 10,000 validation images, data.sample_seed 0: "
        in (markdown)
    )
    verify_bundle(checked)  # the report is written beside the bundle, never into it


def test_report_of_a_bundle_not_yet_on_the_device_says_unchecked(built, tmp_path, capsys):
    bundle = copy_bundle(built, tmp_path / "bundle")
    assert main(["report", str(bundle)]) == 3  # nothing proven on the device yet
    assert "device check: unchecked: the engine is not built yet" in capsys.readouterr().out
    assert "| unchecked |" in (tmp_path / "device-report" / "report.md").read_text()


def test_report_of_a_failed_check_exits_1(failed, tmp_path):
    bundle, _ = failed
    assert main(["report", str(bundle), "--out", str(tmp_path / "r")]) == 1
    assert "| FAILED |" in (tmp_path / "r" / "report.md").read_text()


def test_trtexec_output_parsers_read_trtexec_s_own_layout(tmp_path):
    from edgeresnext.backends.tensorrt.device_check import parse_timing, read_export

    export = tmp_path / "out.json"
    export.write_text(
        '[\n  { "name" : "logits"\n  , "dimensions" : "2x3"\n  , "values" : [ 1, -2.5, 3e-05, nan, inf, 0 ]\n  }\n]\n'
    )
    rows = read_export(export, "logits")
    assert rows[0] == [1.0, -2.5, 3e-05] and np.isnan(rows[1][0]) and rows[1][1] == float("inf")
    log = (
        "[12/01/2025-10:00:02] [I] Throughput: 812.5 qps\n"
        "[12/01/2025-10:00:02] [I] Latency: min = 1.1 ms, max = 1.9 ms, mean = 1.2 ms, median = 1.25 ms, "
        "percentile(90%) = 1.3 ms, percentile(95%) = 1.4 ms, percentile(99%) = 1.6 ms\n"
        "[12/01/2025-10:00:02] [I] GPU Compute Time: min = 0.8 ms, max = 1.5 ms, mean = 0.9 ms, median = 0.875 ms, "
        "percentile(90%) = 1 ms, percentile(95%) = 1.1 ms, percentile(99%) = 1.25 ms\n"
    )
    timing = parse_timing(log, 8)
    assert (timing["p50_ms"], timing["p99_ms"], timing["images_per_s"]) == (0.875, 1.25, 6500.0)
    assert (timing["host_latency_p50_ms"], timing["host_latency_p99_ms"]) == (1.25, 1.6)


def test_the_kit_check_runs_alone_under_a_bare_python(checked, bin_dir, tmp_path):
    """device_check.py on its own (as a device engineer would rerun it): exit 0 and the same status."""
    kit = Path(shutil.copytree(checked, tmp_path / "b")) / "kit"
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    done = subprocess.run(
        [python, "-I", "-S", str(kit / "device_check.py")],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "checked"
    verify_bundle(kit.parent)  # it left nothing in the bundle (no __pycache__ of check/stats.py)
