"""CIFAR-10 from its binary release: folders, tarballs (checked, read safely), broken files."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from data_helpers import fmnist_as_cifar, make_cifar10_root
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeresnext.data import DATASETS, load_dataset
from edgeresnext.data.cifar10 import (
    FOLDER,
    PREPROCESS,
    RECORD_BYTES,
    TARBALL,
    load_cifar10,
    parse_records,
    records_from_arrays,
)
from edgeresnext.errors import DataError


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return make_cifar10_root(tmp_path_factory.mktemp("cifar"), train=50, test=20)


def _tarball(source: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(out, "w:gz") as archive:
        archive.add(source / FOLDER, arcname=FOLDER)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out


def test_records_are_label_then_rgb_planes():
    images, labels = fmnist_as_cifar(3)
    data = records_from_arrays(images, labels)
    assert len(data) == 3 * RECORD_BYTES
    first = np.frombuffer(data[:RECORD_BYTES], dtype=np.uint8)
    assert first[0] == labels[0]
    np.testing.assert_array_equal(first[1:1025].reshape(32, 32), images[0, :, :, 0])  # red plane first
    np.testing.assert_array_equal(first[2049:].reshape(32, 32), images[0, :, :, 2])  # blue plane last
    parsed_images, parsed_labels = parse_records(data, "x.bin")
    np.testing.assert_array_equal(parsed_images, images)
    np.testing.assert_array_equal(parsed_labels, labels)


def test_load_dataset_reads_a_binary_release_folder(cifar_root):
    assert "cifar10" in DATASETS
    train = load_dataset("cifar10", split="train", root=cifar_root)
    test = load_dataset("cifar10", split="test", root=cifar_root / FOLDER)
    images, labels = fmnist_as_cifar(70)
    assert train.images.shape == (50, 32, 32, 3) and test.images.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(train.images, images[:50])
    np.testing.assert_array_equal(test.labels, labels[50:])
    assert train.class_names[0] == "airplane" and train.class_names[-1] == "truck"
    assert train.preprocess == PREPROCESS and PREPROCESS.channels == "RGB"


def test_tarball_is_read_without_extracting_and_md5_checked(cifar_root, tmp_path):
    tarball = _tarball(cifar_root, tmp_path / TARBALL)
    data = load_cifar10("test", root=tarball, verify=False)
    assert len(data) == 20
    assert len(load_cifar10("train", root=tmp_path, verify=False)) == 50  # folder holding the tarball
    assert sorted(p.name for p in tmp_path.iterdir()) == [TARBALL]  # nothing was extracted
    with pytest.raises(
        DataError,
        match=rf"{TARBALL}: MD5 [0-9a-f]{{32}} differs from the published "
        r"c32a1d4ab5d03f1284b67883e8d87530",
    ):
        load_cifar10("test", root=tarball)


def test_tarball_members_outside_the_layout_are_ignored_and_links_refused(cifar_root, tmp_path):
    escape = {"../../evil.bin": b"x" * RECORD_BYTES, f"{FOLDER}/../../evil.txt": b"boom"}
    (tmp_path / "a").mkdir()
    tarball = _tarball(cifar_root, tmp_path / "a" / TARBALL, extra=escape)
    assert len(load_cifar10("test", root=tarball, verify=False)) == 20
    assert not (tmp_path / "evil.bin").exists() and not (tmp_path.parent / "evil.bin").exists()

    linked = tmp_path / "linked.tar.gz"
    with tarfile.open(linked, "w:gz") as archive:
        info = tarfile.TarInfo(f"{FOLDER}/test_batch.bin")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(
        DataError,
        match=r"linked.tar.gz: member 'cifar-10-batches-bin/test_batch.bin' is not a "
        r"regular file",
    ):
        load_cifar10("test", root=linked, verify=False)


def test_truncated_and_corrupt_batches_are_named(cifar_root, tmp_path):
    folder = tmp_path / FOLDER
    folder.mkdir()
    good = (cifar_root / FOLDER / "test_batch.bin").read_bytes()
    (folder / "test_batch.bin").write_bytes(good[:-100])
    with pytest.raises(DataError, match=r"test_batch.bin: 61360 bytes is not a whole number of 3073-byte"):
        load_cifar10("test", root=tmp_path)
    bad_label = bytearray(good)
    bad_label[RECORD_BYTES * 3] = 57
    (folder / "test_batch.bin").write_bytes(bytes(bad_label))
    with pytest.raises(DataError, match=r"test_batch.bin: record 3 has label 57; CIFAR-10 labels are 0-9"):
        load_cifar10("test", root=tmp_path)
    (folder / "test_batch.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"test_batch.bin: empty file"):
        load_cifar10("test", root=tmp_path)


def test_truncated_tarball_is_named(cifar_root, tmp_path):
    data = _tarball(cifar_root, tmp_path / "full.tar.gz").read_bytes()
    cut = tmp_path / TARBALL
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{TARBALL}: corrupt or truncated"):
        load_cifar10("test", root=cut, verify=False)


def test_missing_root_and_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: CIFAR-10 root not found"):
        load_cifar10("test", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no CIFAR-10 binary files for split 'train' \(expected data_batch_1.bin"):
        load_cifar10("train", root=tmp_path)
    with pytest.raises(DataError, match=r"split 'valid'"):
        load_cifar10("valid")


@given(st.integers(1, 5), st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_records_round_trip_for_any_images(count, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, count)
    parsed_images, parsed_labels = parse_records(records_from_arrays(images, labels), "x.bin")
    np.testing.assert_array_equal(parsed_images, images)
    np.testing.assert_array_equal(parsed_labels, labels)
