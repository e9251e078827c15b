"""A tiny ResNeXt trained for a few seconds on real Fashion-MNIST images, so quantization tests measure
real accuracy without waiting for the shipped model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeresnext.data import ArrayDataset, load_dataset
from edgeresnext.models.checkpoints import ModelMeta
from edgeresnext.models.resnext import ResNeXt, ResNeXtConfig

# layers (1,1,1), 4 groups of 4 channels in the first stage: TensorRT's multiple-of-4 rule holds.
TINY = ResNeXtConfig(layers=(1, 1, 1), groups=4, width_per_group=32, stem="cifar", planes=(8, 16, 32), stem_width=16)


@pytest.fixture(scope="session")
def fmnist_train_subset() -> ArrayDataset:
    data = load_dataset("fashion-mnist", split="train")
    return ArrayDataset(
        images=data.images[-2048:],
        labels=data.labels[-2048:],
        class_names=data.class_names,
        preprocess=data.preprocess,
        name="fashion-mnist/train[-2048:]",
    )


@pytest.fixture(scope="session")
def tiny_model(fmnist_train_subset: ArrayDataset):
    """Tiny ResNeXt (about 20k parameters) after one quick Adam epoch on 2048 training images (~55 % top-1)."""
    torch.manual_seed(0)
    data = fmnist_train_subset
    model = ResNeXt(TINY, num_classes=10, in_channels=1)
    x = torch.from_numpy(np.stack([data.preprocess.image_to_array(i) for i in data.images]))
    y = torch.from_numpy(data.labels.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _epoch in range(1):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 32):
            index = order[start : start + 32]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    model.eval()
    model.meta = ModelMeta(
        arch="tiny",
        num_classes=10,
        in_channels=1,
        preprocess=data.preprocess,
        class_names=list(data.class_names),
        input_size=28,
        dataset="fashion-mnist",
    )
    return model


@pytest.fixture(scope="session")
def calib_images(fmnist_train_subset: ArrayDataset) -> np.ndarray:
    """100 preprocessed training images (never the test images used to measure accuracy)."""
    return np.stack([fmnist_train_subset.preprocess.image_to_array(i) for i in fmnist_train_subset.images[:100]])


@pytest.fixture(scope="session")
def test_images(fmnist_test: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([fmnist_test.preprocess.image_to_array(i) for i in fmnist_test.images])
    return x, fmnist_test.labels
