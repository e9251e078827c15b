"""Shared fixtures: the shipped Fashion-MNIST model, real Fashion-MNIST images, a real calibration folder.

Tests use small real models and real data (Debian's dataset-fashion-mnist, installed by .ci/run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import write_small_target

from edgeresnext.data import ArrayDataset, load_dataset


@pytest.fixture(scope="session")
def fmnist_test() -> ArrayDataset:
    """The first 512 images of the Fashion-MNIST test split (all classes present)."""
    data = load_dataset("fashion-mnist", split="test")
    return ArrayDataset(
        images=data.images[:512],
        labels=data.labels[:512],
        class_names=data.class_names,
        preprocess=data.preprocess,
        name="fashion-mnist/test[:512]",
    )


@pytest.fixture(scope="session")
def fmnist_batch(fmnist_test: ArrayDataset) -> np.ndarray:
    """64 preprocessed test images, float32 NCHW (1x28x28)."""
    return np.stack([fmnist_test.preprocess.image_to_array(img) for img in fmnist_test.images[:64]])


@pytest.fixture(scope="session")
def shipped_checkpoint() -> Path:
    from edgeresnext.models.shipped import resolve_checkpoint

    return resolve_checkpoint("shipped:fashion-mnist")


@pytest.fixture(scope="session")
def shipped_model(shipped_checkpoint: Path):
    from edgeresnext.models import load_checkpoint

    return load_checkpoint(shipped_checkpoint)


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real calibration folder: 100 class-balanced Fashion-MNIST training images as PNG."""
    from edgeresnext.data.calibration import write_calibration_set

    folder = tmp_path_factory.mktemp("calib") / "calib_data"
    write_calibration_set(folder, count=100, seed=0)
    return folder


@pytest.fixture(scope="session")
def small_calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeresnext.data.calibration import write_calibration_set

    folder = tmp_path_factory.mktemp("pipeline-calib") / "calib"
    write_calibration_set(folder, count=60, seed=1)
    return folder


@pytest.fixture(scope="session")
def first_build(tmp_path_factory: pytest.TempPathFactory, small_calib: Path, shipped_checkpoint: Path):
    """(target yaml, build root, summary) of one complete build (build root / "cpu-small"): the pipeline's tests
    copy it, the docs' tested command blocks run on it."""
    from edgeresnext.config import load_target
    from edgeresnext.pipeline import build

    folder = tmp_path_factory.mktemp("pipeline")
    yaml_path = write_small_target(folder, small_calib, shipped_checkpoint)
    summary = build(load_target(yaml_path), out_root=folder / "build", progress=False)
    return yaml_path, folder / "build", summary
