"""Datasets, preprocessing and calibration sampling (numpy + Pillow; torch only in ``loaders``)."""

from __future__ import annotations

import os

from edgeresnext.data.fashion_mnist import ArrayDataset, load_fashion_mnist
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import DataError

DATASETS = ("fashion-mnist",)


def load_dataset(name: str, split: str = "train", root: str | os.PathLike[str] | None = None) -> ArrayDataset:
    """A named dataset split as an :class:`ArrayDataset`."""
    if name == "fashion-mnist":
        return load_fashion_mnist(split, root=root)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


__all__ = ["DATASETS", "ArrayDataset", "Preprocess", "load_dataset", "load_fashion_mnist"]
