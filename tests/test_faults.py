"""Faults during a build: kill -9 at several points, a full disk, a corrupted cached output, and determinism.

One small real build (shipped model, 100 validation images, 40 calibration images, 3 latency runs) is made
uninterrupted as the reference. A second build of the same target is killed with SIGKILL at several points
and rerun until it finishes; its artifacts must equal the reference byte for byte and no temporary file may
remain. The same pair proves determinism: two builds of the same inputs give byte-identical weights, ONNX, IR
and bundle files; the files that differ are exactly those holding timings or the build's own path
(:data:`DIFFERS_BY_DESIGN`), and even those agree once timings and paths are taken out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgeresnext.atomic import sha256_file, write_bytes_atomic
from edgeresnext.bundle import verify_bundle
from edgeresnext.config import load_target
from edgeresnext.errors import StorageError
from edgeresnext.pipeline import STAGES, build

REPO = Path(__file__).resolve().parents[1]
NAME = "faults"
# The artifacts a device or a later stage consumes: byte-identical across builds of the same inputs.
ARTIFACTS = (
    "model/model.safetensors",
    "export/model_fp32.onnx",
    "quantize/model.qdq.onnx",
    "compile/model.xml",
    "compile/model.bin",
    "bundle/model.xml",
    "bundle/model.bin",
    "bundle/labels.txt",
    "config.json",
)
# Files that legitimately differ between two builds, and why (docs/reliability.md, "Determinism", repeats this).
DIFFERS_BY_DESIGN = {
    "validate/report.json": "measured latency/throughput/memory, creation time, host load",
    "validate/report.md": "measured latency/throughput, creation time",
    "validate/report.html": "measured latency/throughput, creation time",
    "validate/stage.json": "stage duration, measured latency, the build's own path, and so its input hash (an input, "
    "compile/artifact.json, names the build's absolute paths)",
    "bundle/manifest.json": "validated latency (validation.latency_ms_p50), the source ONNX's absolute path",
    "bundle.stage.json": "stage duration, validated latency, the build's own path, and so its input hash and the "
    "manifest's sha256 (report.json and manifest.json hold timings)",
    "quantize/quant.json": "calibration duration (seconds)",
    "compile/artifact.json": "absolute paths of the build's files",
}
# Every stage.json holds its duration and the absolute paths of its inputs; outputs and input hashes match.
DIFFERS_BY_DESIGN.update(
    {
        f"{stage}/stage.json": "stage duration, the build's own path"
        for stage in ("model", "export", "quantize", "lint", "compile")
    }
)
DIFFERS_BY_DESIGN["lint/lint.json"] = "the linted model's absolute path"
TIMING_KEYS = {
    "seconds",
    "quantize_seconds",
    "p50_ms",
    "latency_ms_p50",
    "speedup",
    "created",
    "latency",
    "throughput",
    "environment",
    "peak_rss_mb",
    "peak_rss_delta_mb",
    "memory_method",
    "protocol",
    "command",
}


def _write_target(folder: Path, calib: Path, checkpoint: Path) -> Path:
    data = {
        "extends": str(REPO / "targets" / "cpu.yaml"),
        "name": NAME,
        "model": {"checkpoint": str(checkpoint)},
        "data": {"limit": 100, "on_bad_image": "skip"},
        "quant": {"calib_dir": str(calib), "subset_size": 40, "sensitivity": False},
        "validate": {"latency_runs": 3, "warmup_runs": 1},
        # The build must pass (the faults tests compare finished builds), whatever INT8 kernels this CPU has. On
        # 100 images the 95 % bound is 3.54 pt with no discordant image, 5.13 pt with one loss and 9.27 pt with four
        # (stats.drop_upper_bound). VNNI, AVX2-only and AMX CPUs flip a different handful of near-tie images (one
        # loss on a 2-core AMD EPYC with AVX512-VNNI gave 5.13 pt, failing the old 5 pt gate), so 10 pt allows
        # four net losses: far beyond kernel noise, yet still a gate the tests see decided.
        "gates": {"max_top1_drop": 0.10},
    }
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def target_yaml(tmp_path_factory: pytest.TempPathFactory, shipped_checkpoint: Path) -> Path:
    """A small target whose calibration folder also holds one zero-byte image (skipped and counted)."""
    from edgeresnext.data.calibration import write_calibration_set

    folder = tmp_path_factory.mktemp("faults")
    calib = folder / "calib"
    write_calibration_set(calib, count=40, seed=1)
    first_class = sorted(p for p in calib.iterdir() if p.is_dir())[0]
    (first_class / "000-empty.png").write_bytes(b"")
    return _write_target(folder, calib, shipped_checkpoint)


@pytest.fixture(scope="module")
def reference(target_yaml: Path) -> Path:
    """An uninterrupted build (in this process); returns build/<target>."""
    out = target_yaml.parent / "reference"
    summary = build(load_target(target_yaml), out_root=out, progress=False)
    assert summary.ok, summary.render()
    return out / NAME


def _cli_build(target_yaml: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeresnext.cli", "-q", "build", "--target", str(target_yaml), "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


# Kill points: the moment each of these exists under build/<target>/ (so the build is inside that stage).
KILL_WHEN = ("model", "quantize", "validate", "bundle")


@pytest.fixture(scope="module")
def resumed(target_yaml: Path) -> tuple[Path, list[str]]:
    """The same build killed with SIGKILL as each KILL_WHEN path appears, then rerun to the end.

    Returns (build/<target>, what happened at each kill)."""
    out = target_yaml.parent / "resumed"
    root = out / NAME
    log = []
    for marker in KILL_WHEN:
        process = _cli_build(target_yaml, out)
        deadline = time.monotonic() + 240
        while process.poll() is None and not (root / marker).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            log.append(f"killed when {marker}/ appeared")
        else:
            log.append(f"finished (rc {process.returncode}) before {marker}/ appeared")
        process.stdout.close()
    # What a kill in the middle of a write leaves: hidden temporaries, at the root and inside a cached stage.
    (root / f".config.json.tmp-{2**22 + 1}").write_text("{half")
    (root / "export" / f".model_fp32.onnx.tmp-{2**22 + 1}").write_bytes(b"\x08\x07")
    (root / f".bundle.tmp-{2**22 + 1}").mkdir(exist_ok=True)
    (root / f".bundle.tmp-{2**22 + 1}" / "model.bin").write_bytes(b"half")
    final = _cli_build(target_yaml, out)
    output, _ = final.communicate(timeout=300)
    assert final.returncode == 0, output
    log.append(output)
    return root, log


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_kill_9_at_several_points_then_rerun_gives_the_reference_artifacts(reference, resumed):
    root, log = resumed
    assert sum(entry.startswith("killed") for entry in log) >= 3, log
    leftovers = [name for name in _files(root) if ".tmp-" in name or ".old-" in name]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    for name in ARTIFACTS:
        assert sha256_file(root / name) == sha256_file(reference / name), f"{name} differs after kill -9 ({log})"
    assert set(_files(root)) == set(_files(reference))
    verify_bundle(root / "bundle")
    for stage in STAGES:  # every stage record matches the files it lists
        record_path = root / ("bundle.stage.json" if stage == "bundle" else f"{stage}/stage.json")
        record = json.loads(record_path.read_text())
        folder = record_path.parent if stage != "bundle" else root / "bundle"
        for name, digest in record["outputs"].items():
            assert sha256_file(folder / name) == digest, f"{stage}: {name}"


def test_skipped_calibration_image_is_counted(resumed):
    root, log = resumed
    quant = json.loads((root / "quantize" / "quant.json").read_text())
    assert [Path(file).name for file, _reason in quant["calibration_skipped"]] == ["000-empty.png"]
    assert "empty file (0 bytes)" in quant["calibration_skipped"][0][1]
    # The unreadable image is replaced by the next one: 41 files, 40 usable, exactly quant.subset_size.
    assert quant["calibration_images"] == 40
    summary = log[-1]  # the closing summary of the finishing run
    assert "note: calibration: skipped 1 unreadable image(s)" in summary, summary
    assert "fewer than quant.subset_size" not in summary, summary


def _without_timings(value, roots: tuple[str, ...]):
    if isinstance(value, dict):
        return {k: _without_timings(v, roots) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "<build>")
        return value
    return value


def test_two_builds_are_byte_identical_except_timings_and_paths(reference, resumed):
    root, _log = resumed
    ours, theirs = _files(reference), _files(root)
    differing = sorted(name for name in ours if sha256_file(ours[name]) != sha256_file(theirs[name]))
    unexplained = [name for name in differing if name not in DIFFERS_BY_DESIGN]
    assert not unexplained, f"files differ between two builds of the same inputs: {unexplained}"
    roots = (str(reference), str(root))
    for name in differing:
        if name.endswith(".json"):
            a = _without_timings(json.loads(ours[name].read_text()), roots)
            b = _without_timings(json.loads(theirs[name].read_text()), roots)
            if name.endswith("stage.json"):  # hashes of files that hold timings differ with them
                folder = "bundle/" if name == "bundle.stage.json" else name.rsplit("/", 1)[0] + "/"
                for record in (a, b):
                    record["outputs"] = {
                        k: v for k, v in record["outputs"].items() if folder + k not in DIFFERS_BY_DESIGN
                    }
                    if name in ("validate/stage.json", "bundle.stage.json"):
                        record.pop("inputs_hash")
                        record.pop("input_sha256")  # each input's hash, as above
            assert a == b, f"{name} differs beyond timings and paths"
    # Accuracy is part of the report and must not move between builds.
    for a, b in zip(
        json.loads(ours["validate/report.json"].read_text())["artifacts"],
        json.loads(theirs["validate/report.json"].read_text())["artifacts"],
        strict=True,
    ):
        assert (a["name"], a.get("top1"), a.get("agreement")) == (b["name"], b.get("top1"), b.get("agreement"))


def test_corrupted_cached_output_is_detected_and_rebuilt(reference, resumed, target_yaml):
    root, _log = resumed
    damaged = root / "compile" / "model.bin"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (root / "validate" / "stage.json").write_text("{not json")
    summary = build(load_target(target_yaml), out_root=root.parent, progress=False)
    ran = {s.name for s in summary.stages if not s.skipped}
    assert ran == {"compile", "validate", "bundle"}, ran
    assert sha256_file(damaged) == sha256_file(reference / "compile" / "model.bin")
    verify_bundle(root / "bundle")


# --------------------------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest):
    """A tmpfs of ``request.param`` bytes (root only; skipped with the reason elsewhere)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip() or 'mount failed'}); needs root")
    yield mount_point
    # Lazy: a writer that failed may still hold its file open until garbage collection.
    subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


@pytest.mark.parametrize("small_disk", [256 * 1024], indirect=True)
def test_full_disk_is_one_clear_error_and_no_partial_file(small_disk, shipped_model):
    from edgeresnext.models import save_checkpoint

    with pytest.raises(StorageError, match=r"big\.bin: no space left on device"):
        write_bytes_atomic(small_disk / "big.bin", b"\0" * (1 << 20))
    for suffix in (".safetensors", ".pt"):  # safetensors' and torch's own writers, not ours
        with pytest.raises(StorageError, match=rf"model{suffix}: no space left on device"):
            save_checkpoint(small_disk / f"model{suffix}", shipped_model.float(), shipped_model.meta)
    assert list(small_disk.iterdir()) == [], "a partial file was left"


@pytest.mark.parametrize("small_disk", [720 * 1024], indirect=True)
def test_build_on_a_full_disk_stops_with_one_line_and_leaves_no_partial_artifact(small_disk, target_yaml):
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeresnext.cli",
            "-q",
            "build",
            "--target",
            str(target_yaml),
            "--out",
            str(small_disk),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 2, process.stdout + process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("edgeresnext build: error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0], process.stderr
    root = small_disk / NAME
    files = _files(root)
    assert not [name for name in files if ".tmp-" in name], files
    # Every file is either the resolved config or a finished stage's output listed (with its sha256) in stage.json.
    for name, path in files.items():
        if name == "config.json" or name.endswith("stage.json"):
            continue
        record = json.loads((path.parent / "stage.json").read_text())
        assert record["outputs"][path.name] == sha256_file(path), name


@pytest.mark.parametrize("small_disk", [64 * 1024], indirect=True)
def test_calibration_set_on_a_full_disk_is_one_line_and_leaves_nothing(small_disk, capsys):
    from edgeresnext.cli import main

    assert main(["-q", "data", "--out", str(small_disk / "calib"), "--count", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgeresnext data: error:") and "calib: no space left on device" in err, err
    assert len(err.splitlines()) == 1
    assert list(small_disk.iterdir()) == [], "a partial calibration set was left"


# Bigger than LOW_SPACE_BYTES: on such a disk the free space left after a failed write does not give the cause
# away, and writers that drop errno and delete their partial file (safetensors, OpenVINO) must still be told.
@pytest.mark.parametrize("small_disk", [4 << 20], indirect=True)
def test_writers_that_drop_errno_on_a_4mb_disk_give_one_clear_error(small_disk):
    import numpy as np
    import openvino as ov
    import torch
    from onnx import TensorProto, helper, numpy_helper
    from onnx import save as onnx_save

    from edgeresnext.backends.openvino import _save_ir_atomic
    from edgeresnext.models import save_checkpoint
    from edgeresnext.models.checkpoints import ModelMeta

    layer = torch.nn.Linear(1500, 1500)  # 9 MB of float32 weights
    meta = ModelMeta(arch="linear", num_classes=1500, in_channels=1, input_size=1)
    with pytest.raises(StorageError, match=r"model\.safetensors: no space left on device \(.*bytes free.*needed"):
        save_checkpoint(small_disk / "model.safetensors", layer, meta)
    weights = numpy_helper.from_array(np.ones((1500, 1500), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1500])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1500])],
        [weights],
    )
    source = small_disk.parent / "big.onnx"
    onnx_save(helper.make_model(graph), str(source))
    with pytest.raises(StorageError, match=r"model\.bin: no space left on device .*basic_ios"):
        _save_ir_atomic(ov.convert_model(str(source)), small_disk / "model.xml")
    assert list(small_disk.iterdir()) == [], "a partial file was left"


def test_disk_full_is_recognised_from_a_writers_text_or_a_short_disk(tmp_path):
    """Where no small tmpfs can be mounted: the same recognition on the errors those writers raise."""
    from safetensors import SafetensorError

    from edgeresnext.atomic import free_bytes, storage_error

    said = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    found = storage_error(tmp_path / "model.safetensors", said)
    assert found is not None and str(found).startswith(f"{tmp_path / 'model.safetensors'}: no space left on device")
    # OpenVINO's text says nothing: a short disk (less free than the weights) is what gives the cause.
    left = free_bytes(tmp_path)
    opaque = RuntimeError("basic_ios::clear: iostream error")
    assert storage_error(tmp_path / "model.bin", opaque, needed=left + 1) is not None
    assert storage_error(tmp_path / "model.bin", opaque, needed=1) is None, "a disk with room: not disk-full"
    assert storage_error(tmp_path / "model.bin", ValueError("bad shape")) is None
