"""Calibration and tuning images are checked against the validation set by content, after the model's own
preprocessing (edgeresnext.data.content): a copied folder, an image exported from the test split, and the same photo
resized, saved again as JPEG or given an alpha channel are all the same model input, and are caught. Tuning drops them;
calibration names them in a WARNING; ``disjoint_from_validation`` is True only when none was found."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from data_helpers import FMNIST_FOLDER_PREPROCESS, make_image_folder
from PIL import Image

from edgeresnext.config import DataSpec, QuantSpec
from edgeresnext.data import content, load_dataset
from edgeresnext.data.loaders import normalize_array
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.data.validation import load_tuning_data, validation_fingerprints

PREPROCESS = Preprocess(**FMNIST_FOLDER_PREPROCESS)
MEASURED = Path(__file__).resolve().parents[1] / "bench" / "near_copies.json"
# What a user's folder gets wrong in practice: the validation photo resized, re-encoded, or saved with an alpha channel.
COPIES = ("resized", "jpeg95", "alpha")


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fashion-mnist", split="test")


@pytest.fixture(scope="module")
def class_names(fmnist):
    return [name.replace("/", "-") for name in fmnist.class_names]


def _save(root, fmnist, indices, kind: str = "png", dataset=None):
    """Images ``indices`` of ``dataset`` (default: the test split) into ``root/<class>/``, as a copy of ``kind``."""
    dataset = dataset or fmnist
    paths = []
    for index in indices:
        folder = root / dataset.class_names[dataset.labels[index]].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(dataset.images[index])
        if kind == "resized":  # twice the size: the folder's preprocessing (resize 28) brings it back
            path, image = folder / f"{index:05d}-resized.png", image.resize((56, 56), Image.BILINEAR)
        elif kind == "jpeg95":
            path = folder / f"{index:05d}-q95.jpg"
        elif kind == "alpha":  # the same pixels plus an opaque alpha channel
            path, image = folder / f"{index:05d}-alpha.png", image.convert("RGBA")
        else:
            path = folder / f"{index:05d}.png"
        image.save(path, **({"quality": 95} if kind == "jpeg95" else {}))
        paths.append(path)
    return paths


def _inputs(paths):
    from edgeresnext.data.folder import decode_image

    return np.stack([PREPROCESS.image_to_array(decode_image(path)) for path in paths])


def test_resized_jpeg_and_alpha_copies_are_the_same_model_input(tmp_path, fmnist):
    """Each kind of copy of 30 test images is found, with its own original as the nearest; 30 other images of the
    same classes (look-alike products) are not."""
    originals = normalize_array(fmnist.images[:30], PREPROCESS).numpy()
    reference = content.fingerprints(originals)
    for kind in COPIES:
        found = content.near_copies(
            content.fingerprints(_inputs(_save(tmp_path / kind, fmnist, range(30), kind))), reference
        )
        assert [(f.image, f.near) for f in found] == [(i, i) for i in range(30)], kind
        assert all(f.score <= 1 for f in found)
    # An exact copy scores 0; the alpha copy is the very same model input.
    exact = content.near_copies(content.fingerprints(originals), reference)
    assert [f.score for f in exact] == [0.0] * 30
    others = normalize_array(fmnist.images[30:60], PREPROCESS).numpy()
    assert content.near_copies(content.fingerprints(others), reference) == []


def test_the_score_needs_both_distances_small():
    # Measured (bench/near_copies.json): copies reach 32 bits (JPEG) or a thumbnail distance of 0.064 (a 2x resize),
    # never both; the nearest look-alike product photo is 34 bits with 0.062. Either distance alone cannot tell them.
    assert content.near_copy_score(32, 0.02) <= 1 and content.near_copy_score(24, 0.064) <= 1
    assert content.near_copy_score(34, 0.062) > 1 and content.near_copy_score(36, 0.054) > 1
    measured = json.loads(MEASURED.read_text())
    rule = f"hash bits / {content.HASH_BITS_SCALE} + thumbnail distance / {content.THUMB_SCALE} <= 1"
    assert measured["rule"] == rule  # the committed measurement is of the rule in the code
    assert all(row["missed"] == 0 for row in measured["copies_of_the_10000_test_images"].values())


def test_a_copied_photo_folder_as_calibration_is_the_validation_set(tmp_path, class_names):
    photos = make_image_folder(tmp_path / "photos", count=12, preprocess=FMNIST_FOLDER_PREPROCESS)
    copy = tmp_path / "photos_copy"
    shutil.copytree(photos, copy)
    why = load_tuning_data(DataSpec(dataset=str(photos)), QuantSpec(calib_dir=str(copy)), PREPROCESS, class_names)
    assert isinstance(why, str)
    assert why.startswith(f"every one of the 12 images taken from {copy} is a near-copy of a validation image")


def test_planted_copies_in_the_tune_dir_are_left_out_until_removed(tmp_path, fmnist, class_names):
    """Validation on a class-stratified sample of 200 test images; a tune_dir of 40 training images plus a resized, a
    JPEG q95 and an alpha copy of 3 validation images each: the 9 copies are left out, named, and the set is not
    disjoint; once they are removed, it is."""
    spec = DataSpec(dataset="fashion-mnist", limit=200)
    validation = validation_fingerprints(spec, fmnist.preprocess, fmnist.class_names)
    scored = [int(i.rsplit("#", 1)[1]) for i in validation.ids[:3]]
    train = load_dataset("fashion-mnist", split="train")
    tune = tmp_path / "tune"
    kept = _save(tune, fmnist, range(40), dataset=train)
    planted = [path for kind in COPIES for path in _save(tune, fmnist, scored, kind)]
    tuning = load_tuning_data(spec, QuantSpec(tune_dir=str(tune)), PREPROCESS, class_names, reference=validation)
    assert not isinstance(tuning, str)
    assert (len(tuning), tuning.overlap_excluded, tuning.disjoint_from_validation) == (40, 9, False)
    assert sorted(c["image"] for c in tuning.near_copies) == sorted(str(p) for p in planted)
    assert {c["near"] for c in tuning.near_copies} == {f"fashion-mnist/test#{i}" for i in scored}
    assert "9 near-copies of validation images left out" in tuning.name
    assert sorted(tuning.ids) == sorted(str(p) for p in kept)
    for path in planted:
        path.unlink()
    clean = load_tuning_data(spec, QuantSpec(tune_dir=str(tune)), PREPROCESS, class_names, reference=validation)
    assert (len(clean), clean.overlap_excluded, clean.disjoint_from_validation) == (40, 0, True)


def test_the_named_dataset_default_is_the_training_hold_out(fmnist):
    """Validating on the test split, the fallback tunes on the 1 in 12 training images that training (and QAT)
    never see, less the near-copies of test images among them: Fashion-MNIST's training split holds a few (the same
    product photo; bench/near_copies.json lists them), so the default tuning set is not disjoint until they are left
    out, and says so."""
    from edgeresnext.config import TrainConfig
    from edgeresnext.data.validation import tuning_holdout_indices
    from edgeresnext.train import load_datasets

    spec = DataSpec(dataset="fashion-mnist")
    preprocess = load_dataset("fashion-mnist").preprocess
    tuning = load_tuning_data(spec, QuantSpec(), preprocess, fmnist.class_names)
    assert not isinstance(tuning, str)
    measured = json.loads(MEASURED.read_text())
    flagged = {f"fashion-mnist/train#{row['train']}" for row in measured["tuning_holdout_5000_vs_test"]["flagged"]}
    assert {c["image"] for c in tuning.near_copies} == flagged and len(flagged) == 3
    assert len(tuning) == 5000 - 3 and tuning.overlap_excluded == 3 and tuning.disjoint_from_validation is False
    assert "train held-out 1 in 12" in tuning.name and "3 near-copies of validation images left out" in tuning.name
    train_split = load_dataset("fashion-mnist", split="train")
    held_out = set(tuning_holdout_indices(train_split.labels).tolist())
    assert {int(i.rsplit("#", 1)[1]) for i in tuning.ids} <= held_out
    trained, _test = load_datasets(TrainConfig(dataset="fashion-mnist"))
    assert len(trained.labels) == 55000
    # a cap takes a class-balanced share of the hold-out, never other training images
    capped = load_tuning_data(spec, QuantSpec(tune_images=100), preprocess, fmnist.class_names)
    assert len(capped) == 100 and np.bincount(capped.labels).tolist() == [10] * 10


@pytest.mark.promise("docs/quantization.md", "named in a WARNING in the build summary and the report's notes")
def test_planted_copies_in_calib_are_named_in_a_warning_until_removed(tmp_path, calib_dir, fmnist):
    """The build's quantize stage: --calib holds 60 training images plus a resized, a JPEG q95 and an alpha copy of
    3 scored test images. All 9 are named (quant.json, a WARNING in the summary, the report's notes) and the
    calibration set is not disjoint from the validation set; removed, the rerun finds none."""
    from edgeresnext.config import load_target
    from edgeresnext.pipeline import build

    calib = tmp_path / "calib"
    shutil.copytree(calib_dir, calib)
    spec = DataSpec(dataset="fashion-mnist", limit=100)
    scored = [
        int(i.rsplit("#", 1)[1]) for i in validation_fingerprints(spec, fmnist.preprocess, fmnist.class_names).ids[:3]
    ]
    planted = [path for kind in COPIES for path in _save(calib / "planted", fmnist, scored, kind)]
    target = tmp_path / "t.yaml"
    target.write_text(
        yaml.safe_dump(
            {
                "extends": str(MEASURED.parents[1] / "targets" / "cpu.yaml"),
                "name": "planted",
                "data": {"limit": 100},
                "quant": {"calib_dir": str(calib), "subset_size": 200, "max_fallback_layers": 0},
                "model": {"preprocess": FMNIST_FOLDER_PREPROCESS},
            }
        )
    )
    summary = build(load_target(target), out_root=tmp_path / "build", progress=False, stop_after="quantize")
    record = json.loads((tmp_path / "build" / "planted" / "quantize" / "quant.json").read_text())
    near = record["calibration_near_copies"]
    assert near["count"] == 9 and near["disjoint_from_validation"] is False
    assert sorted(c["image"] for c in near["images"]) == sorted(str(p) for p in planted)
    assert any(n.startswith("WARNING: calibration: 9 of 109 calibration images are near-copies") for n in summary.notes)
    for path in planted:
        path.unlink()
    build(load_target(target), out_root=tmp_path / "build", progress=False, stop_after="quantize")
    record = json.loads((tmp_path / "build" / "planted" / "quantize" / "quant.json").read_text())
    assert record["calibration_near_copies"]["count"] == 0
    assert record["calibration_near_copies"]["disjoint_from_validation"] is True
