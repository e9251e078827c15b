"""The fallback's tuning images are checked against the validation set by content (decoded pixels), not by path:
a copied folder, an overlapping ``quant.tune_dir`` and images exported from the test split are caught and counted."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from data_helpers import FMNIST_FOLDER_PREPROCESS, make_image_folder
from PIL import Image

from edgeresnext.config import DataSpec, QuantSpec
from edgeresnext.data import load_dataset
from edgeresnext.data.content import file_digests, pixel_digest, validation_digests
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.data.validation import load_tuning_data

PREPROCESS = Preprocess(**FMNIST_FOLDER_PREPROCESS)


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fashion-mnist", split="test")


@pytest.fixture(scope="module")
def class_names(fmnist):
    return [name.replace("/", "-") for name in fmnist.class_names]


def _save(root, fmnist, indices):
    for index in indices:
        folder = root / fmnist.class_names[fmnist.labels[index]].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fmnist.images[index]).save(folder / f"{index:04d}.png")
    return root


def test_digest_is_of_pixels_not_of_files(tmp_path, fmnist):
    # the same image as a dataset array, a PNG and a copy of the PNG: one digest; another image or shape: another
    png = _save(tmp_path / "a", fmnist, [0]) / fmnist.class_names[fmnist.labels[0]].replace("/", "-") / "0000.png"
    copy = tmp_path / "copy.png"
    shutil.copy(png, copy)
    digests = file_digests([png, copy])
    assert digests[0] == digests[1] == pixel_digest(fmnist.images[0])
    assert pixel_digest(fmnist.images[1]) != digests[0]
    assert pixel_digest(fmnist.images[0].reshape(784)) != digests[0]  # same bytes, other shape
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert file_digests([broken]) == [None]


def test_a_copied_photo_folder_as_calibration_is_the_validation_set(tmp_path, class_names):
    photos = make_image_folder(tmp_path / "photos", count=12)
    copy = tmp_path / "photos_copy"
    shutil.copytree(photos, copy)
    spec = DataSpec(dataset=str(photos))
    why = load_tuning_data(spec, QuantSpec(calib_dir=str(copy)), PREPROCESS, class_names)
    assert isinstance(why, str)
    assert why.startswith(f"every one of the 12 images taken from {copy} is also a validation image")


def test_an_overlapping_tune_dir_is_trimmed_and_counted(tmp_path, fmnist, class_names):
    photos = make_image_folder(tmp_path / "photos", count=12)
    tune = _save(tmp_path / "tune", fmnist, range(0, 20))  # images 0-11 are the validation photos, 12-19 are not
    spec = DataSpec(dataset=str(photos))
    tuning = load_tuning_data(spec, QuantSpec(tune_dir=str(tune)), PREPROCESS, class_names)
    assert not isinstance(tuning, str)
    assert (len(tuning), tuning.overlap_excluded, tuning.disjoint_from_validation) == (8, 12, True)
    assert "12 also in the validation set left out" in tuning.name
    # the images kept are exactly 12-19: their labels, in the tune folder's (sorted path) order
    expected = sorted((class_names[fmnist.labels[i]], i) for i in range(12, 20))
    assert tuning.labels.tolist() == [class_names.index(name) for name, _ in expected]


def test_a_tune_dir_exported_from_the_test_split_is_caught(tmp_path, fmnist, class_names):
    # Validation on fashion-mnist test[:200]; a tune_dir of PNGs saved from test images 150-249: 50 are scored images
    tune = _save(tmp_path / "tune", fmnist, range(150, 250))
    spec = DataSpec(dataset="fashion-mnist", limit=200)
    assert len(validation_digests(spec)) == len({pixel_digest(image) for image in fmnist.images[:200]})
    tuning = load_tuning_data(spec, QuantSpec(tune_dir=str(tune)), PREPROCESS, class_names)
    assert not isinstance(tuning, str)
    assert (len(tuning), tuning.overlap_excluded, tuning.disjoint_from_validation) == (50, 50, True)


def test_the_named_dataset_default_is_the_training_hold_out(fmnist):
    """Validating on the test split, the fallback tunes on the 1 in 12 training images that training (and QAT)
    never see: checked by content against the validation set, and against what training loads."""
    from edgeresnext.config import TrainConfig
    from edgeresnext.data.content import array_digests
    from edgeresnext.data.validation import tuning_holdout_indices
    from edgeresnext.train import load_datasets

    spec = DataSpec(dataset="fashion-mnist")
    preprocess = load_dataset("fashion-mnist").preprocess
    tuning = load_tuning_data(spec, QuantSpec(), preprocess, fmnist.class_names)
    assert not isinstance(tuning, str)
    assert len(tuning) == 5000 and np.bincount(tuning.labels).tolist() == [500] * 10
    assert tuning.disjoint_from_validation is True and tuning.overlap_excluded == 0
    assert "train held-out 1 in 12" in tuning.name
    train_split = load_dataset("fashion-mnist", split="train")
    held_out = set(array_digests(train_split.images[tuning_holdout_indices(train_split.labels)]))
    trained, _test = load_datasets(TrainConfig(dataset="fashion-mnist"))
    assert len(trained.labels) == 55000 and not held_out & set(array_digests(trained.images))
    # a cap takes a class-balanced share of the hold-out, never other training images
    capped = load_tuning_data(spec, QuantSpec(tune_images=100), preprocess, fmnist.class_names)
    assert len(capped) == 100 and np.bincount(capped.labels).tolist() == [10] * 10
