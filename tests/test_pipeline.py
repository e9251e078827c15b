"""The build pipeline as a user runs it: stage cache hits, invalidation per stage, lock, summary.

One small real build (shipped model, 200 validation images, 60 calibration images) is made once per session
and copied for each test that changes something, so every test sees a finished build to start from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import write_small_target as _write_target

from edgeresnext.config import load_target
from edgeresnext.pipeline import STAGES, build

REPO = Path(__file__).resolve().parents[1]


def _stage_records(root: Path) -> dict[str, dict]:
    records = {}
    for name in STAGES:
        path = root / ("bundle.stage.json" if name == "bundle" else f"{name}/stage.json")
        if path.is_file():
            records[name] = json.loads(path.read_text())
    return records


def _copy_build(first_build, tmp_path: Path, calib: Path | None = None, **overrides: object):
    yaml_path, build_root, _summary = first_build
    shutil.copytree(build_root, tmp_path / "build")
    source = yaml.safe_load(yaml_path.read_text())
    calib = calib or Path(source["quant"]["calib_dir"])
    new_yaml = _write_target(tmp_path, calib, Path(source["model"]["checkpoint"]), **overrides)
    return load_target(new_yaml), tmp_path / "build"


@pytest.mark.promise("README.md", "leaves `build/cpu/`: one folder per stage")
def test_first_build_runs_every_stage_and_passes(first_build) -> None:
    _yaml, root, summary = first_build
    assert summary.ok, summary.render()
    assert [s.name for s in summary.stages] == list(STAGES)
    assert not any(s.skipped for s in summary.stages)
    target_root = root / "cpu-small"
    for relative in (
        "model/model.safetensors",
        "export/model_fp32.onnx",
        "quantize/model.qdq.onnx",
        "lint/lint.json",
        "compile/model.xml",
        "compile/model.bin",
        "validate/report.json",
        "validate/report.html",
        "bundle/manifest.json",
        "config.json",
    ):
        assert (target_root / relative).is_file(), relative
    assert not list(target_root.rglob(".*.tmp-*")), "temporary files left behind"
    text = summary.render()
    assert "openvino-int8" in text and "gate max_top1_drop: pass" in text
    # The INT8 IR is timed against an OpenVINO FP32 IR compiled alike (the report's baseline/), not PyTorch eager.
    report = summary.report
    int8, fp32 = report.result("openvino-int8"), report.result("openvino-fp32")
    assert report.primary == "openvino-int8" and int8.speedup_baseline == "openvino-fp32"
    assert int8.speedup == fp32.p50_ms / int8.p50_ms
    assert fp32.info["hint"] == int8.info["hint"] and fp32.info["by_precision"].keys() <= {"f32", "i32"}
    assert (target_root / "validate" / "baseline" / "model.xml").is_file()
    assert f"x{int8.speedup:.2f} vs OpenVINO FP32" in text
    u = int8.uncertainty
    assert f"drop {u.drop * 100:+.2f} pt [95 % ≤ {u.drop_upper_bound * 100:.2f}]" in text
    manifest = json.loads((target_root / "bundle" / "manifest.json").read_text())
    validation = manifest["validation"]
    assert validation["top1_drop_upper_bound"] == u.drop_upper_bound and validation["confidence"] == 0.95
    assert validation["speedup_baseline"] == "openvino-fp32" and validation["discordant_images"] == u.discordant


def test_second_build_skips_every_stage(first_build, tmp_path: Path) -> None:
    target, root = _copy_build(first_build, tmp_path)
    before = _stage_records(root / "cpu-small")
    summary = build(target, out_root=root, progress=False)
    assert [s.name for s in summary.stages if not s.skipped] == []
    assert _stage_records(root / "cpu-small") == before


def test_a_build_that_passes_signs_its_bundle_and_one_that_fails_does_not(first_build, tmp_path: Path) -> None:
    from bundle_helpers import key_pair

    from edgeresnext.bundle.signature import check_signature
    from edgeresnext.cli import main

    private, public = key_pair(tmp_path, "host")
    target, root = _copy_build(first_build, tmp_path / "passes")
    summary = build(target, out_root=root, progress=False, sign_key=private)
    assert summary.ok and not [s.name for s in summary.stages if not s.skipped]  # a cached build is signed too
    bundle = root / "cpu-small" / "bundle"
    note = f"bundle: signed with {private}: {bundle}/bundle.sig covers every file of it, manifest.json included"
    assert note in summary.notes
    check_signature(bundle, public)
    # Agreement with FP32 on every one of 200 images is more than INT8 gives here: the gate fails, nothing is signed.
    target, root = _copy_build(first_build, tmp_path / "fails", gates__min_agreement=1.0)
    summary = build(target, out_root=root, progress=False, sign_key=private)
    assert not summary.ok and not (root / "cpu-small" / "bundle" / "bundle.sig").exists()
    assert f"bundle: NOT signed: the build failed its gates ({root / 'cpu-small' / 'bundle'} is not signed with " in (
        " ".join(summary.notes)
    )
    # A key that cannot sign stops the build before its first stage.
    command = ["build", "--target", str(tmp_path / "passes" / "cpu-small.yaml"), "--out", str(tmp_path / "other")]
    assert main([*command, "--sign-key", str(tmp_path / "none.key")]) == 2
    assert not (tmp_path / "other").exists()


def test_changed_validation_setting_reruns_only_validate_and_bundle(first_build, tmp_path: Path) -> None:
    target, root = _copy_build(first_build, tmp_path, validate__latency_runs=6)
    summary = build(target, out_root=root, progress=False)
    rerun = [s.name for s in summary.stages if not s.skipped]
    assert rerun == ["validate", "bundle"]
    report = json.loads((root / "cpu-small" / "validate" / "report.json").read_text())
    assert report["protocol"]["runs"] == 6


def test_changed_calibration_set_reruns_quantize_and_what_follows(first_build, tmp_path: Path) -> None:
    from edgeresnext.data.calibration import write_calibration_set

    calib = tmp_path / "calib-other"
    write_calibration_set(calib, count=60, seed=7)
    target, root = _copy_build(first_build, tmp_path, calib=calib)
    events: list[str] = []
    summary = build(target, out_root=root, progress=False, say=events.append)
    assert [s.name for s in summary.stages if s.skipped] == ["model", "export"]
    assert [s.name for s in summary.stages if not s.skipped] == ["quantize", "lint", "compile", "validate", "bundle"]
    # The rerun names what changed: the calibration folder key, then the images themselves.
    reason = summary.stage("quantize").reason
    assert reason.startswith("quant.calib_dir ") and "calib-other" in reason and "more changes" in reason
    assert any(e.startswith("[3/7] quantize: rerunning: quant.calib_dir ") for e in events), events
    assert "  quantize " in summary.render() and "rerun: quant.calib_dir " in summary.render()


def test_corrupted_stage_output_is_detected_and_rebuilt(first_build, tmp_path: Path) -> None:
    target, root = _copy_build(first_build, tmp_path)
    ir = root / "cpu-small" / "compile" / "model.bin"
    original = ir.read_bytes()
    ir.write_bytes(original[:-16] + bytes(16))
    summary = build(target, out_root=root, progress=False)
    assert summary.stage("compile") is not None and not summary.stage("compile").skipped
    assert summary.stage("compile").reason == "output model.bin damaged"
    assert ir.read_bytes() == original
    assert next(s.name for s in summary.stages if not s.skipped) == "compile"


def test_concurrent_builds_of_one_target_wait_for_each_other(first_build, tmp_path: Path) -> None:
    _, root = _copy_build(first_build, tmp_path, validate__latency_runs=7)
    yaml_path = tmp_path / "cpu-small.yaml"
    command = [sys.executable, "-m", "edgeresnext.cli", "-q", "build", "--target", str(yaml_path), "--out", str(root)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    # Exactly one of them did the work; the other found it done after waiting for the lock.
    reran = [out.count("validate: rerunning: validate.latency_runs 5 -> 7; done in") for out in outputs]
    assert sorted(reran) == [0, 1], outputs
    from edgeresnext.bundle import verify_bundle

    verify_bundle(root / "cpu-small" / "bundle")


def test_unknown_target_name_lists_the_known_ones(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgeresnext.cli", "build", "--target", "nosuch"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unknown target 'nosuch'" in result.stderr and "cpu" in result.stderr


# --------------------------------------------------------------------------------------------- why a stage reruns
def _stage(folder: Path, config: dict, files: list[Path]):
    from edgeresnext.atomic import write_text_atomic
    from edgeresnext.pipeline.cache import run_stage

    def produce(out: Path) -> dict:
        write_text_atomic(out / "model.qdq.onnx", "".join(f.read_text() for f in files))
        return {}

    return run_stage(folder, "quantize", config, files, produce)


def test_a_rerun_names_the_changed_file_key_package_or_output(tmp_path: Path, monkeypatch) -> None:
    from edgeresnext.pipeline import cache

    monkeypatch.chdir(tmp_path)
    images = []
    for name in ("03_dress/00012.png", "03_dress/00013.png", "07_sneaker/00001.png"):
        path = Path("calib_data") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
        images.append(path)
    folder, config = Path("build/quantize"), {"quant": {"subset_size": 300, "method": "ptq"}}
    first = _stage(folder, config, images)
    assert not first.skipped and first.reason is None  # a first run has nothing to explain
    assert _stage(folder, config, images).skipped

    images[0].write_text("another image")
    assert _stage(folder, config, images).reason == "calib_data/03_dress/00012.png changed"
    assert _stage(folder, {"quant": {"subset_size": 200, "method": "ptq"}}, images).reason == (
        "quant.subset_size 300 -> 200"
    )
    extra = Path("calib_data/09_ankle_boot/00002.png")
    extra.parent.mkdir()
    extra.write_text("new")
    assert _stage(folder, config, [*images[1:], extra]).reason == (
        "quant.subset_size 200 -> 300, calib_data/09_ankle_boot/00002.png added, calib_data/03_dress/00012.png removed"
    )

    _stage(folder, config, images)

    # A package upgrade cannot happen inside a test: the versions the stage cache reads are swapped instead.
    real = cache.package_versions()
    monkeypatch.setattr(cache, "package_versions", lambda: {**real, "openvino": "2099.1.0"})
    assert _stage(folder, config, images).reason == f"openvino {real['openvino']} -> 2099.1.0"
    monkeypatch.setattr(cache, "package_versions", lambda: real)
    assert _stage(folder, config, images).reason == f"openvino 2099.1.0 -> {real['openvino']}"

    (folder / "model.qdq.onnx").write_text("flipped")
    assert _stage(folder, config, images).reason == "output model.qdq.onnx damaged"
    (folder / "model.qdq.onnx").unlink()
    assert _stage(folder, config, images).reason == "output model.qdq.onnx missing"


def test_a_stage_json_without_per_input_records_reruns_and_says_why(tmp_path: Path) -> None:
    """stage.json from before per-input records: same inputs, but the stage cannot tell, so it reruns once."""
    image = tmp_path / "image.png"
    image.write_text("pixels")
    folder, config = tmp_path / "quantize", {"quant": {"subset_size": 300}}
    _stage(folder, config, [image])
    record = json.loads((folder / "stage.json").read_text())
    del record["input_sha256"]
    (folder / "stage.json").write_text(json.dumps(record))
    rerun = _stage(folder, config, [image])
    assert not rerun.skipped and "no per-input record" in rerun.reason and "treated as changed" in rerun.reason
    assert "input_sha256" in json.loads((folder / "stage.json").read_text())
    assert _stage(folder, config, [image]).skipped


def test_the_build_summary_says_when_the_set_is_too_small_to_prove_a_gate(tmp_path: Path) -> None:
    from validate_helpers import validate_outcomes

    from edgeresnext.pipeline import BuildContext, BuildSummary, StageResult

    report = validate_outcomes(121, 0, 0, 0, max_top1_drop=0.003)
    context = BuildContext(target=load_target(REPO / "targets" / "cpu.yaml"), root=tmp_path)
    context.done["validate"] = StageResult("validate", tmp_path / "report", {}, False, 1.0)
    text = BuildSummary(context=context, report=report).render()
    # gates.unproven: warn (the default): the build goes on, and says the gate is not proven and why.
    assert "build cpu: OK" in text
    assert (
        "gate max_top1_drop: NOT PROVEN (max_top1_drop: NOT PROVEN: 121 images cannot prove a 0.3 pt drop at 95 %"
        in text
    )
    assert "1,210 images needed" in text
    assert "openvino-int8                top-1 100.00 %  drop +0.00 pt [95 % ≤ 2.94]" in text


# What a row is, apart from how fast it ran: every field `edgeresnext validate` must reproduce from the build.
SAME_FIELDS = ("name", "backend", "precision", "status", "size_bytes", "top1", "top5", "top1_drop", "agreement")
SAME_FIELDS += ("cosine_mean", "cosine_min", "max_abs_error", "uncertainty", "speedup_baseline", "skip_reason")


def test_validate_command_on_a_finished_build_gives_the_build_s_own_rows(first_build, tmp_path: Path) -> None:
    """`edgeresnext validate --build` chooses what to validate as the build's validate stage did (one chooser):
    the same rows, in the same order, under the same names, with the same figures (timings aside), and the same
    artifact judged by the gates."""
    from edgeresnext.cli import main

    yaml_path, root, _summary = first_build
    out = tmp_path / "again"
    args = ["--quiet", "validate", "--target", str(yaml_path), "--build", str(root), "--out", str(out), "--no-html"]
    assert main(args) == 0
    built = json.loads((root / "cpu-small" / "validate" / "report.json").read_text())
    again = json.loads((out / "report.json").read_text())
    assert [a["name"] for a in again["artifacts"]] == [a["name"] for a in built["artifacts"]]
    assert [a["name"] for a in built["artifacts"]] == [
        "pytorch-fp32",
        "onnx-fp32 (onnxruntime)",
        "qdq-int8 (onnxruntime)",
        "openvino-fp32",
        "openvino-int8",
    ]
    for row_built, row_again in zip(built["artifacts"], again["artifacts"], strict=True):
        for key in SAME_FIELDS:
            assert row_again.get(key) == row_built.get(key), (row_built["name"], key)
        # The float baseline is compiled anew beside the new report: the same files, in another folder.
        names = [[(Path(f["path"]).name, f["bytes"]) for f in row["files"]] for row in (row_built, row_again)]
        assert names[0] == names[1], row_built["name"]
    assert again["primary"] == built["primary"] == "openvino-int8"
    accuracy_gates = [(g["gate"], g["value"], g["passed"]) for g in built["gates"] if g["gate"] != "max_latency_ms"]
    assert [(g["gate"], g["value"], g["passed"]) for g in again["gates"] if g["gate"] != "max_latency_ms"] == (
        accuracy_gates
    )


def test_validate_command_on_a_folder_without_a_build_names_the_missing_file(tmp_path: Path, capsys) -> None:
    from edgeresnext.cli import main

    (tmp_path / "build" / "cpu").mkdir(parents=True)
    assert main(["--quiet", "validate", "--target", "cpu", "--build", str(tmp_path / "build")]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors: not found" in err and "edgeresnext build --target cpu" in err


def test_validate_command_reads_the_build_s_own_target_and_its_flags_override_it(first_build, tmp_path: Path) -> None:
    """A finished build is validated as it was built (build/<target>/config.json: a user's photo folder, limits,
    gates), even when the target file has changed since; a flag still overrides it."""
    from edgeresnext.cli import main

    yaml_path, root, _summary = first_build
    edited = tmp_path / "cpu-small.yaml"
    edited.write_text(yaml_path.read_text().replace("limit: 200", "limit: 120"))
    assert "limit: 120" in edited.read_text()
    args = ["--quiet", "validate", "--target", str(edited), "--build", str(root), "--no-html", "--runs", "2"]
    assert main([*args, "--out", str(tmp_path / "as-built")]) == 0
    assert json.loads((tmp_path / "as-built" / "report.json").read_text())["data"]["count"] == 200
    # 50 images cannot prove this target's 5 pt gate (70 needed): it passes on the measured drop, NOT PROVEN, exit 3
    assert main([*args, "--out", str(tmp_path / "limited"), "--limit", "50"]) == 3
    assert json.loads((tmp_path / "limited" / "report.json").read_text())["data"]["count"] == 50


@pytest.mark.promise("docs/validation.md", "NOT PROVEN stops a pipeline")
def test_build_exit_code_says_what_was_proven(first_build, tmp_path: Path, capsys) -> None:
    """`edgeresnext build` exits 0 when every gate is proven, 3 when every gate passed but one only on its measured
    value (NOT PROVEN: 200 images cannot prove 99 % agreement, 299 can), 1 with gates.unproven: fail. Exit 3 is not
    a pass to a script (any non-zero fails a CI step); the summary and stderr say why."""
    from edgeresnext.cli import main

    _target, root = _copy_build(first_build, tmp_path)
    command = ["--quiet", "build", "--out", str(root)]
    target = tmp_path / "cpu-small.yaml"
    assert main([*command, "--target", str(target)]) == 0  # max_top1_drop 5 pt: proven on 200 images (70 needed)
    data = yaml.safe_load(target.read_text())
    data["gates"]["min_agreement"] = 0.99
    target.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main([*command, "--target", str(target)]) == 3
    out, err = capsys.readouterr()
    assert "build cpu-small: OK, NOT PROVEN (exit 3: a gate passed unproven)" in out
    assert "gate min_agreement: NOT PROVEN (min_agreement: NOT PROVEN: 200 images cannot prove 99.00 % agreement" in out
    assert "edgeresnext build: NOT PROVEN: every gate passed on its measured value" in err and "[ $? -eq 3 ]" in err
    data["gates"]["unproven"] = "fail"
    target.write_text(yaml.safe_dump(data))
    assert main([*command, "--target", str(target)]) == 1
