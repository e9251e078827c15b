"""`edgeresnext compile` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from edgeresnext.cli import main

TARGETS = Path(__file__).resolve().parents[2] / "targets"


def test_compile_cpu_target_from_a_qdq_onnx(qdq_onnx, tmp_path, capsys):
    assert (
        main(["-q", "compile", "--target", str(TARGETS / "cpu.yaml"), "--onnx", str(qdq_onnx), "--out", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "cpu: openvino int8 ir" in out and "model.xml" in out
    artifact = json.loads((tmp_path / "artifact.json").read_text())
    assert artifact["kind"] == "ir" and Path(artifact["path"]).is_file()


def test_compile_jetson_prints_the_device_commands(qdq_onnx, tmp_path, capsys):
    kit = tmp_path / "jetson-kit"
    assert (
        main(["-q", "compile", "--target", str(TARGETS / "jetson.yaml"), "--onnx", str(qdq_onnx), "--out", str(kit)])
        == 0
    )
    out = capsys.readouterr().out
    assert "no engine built here" in out and f"edgeresnext compile --on-device {kit}" in out
    assert (kit / "build_engine.sh").is_file()


def test_compile_errors_are_one_line_and_exit_2(fp32_onnx, tmp_path, capsys):
    assert (
        main(["compile", "--target", str(TARGETS / "cpu.yaml"), "--onnx", str(fp32_onnx), "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("edgeresnext compile: error: ") and "no QuantizeLinear" in err
    assert not (tmp_path / "model.xml").exists()
    assert main(["compile", "--on-device", str(tmp_path)]) == 2
    assert "not a TensorRT build kit" in capsys.readouterr().err
