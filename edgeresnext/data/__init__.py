"""Datasets, preprocessing and calibration sampling (numpy + Pillow; torch only in ``loaders``).

``load_dataset`` takes a registered name (``fashion-mnist``, ``cifar10``) or the path of an image folder
(``root/<class>/*.png|jpg``, optionally split into ``train/`` and ``val/``; see ``folder.load_image_folder``).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeresnext.data.cifar10 import load_cifar10
from edgeresnext.data.fashion_mnist import ArrayDataset, load_fashion_mnist
from edgeresnext.data.folder import is_image_folder_name, load_image_folder
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import DataError

DATASETS = ("fashion-mnist", "cifar10")


def load_dataset(
    name: str | os.PathLike[str],
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    preprocess: Preprocess | None = None,
) -> ArrayDataset:
    """A dataset split as an :class:`ArrayDataset`: ``load_dataset("cifar10", "test")``, ``load_dataset("photos/")``.

    ``root`` says where a named dataset's files are; ``preprocess`` applies to image folders only (named
    datasets carry their own).
    """
    if name == "fashion-mnist":
        return load_fashion_mnist(split, root=root)
    if name == "cifar10":
        return load_cifar10(split, root=root)
    if is_image_folder_name(name):
        if not Path(name).is_dir():
            raise DataError(
                f"{name}: image folder not found (a dataset is one of {', '.join(DATASETS)} or a folder "
                "with one sub-folder of images per class)"
            )
        return load_image_folder(name, split=split, preprocess=preprocess)
    raise DataError(
        f"unknown dataset {os.fspath(name)!r}; expected one of {', '.join(DATASETS)} or the path of an image folder"
    )


__all__ = [
    "DATASETS",
    "ArrayDataset",
    "Preprocess",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
]
