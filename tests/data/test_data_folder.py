"""Image folders: class sub-folders, every image mode, broken files under the fail/skip policy, splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import FMNIST_FOLDER_PREPROCESS, make_image_folder
from PIL import Image

from edgeresnext.data import load_dataset
from edgeresnext.data.folder import (
    FOLDER_PREPROCESS,
    decode_image,
    folder_preprocess,
    list_images,
    load_folder_arrays,
    load_image_folder,
    scan_image_folder,
    split_image_folder,
)
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import DataError

RGB32 = Preprocess(channels="RGB", resize=32, crop=32)


@pytest.fixture
def mixed_folder(tmp_path):
    """One real photo-like image per mode: grayscale, RGB, RGBA, palette, 16-bit grayscale, JPEG."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(pixels).save(tmp_path / "a" / "rgb.png")
    Image.fromarray(pixels).convert("L").save(tmp_path / "a" / "gray.png")
    Image.fromarray(pixels).convert("RGBA").save(tmp_path / "a" / "rgba.png")
    Image.fromarray(pixels).convert("P").save(tmp_path / "b" / "palette.png")
    Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257).save(tmp_path / "b" / "deep16.png")
    Image.fromarray(pixels).save(tmp_path / "b" / "photo.jpg", quality=90)
    return tmp_path


def _break(folder):
    """A zero-byte PNG and a truncated JPEG next to the good images."""
    (folder / "a" / "empty.png").write_bytes(b"")
    good = (folder / "b" / "photo.jpg").read_bytes()
    (folder / "b" / "truncated.jpg").write_bytes(good[: len(good) // 3])


def test_every_image_mode_becomes_the_models_input(mixed_folder):
    folder = scan_image_folder(mixed_folder)
    assert folder.class_names == ["a", "b"] and folder.labels.tolist() == [0, 0, 0, 1, 1, 1]
    arrays, kept = load_folder_arrays(folder.files, RGB32)
    assert arrays.shape == (6, 3, 32, 32) and arrays.dtype == np.float32 and kept == list(range(6))
    gray, _ = load_folder_arrays(folder.files, Preprocess(channels="L", resize=32, crop=32, mean=(0.5,), std=(0.5,)))
    assert gray.shape == (6, 1, 32, 32)
    # 16-bit grayscale is scaled to 8 bits, not clipped to white.
    deep = decode_image(mixed_folder / "b" / "deep16.png")
    assert deep.mode.startswith("I")
    scaled, _ = load_folder_arrays(
        [mixed_folder / "b" / "deep16.png"], Preprocess(channels="L", mean=(0.0,), std=(1.0,))
    )
    assert 0.2 < scaled.mean() < 0.8


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_broken_images_fail_or_are_skipped_and_reported(mixed_folder, policy):
    _break(mixed_folder)
    files = scan_image_folder(mixed_folder).files
    if policy == "fail":
        with pytest.raises(DataError, match=r"a/empty.png: empty file \(0 bytes\)"):
            load_folder_arrays(files, RGB32, on_bad_image="fail")
        return
    skipped: list[tuple[str, str]] = []
    arrays, kept = load_folder_arrays(files, RGB32, on_bad_image="skip", skipped=skipped)
    assert len(arrays) == 6 and len(kept) == 6
    assert sorted(path.rsplit("/", 1)[1] for path, _ in skipped) == ["empty.png", "truncated.jpg"]
    assert any("corrupt or truncated image" in reason for _, reason in skipped)


def test_not_an_image_and_bad_policy_are_named(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.png").write_text("not a png")
    with pytest.raises(DataError, match=r"notes.png: not a readable image; accepted formats: .png"):
        decode_image(tmp_path / "x" / "notes.png")
    with pytest.raises(DataError, match=r"on_bad_image='ignore'; expected 'fail' or 'skip'"):
        load_folder_arrays([tmp_path / "x" / "notes.png"], RGB32, on_bad_image="ignore")


def test_missing_and_empty_folders_are_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: image folder not found"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"empty: no images found \(expected files ending in .png"):
        list_images(tmp_path / "empty")
    with pytest.raises(DataError, match=r"nowhere: image folder not found"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet'; expected one of fashion-mnist, cifar10"):
        load_dataset("imagenet")


def test_unknown_class_folder_and_loose_images_are_named(mixed_folder):
    with pytest.raises(DataError, match=r"b: class folder 'b' is not one of the model's classes \(a, c\)"):
        scan_image_folder(mixed_folder, class_names=["a", "c"])
    Image.new("RGB", (8, 8)).save(mixed_folder / "loose.png")
    with pytest.raises(DataError, match=r"loose.png: labelled image folders need one sub-folder per class"):
        scan_image_folder(mixed_folder)


def test_folder_dataset_holds_out_every_tenth_image_per_class(tmp_path):
    root = make_image_folder(tmp_path / "photos", count=60, preprocess=FMNIST_FOLDER_PREPROCESS)
    train = split_image_folder(root, "train")
    test = split_image_folder(root, "test")
    assert not set(train.files) & set(test.files)
    assert len(train) + len(test) == 60
    assert set(test.labels.tolist()) == set(train.labels.tolist())  # every class is in both
    data = load_dataset(str(root), split="test")
    assert data.images.shape == (len(test), 28, 28) and data.images.dtype == np.uint8
    assert data.preprocess == folder_preprocess(root) and data.preprocess.channels == "L"
    assert data.class_names == sorted(p.name for p in root.iterdir() if p.is_dir())


def test_train_and_val_subfolders_are_used_as_splits(tmp_path):
    make_image_folder(tmp_path / "train", count=30)
    make_image_folder(tmp_path / "val", count=12)
    assert len(split_image_folder(tmp_path, "train")) == 30
    assert len(split_image_folder(tmp_path, "test")) == 12
    data = load_image_folder(tmp_path, "val")
    assert data.preprocess == FOLDER_PREPROCESS and data.images.shape == (12, 224, 224, 3)


def test_images_in_memory_are_already_at_model_size(tmp_path):
    """Running the dataset's preprocess again on its stored pixels changes nothing (resize == crop)."""
    root = make_image_folder(tmp_path, count=12, preprocess={"channels": "RGB", "resize": 20, "crop": 20})
    data = load_image_folder(root, "train")
    stored = data.images[0]
    np.testing.assert_array_equal(data.preprocess.image_to_array(stored), data.preprocess.normalize(stored))


def test_bad_preprocess_json_is_named(tmp_path):
    make_image_folder(tmp_path, count=12)
    (tmp_path / "preprocess.json").write_text(json.dumps({"channels": "RGB", "sizee": 3}))
    with pytest.raises(DataError, match=r"preprocess.json: unknown key 'sizee'; accepted keys"):
        load_image_folder(tmp_path)
    (tmp_path / "preprocess.json").write_text("{not json")
    with pytest.raises(DataError, match=r"preprocess.json: not a readable JSON object"):
        load_image_folder(tmp_path)


def test_lazy_folder_loader_batches_are_seeded_by_epoch(tmp_path):
    from edgeresnext.data.loaders import FolderLoader, ImageFolderDataset

    root = make_image_folder(tmp_path, count=40, preprocess=FMNIST_FOLDER_PREPROCESS)
    train = split_image_folder(root, "train")
    dataset = ImageFolderDataset(train.files, train.labels, folder_preprocess(root), augment=False)
    loader = FolderLoader(dataset, batch_size=8, shuffle=True, seed=5, workers=0)
    first = [labels.tolist() for _, labels in loader]
    again = [labels.tolist() for _, labels in loader]
    loader.set_epoch(1)
    other = [labels.tolist() for _, labels in loader]
    assert first == again and first != other and len(first) == len(loader)
    inputs, _ = next(iter(loader))
    assert tuple(inputs.shape) == (8, 1, 28, 28)
    expected = folder_preprocess(root).image_to_array(decode_image(train.files[0]))
    unshuffled = FolderLoader(dataset, batch_size=8, workers=0)
    np.testing.assert_array_equal(next(iter(unshuffled))[0][0].numpy(), expected)  # same pixels, same arithmetic
