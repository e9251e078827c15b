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
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jetson_helpers import copy_bundle, fake_trtexec, jetson_bundle, run_device_command

from edgeresnext import stats
from edgeresnext.bundle import BundleError, read_manifest, verify_bundle
from edgeresnext.cli import main
from edgeresnext.errors import BackendUnavailable
from edgeresnext.runtime import load_bundle

FLIPPED = (
    "max_device_disagreement: the engine disagrees with the host's INT8 stand-in on 2 of 32 images (6.25 %), over the "
    "5.00 % limit by 1.25 pt"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory, calib_dir) -> Path:
    return jetson_bundle(tmp_path_factory, calib_dir)


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory) -> Path:
    return fake_trtexec(tmp_path_factory.mktemp("trtexec"))


@pytest.fixture(scope="module")
def checked(built, bin_dir, tmp_path_factory) -> Path:
    bundle = copy_bundle(built, tmp_path_factory.mktemp("checked") / "bundle")
    done = run_device_command(bundle, bin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    return bundle


@pytest.fixture(scope="module")
def failed(built, bin_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    bundle = copy_bundle(built, tmp_path_factory.mktemp("failed") / "bundle")
    return bundle, run_device_command(bundle, bin_dir, FAKE_FLIP="0.05")


# ------------------------------------------------------------------------------------------ the kit
def test_the_kit_carries_the_check_set_and_the_hosts_own_stats(built):
    from edgeresnext.backends.tensorrt import device_check

    kit = built / "kit"
    assert (kit / "check" / "stats.py").read_bytes() == Path(stats.__file__).read_bytes()
    assert (kit / "device_check.py").read_bytes() == Path(device_check.__file__).read_bytes()
    source = (kit / "device_check.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported
    check = json.loads((kit / "check" / "check.json").read_text())
    assert [b["size"] for b in check["batches"]] == [8, 8, 8, 8]  # the plan's largest batch
    assert len(check["labels"]) == len(check["host"]["stand_in_top1"]) == 32
    assert check["gate"] == {"max_device_disagreement": 0.05, "confidence": 0.95, "unproven": "warn"}
    # The inputs are the bundle's own preprocessing of the first validation images, as trtexec reads them.
    first = np.fromfile(kit / "check" / "inputs-000.bin", dtype=np.float32).reshape(8, 1, 28, 28)
    host = json.loads((kit / "check" / "host_report.json").read_text())
    assert host["target"]["name"] == "jetson-small" and host["data"]["count"] == 64
    stand_in_row = next(a for a in host["artifacts"] if a["name"] == "qdq-int8-fp16 (onnxruntime)")
    assert stand_in_row["uncertainty"]["images"] == 40  # validate.stand_in_images: 40 of the 64
    assert "qdq-int8-fp16 (onnxruntime): validated on the first 40 of 64 images (validate.stand_in_images)" in " ".join(
        host["notes"]
    )
    assert np.isfinite(first).all() and first.std() > 0.1
    # The host's outputs are the validate stage's own, kept for these first images (not a second inference pass).
    kept = np.load(built.parent / "validate" / "check_logits.npz")
    names = list(kept["names"])
    stand_in = kept[f"row{names.index('qdq-int8-fp16 (onnxruntime)')}"]
    np.testing.assert_allclose(check["host"]["stand_in_logits"], stand_in, rtol=1e-6, atol=1e-6)
    assert check["host"]["fp32_top1"] == kept[f"row{names.index('pytorch-fp32')}"].argmax(1).tolist()
    # The build summary states the set's size (the bundle stage's record is what it reads).
    stage = json.loads((built.parent / "bundle.stage.json").read_text())
    check_set = stage["info"]["device_check_set"]
    assert (check_set["images"], check_set["batches"], check_set["batch"]) == (32, 4, 8)
    assert 32 * 28 * 28 * 4 / 1e6 < check_set["megabytes"] < 0.3  # inputs 0.1 MB + check.json + host report
    listed = {f["path"] for f in read_manifest(built)["files"]}
    assert {"kit/device_check.py", "kit/check/stats.py", "kit/check/check.json", "kit/check/inputs-003.bin"} <= listed


def test_the_device_step_records_the_check_in_the_sealed_manifest(checked, capsys):
    manifest = verify_bundle(checked)
    check = manifest["artifacts"][0]["engine"]["device_check"]
    assert check["status"] == "checked" and check["checked_with"] == "trtexec" and check["images"] == 32
    # The stand-in engine computes what the host's stand-in computed: full agreement, |Δlogit| at print precision.
    assert check["agreement_stand_in"]["value"] == 1.0 and check["max_abs_dlogit_vs_stand_in"] < 1e-3
    host_fp32 = check["host_top1_fp32"]
    agree_fp32 = check["agreement_fp32"]["count"]
    # The host's statistics, computed by the kit's verbatim copy of stats.py: the same numbers as here, with the
    # host report's agreement interval (exact, validate.metrics.paired_uncertainty).
    interval = stats.proportion_interval(agree_fp32, 32, 0.95, "exact")
    assert check["agreement_fp32"]["interval"] == [interval.lower, interval.upper]
    assert check["agreement_stand_in"]["lower_bound"] == stats.agreement_lower_bound(32, 32, 0.95)
    assert 0 <= host_fp32 <= 1 and check["top1_drop_vs_fp32"]["mcnemar_p"] <= 1
    gate = check["gate"]
    assert gate["passed"] and not gate["provable"] and gate["min_images"] == stats.min_images_for_agreement(0.95)
    assert "NOT PROVEN: 32 images cannot prove it at 95 %" in gate["message"]
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
    assert "device check: FAILED on 32 images" in done.stdout
    manifest = verify_bundle(bundle)  # sealed, and says so
    check = manifest["artifacts"][0]["engine"]["device_check"]
    assert check["status"] == "failed" and check["gate"]["message"] == FLIPPED
    assert check["agreement_stand_in"]["count"] == 30
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


def test_an_unchecked_engine_loads_with_a_warning(built, tmp_path, monkeypatch, caplog):
    """The Python API build where no trtexec is found: the engine is sealed, its check says why it did not run."""
    import edgeresnext.backends.tensorrt as tensorrt
    from edgeresnext.bundle import engine_into_bundle

    bundle = copy_bundle(built, tmp_path / "bundle")

    def engine_from_onnx(onnx_path, engine_path, plan, timing_cache=None):
        Path(engine_path).write_bytes(b"stand-in engine")
        info = {"onnx": Path(onnx_path).name, "tensorrt_version": "10.3.0", "gpu_name": "Orin", "gpu_sm": "8.7"}
        Path(f"{engine_path}.json").write_text(json.dumps({**info, "build_mode": plan.build_mode}))
        return info

    monkeypatch.setattr(tensorrt, "engine_from_onnx", engine_from_onnx)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("TRTEXEC", raising=False)
    manifest = engine_into_bundle(bundle, python_api=True)
    check = manifest["artifacts"][0]["engine"]["device_check"]
    assert check["status"] == "unchecked" and check["reason"].startswith("trtexec not found")
    with caplog.at_level(logging.WARNING), pytest.raises(BackendUnavailable):
        load_bundle(bundle)  # no TensorRT here: the warning comes before the runtime is asked
    assert "this engine is UNCHECKED on the device (trtexec not found" in caplog.text


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
    assert rows[3].startswith("| kit/model.engine (int8, on the device) | Orin SM 8.7, TensorRT 10.3.0 | 32 | ")
    assert rows[3].endswith("| CHECKED |") and "100.00 % [" in rows[3]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["device_check"] == read_manifest(checked)["artifacts"][0]["engine"]["device_check"]
    assert "On the device" in (tmp_path / "report" / "report.html").read_text()
    verify_bundle(checked)  # the report is written beside the bundle, never into it


def test_report_of_a_bundle_not_yet_on_the_device_says_unchecked(built, tmp_path, capsys):
    bundle = copy_bundle(built, tmp_path / "bundle")
    assert main(["report", str(bundle)]) == 0
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
