"""Training: a run killed after epoch 1 resumes from its checkpoint and ends where an uninterrupted run ends;
image folders train through DataLoader workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from data_helpers import FMNIST_FOLDER_PREPROCESS, make_cifar10_root, make_image_folder

from edgeresnext.config import TrainConfig
from edgeresnext.models import load_checkpoint, read_checkpoint
from edgeresnext.train import fit


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return make_cifar10_root(tmp_path_factory.mktemp("cifar"), train=128, test=40)


def _train_args(root: Path, out: Path) -> list[str]:
    return [
        "train",
        "--model",
        "resnext11_4x8d",
        "--dataset",
        "cifar10",
        "--data-root",
        str(root),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--threads",
        "1",
        "--seed",
        "0",
        "--out",
        str(out),
    ]


def _history(out: Path) -> list[dict]:
    try:
        return json.loads((out / "history.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def test_killed_run_resumes_from_epoch_1_and_matches_an_uninterrupted_run(cifar_root, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "edgeresnext.cli", "-q", *_train_args(cifar_root, out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while not _history(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # a crash, not a clean exit
    process.wait()
    first = _history(out)
    assert len(first) == 1, f"expected to kill during epoch 2, history: {first}"
    assert read_checkpoint(out / "last.pt").training["epoch"] == 1
    assert not (out / "model.safetensors").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "edgeresnext.cli", *_train_args(cifar_root, out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "from epoch 1/2" in resumed.stderr
    history = _history(out)
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[0] == first[0]

    threads = torch.get_num_threads()
    try:
        straight = fit(
            TrainConfig(
                arch="resnext11_4x8d",
                dataset="cifar10",
                data_root=str(cifar_root),
                out_dir=str(tmp_path / "straight"),
                epochs=2,
                batch_size=32,
                lr=0.05,
                seed=0,
                threads=1,
                progress=False,
            )
        )
    finally:
        torch.set_num_threads(threads)
    a = load_checkpoint(out / "model.safetensors").state_dict()
    b = load_checkpoint(straight).state_dict()
    # Same CPU, same single thread: bit-identical here (all 80 tensors). Not asserted bit for bit: MKL's GEMM may take
    # alignment-dependent paths (Intel's CNR note) and two processes place buffers differently. A resume that loses
    # the optimizer or RNG state changes the weights by orders of magnitude more.
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    meta = read_checkpoint(straight).meta
    assert meta.dataset == "cifar10" and meta.in_channels == 3 and meta.preprocess.channels == "RGB"
    assert meta.class_names[0] == "airplane" and 0.0 <= meta.metrics["test_top1"] <= 1.0


def test_image_folder_trains_with_its_preprocess_json(tmp_path):
    root = make_image_folder(tmp_path / "photos", count=100, preprocess=FMNIST_FOLDER_PREPROCESS)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeresnext.cli",
            "-q",
            "train",
            "--dataset",
            str(root),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    meta = read_checkpoint(tmp_path / "run" / "model.safetensors").meta
    assert meta.in_channels == 1 and meta.input_size == 28
    assert meta.preprocess.to_dict() == {**FMNIST_FOLDER_PREPROCESS, "layout": "NCHW"}
    assert meta.class_names == sorted(p.name for p in root.iterdir() if p.is_dir())


def test_batch_larger_than_the_data_is_a_clear_error(cifar_root, tmp_path):
    from edgeresnext.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_size=512 exceeds the 100 training images"):
        fit(
            TrainConfig(
                dataset="cifar10",
                data_root=str(cifar_root),
                out_dir=str(tmp_path),
                epochs=1,
                batch_size=512,
                limit_train=100,
                progress=False,
            )
        )
