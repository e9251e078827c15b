"""The command line as a user runs it: help, light imports, and one clear line + exit code 2 on bad input."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_helpers import make_cifar10_root

from edgeresnext.models import ARCHS, create

HEAVY = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "edgeresnext.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("train", "data", "inspect", "build"):
        assert name in result.stdout
    assert run_cli("train", "--help").returncode == 0


def test_package_and_cli_import_without_heavy_modules():
    code = (
        "import sys, edgeresnext, edgeresnext.cli, edgeresnext.data, edgeresnext.errors;"
        "edgeresnext.cli.make_parser();"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported at package import: {result.stdout.strip()}"


def test_inspect_lists_every_model():
    result = run_cli("inspect", "--models")
    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == sorted(ARCHS)


def test_unknown_arch_exits_2_naming_it(tmp_path):
    torch.save(create("resnext11_4x8d", num_classes=10, in_channels=1).state_dict(), tmp_path / "weights.pth")
    result = run_cli("-q", "inspect", str(tmp_path / "weights.pth"), "--model", "resnext12_4x8d")
    assert_one_line_error(result, "unknown arch 'resnext12_4x8d'", "resnext11_4x8d")


@pytest.mark.parametrize("flag", ["--model", "--arch"])
def test_bare_checkpoint_inspects_with_its_model(tmp_path, flag):
    """``--model`` names the model on every command; ``--arch``, its older name, still works."""
    torch.save(create("resnext11_4x8d", num_classes=4, in_channels=1).state_dict(), tmp_path / "weights.pth")
    result = run_cli("-q", "inspect", str(tmp_path / "weights.pth"), flag, "resnext11_4x8d")
    assert result.returncode == 0, result.stderr
    assert '"num_classes": 4' in result.stdout


@pytest.mark.parametrize("command", ["build", "build-all", "quantize", "export", "inspect", "train"])
def test_one_flag_names_the_model_in_help(command):
    """Every command that takes a model calls its flag ``--model``; the old ``--arch`` is not offered."""
    from edgeresnext.cli import make_parser

    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices[command].format_help()
    assert "--model NAME" in text and "--arch" not in text


def test_corrupt_checkpoint_exits_2_naming_the_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    assert_one_line_error(run_cli("-q", "inspect", str(path)), str(path))


def test_missing_data_folder_exits_2_and_writes_nothing(tmp_path):
    missing = tmp_path / "photos"
    result = run_cli("-q", "data", "--dataset", str(missing), "--out", str(tmp_path / "calib"))
    assert_one_line_error(result, str(missing), "image folder not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unknown_dataset_exits_2(tmp_path):
    result = run_cli("-q", "data", "--dataset", "imagenet", "--out", str(tmp_path / "calib"))
    assert_one_line_error(result, "unknown dataset 'imagenet'", "cifar10")


@pytest.mark.parametrize("count", [20])
def test_data_writes_a_balanced_calibration_set_from_cifar10(tmp_path, count):
    root = make_cifar10_root(tmp_path / "cifar", train=200, test=20)
    result = run_cli(
        "-q",
        "data",
        "--dataset",
        "cifar10",
        "--data-root",
        str(root),
        "--count",
        str(count),
        "--out",
        str(tmp_path / "calib"),
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {count} calibration images (2 per class)" in result.stdout
    folders = sorted(p for p in (tmp_path / "calib").iterdir() if p.is_dir())
    assert [p.name for p in folders][:2] == ["00_airplane", "01_automobile"]
    assert all(len(list(p.glob("*.png"))) == 2 for p in folders)
    assert (tmp_path / "calib" / "README.md").is_file()


@pytest.mark.parametrize(
    ("args", "flag_message"),
    [
        # Target keys set on the command line: the target's own schema checks them, the error names the flag.
        (
            ("quantize", "shipped:fashion-mnist", "--subset-size", "0", "--out", "q.onnx"),
            "--subset-size must be >= 1, got 0",
        ),
        (("validate", "--target", "cpu", "--limit", "0"), "--limit must be >= 1, got 0"),
        (("validate", "--target", "cpu", "--runs", "0"), "--runs must be >= 1, got 0"),
        (("build", "--target", "cpu", "--calib", "no-such-folder"), "--calib no-such-folder: no such file or folder"),
        (("build", "--target", "cpu", "--data", "no-such-folder"), "--data no-such-folder: no such file or folder"),
        # Plain arguments: argparse checks them, in one line too.
        (("train", "--epochs", "0"), "argument --epochs: must be >= 1, got 0"),
        (("train", "--lr", "-1"), "argument --lr: must be a number > 0, got -1"),
        (("bundle", "predict", "b", "x.png", "--top-k", "0"), "argument --top-k: must be >= 1, got 0"),
        (("quantize", "--placement", "middle"), "argument --placement: invalid choice: 'middle'"),
    ],
)
def test_a_bad_command_line_value_is_one_line_naming_the_flag(tmp_path, args, flag_message):
    args = tuple(str(tmp_path / a) if a == "q.onnx" else a for a in args)
    result = run_cli(*args, cwd=Path(__file__).resolve().parents[1])
    assert_one_line_error(result, flag_message)
    assert "targets/cpu.yaml" not in result.stderr  # the value came from the command line, not the file
    assert not (tmp_path / "q.onnx").exists()
