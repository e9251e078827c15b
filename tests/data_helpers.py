"""Small real datasets written to disk by tests: CIFAR-10 binary batches and image folders, made from
Fashion-MNIST images (CIFAR-10 cannot be downloaded here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from edgeresnext.data import load_dataset
from edgeresnext.data.cifar10 import FOLDER, write_cifar10_folder


def fmnist_as_cifar(count: int, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``count`` Fashion-MNIST images padded to 32x32 and tinted to RGB (uint8 NHWC) with their labels."""
    data = load_dataset("fashion-mnist", split=split)
    gray = np.pad(data.images[:count], ((0, 0), (2, 2), (2, 2)))
    # Different per-channel gains so the channel order is checked, not just copied.
    rgb = np.stack([gray, (gray * 0.7).astype(np.uint8), (gray * 0.4).astype(np.uint8)], axis=-1)
    return rgb, data.labels[:count]


def make_cifar10_root(root: Path, train: int = 256, test: int = 100) -> Path:
    """``root/cifar-10-batches-bin/`` with the six binary batches and batches.meta.txt in the real format."""
    images, labels = fmnist_as_cifar(train + test)
    write_cifar10_folder(root / FOLDER, "train", images[:train], labels[:train])
    write_cifar10_folder(root / FOLDER, "test", images[train:], labels[train:])
    return root


def make_image_folder(root: Path, count: int = 60, preprocess: dict | None = None) -> Path:
    """``root/<class>/<n>.png`` from Fashion-MNIST test images (grayscale 28x28), optional preprocess.json."""
    data = load_dataset("fashion-mnist", split="test")
    for index in range(count):
        name = data.class_names[data.labels[index]].replace("/", "-")
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[index]).save(folder / f"{index:04d}.png")
    if preprocess is not None:
        (root / "preprocess.json").write_text(json.dumps(preprocess))
    return root


FMNIST_FOLDER_PREPROCESS = {"channels": "L", "resize": 28, "crop": 28, "mean": [0.286], "std": [0.353]}
