"""The idx reader and Fashion-MNIST: every broken file is one DataError naming it."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest

from edgeresnext.data import load_dataset
from edgeresnext.data.fashion_mnist import FILES, load_fashion_mnist
from edgeresnext.data.idx import parse_idx, read_idx
from edgeresnext.errors import DataError

DEBIAN = "/usr/share/datasets/fashion-mnist"


def _idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_idx_round_trip_plain_and_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(_idx_bytes(images))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), images)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short for an idx header"),
        (b"\x12\x34\x08\x01" + b"\x00" * 8, "not an idx file (magic 12340801"),
        (b"\x00\x00\x42\x01" + b"\x00" * 8, "not an idx file"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated idx header"),
        (struct.pack(">HBBI", 0, 8, 1, 10) + b"\x00" * 7, "(10,) (10 bytes) but the file holds 7 bytes (truncated)"),
        (struct.pack(">HBBI", 0, 8, 1, 2) + b"\x00" * 5, "(trailing data)"),
    ],
)
def test_idx_errors_name_the_file(data, message):
    with pytest.raises(DataError) as info:
        parse_idx(data, "labels.idx")
    assert str(info.value).startswith("labels.idx: ")
    assert message in str(info.value)


def test_corrupt_gzip_is_named(tmp_path):
    good = gzip.compress(_idx_bytes(np.zeros((100, 28, 28), dtype=np.uint8)))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        read_idx(path)
    path.write_bytes(good[:20] + bytes(b ^ 0xFF for b in good[20:40]) + good[40:])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_fashion_mnist_test_split_is_the_official_one():
    data = load_dataset("fashion-mnist", split="test")
    assert data.images.shape == (10000, 28, 28) and data.images.dtype == np.uint8
    assert np.bincount(data.labels).tolist() == [1000] * 10
    assert data.preprocess.channels == "L" and len(data.class_names) == 10


def _copy_test_split(dest):
    for kind in ("images", "labels"):
        stem = FILES[("test", kind)][0]
        shutil.copy(f"{DEBIAN}/{stem}.gz", dest / f"{stem}.gz")


def test_sha256_mismatch_is_detected(tmp_path):
    _copy_test_split(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(labels.read_bytes()))
    data[-1] = (data[-1] + 1) % 10  # one label changed: still a valid idx file
    labels.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte.gz: sha256 of the idx data is [0-9a-f]{64}, "
        r"expected 0402a96d",
    ):
        load_fashion_mnist("test", root=tmp_path)


def test_recompressed_official_files_still_verify(tmp_path):
    _copy_test_split(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes()), compresslevel=1))
    assert len(load_fashion_mnist("test", root=tmp_path)) == 10000


def test_unknown_split_is_named():
    with pytest.raises(DataError, match="split 'valid'"):
        load_fashion_mnist("valid")


def test_explicit_root_without_the_files_is_an_error_not_a_fallback(tmp_path):
    from edgeresnext.data import load_dataset
    from edgeresnext.errors import DataError

    with pytest.raises(DataError, match=r"no Fashion-MNIST file t10k-images-idx3-ubyte\[\.gz\]") as info:
        load_dataset("fashion-mnist", split="test", root=tmp_path)
    assert str(tmp_path) in str(info.value)
