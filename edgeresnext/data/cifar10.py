"""CIFAR-10 (Krizhevsky 2009) from its *binary* release, never the pickled one.

``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` .. ``data_batch_5.bin``
(train, 10,000 images each), ``test_batch.bin`` and ``batches.meta.txt`` (class names, one a line). Each
``.bin`` is a run of 3,073-byte records: 1 label byte (0-9), then 1,024 red, 1,024 green and 1,024 blue
bytes of a 32x32 image in row-major order.

Looked up in order: an explicit ``root`` (a folder with the ``.bin`` files, a folder holding
``cifar-10-batches-bin/`` or the tarball, or the tarball itself), ``$EDGERESNEXT_DATA/cifar10``, the user
cache ``~/.cache/edgeresnext/cifar10``; if none has the files, the tarball is downloaded from the authors'
site into the cache. The authors publish only the MD5 of the tarball (on https://www.cs.toronto.edu/~kriz/cifar.html),
so a tarball, downloaded or given, is checked against it (``verify=False`` skips this for a tarball you
packed yourself). Loose ``.bin`` files have no published checksum: they are checked for structure only
(whole records, labels 0-9).

Members are read from the tarball by their exact expected names into memory; no member name ever
becomes a path on disk, so a crafted archive cannot write outside the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

from edgeresnext.atomic import write_bytes_atomic
from edgeresnext.data.fashion_mnist import ArrayDataset
from edgeresnext.data.places import cache_dir as _cache_dir
from edgeresnext.data.places import search_roots as _search_roots
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import DataError

logger = logging.getLogger(__name__)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
TARBALL = "cifar-10-binary.tar.gz"
TARBALL_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published by the dataset authors
FOLDER = "cifar-10-batches-bin"
SPLIT_FILES = {
    "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["test_batch.bin"],
}
META_FILE = "batches.meta.txt"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SIDE = 32
RECORD_BYTES = 1 + 3 * SIDE * SIDE
# Per-channel mean/std of the 50,000 training images (pixels / 255), the values used across the CIFAR literature.
PREPROCESS = Preprocess(
    channels="RGB", resize=None, crop=None, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)
)
SPLITS = tuple(SPLIT_FILES)


def cache_dir() -> Path:
    return _cache_dir("cifar10")


def parse_records(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary records to (uint8 NHWC images, int64 labels); ``source`` names the file in errors."""
    if len(data) == 0:
        raise DataError(f"{source}: empty file; expected {RECORD_BYTES}-byte CIFAR-10 records")
    if len(data) % RECORD_BYTES:
        whole = len(data) // RECORD_BYTES
        raise DataError(
            f"{source}: {len(data)} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records "
            f"({whole} records and {len(data) - whole * RECORD_BYTES} bytes over: truncated or not a "
            "CIFAR-10 binary batch)"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= len(CLASS_NAMES))
    if bad.size:
        raise DataError(
            f"{source}: record {int(bad[0])} has label {int(labels[bad[0]])}; CIFAR-10 labels are 0-9 "
            "(corrupt file, or the CIFAR-100 release)"
        )
    images = records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def records_from_arrays(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The inverse of :func:`parse_records`: uint8 NHWC 32x32x3 images + labels to binary-release bytes."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (SIDE, SIDE, 3) or len(images) != len(labels):
        raise DataError(
            f"CIFAR-10 records need N x 32 x 32 x 3 uint8 images and N labels, got {images.shape} "
            f"and {len(labels)} labels"
        )
    records = np.empty((len(images), RECORD_BYTES), dtype=np.uint8)
    records[:, 0] = np.asarray(labels, dtype=np.uint8)
    records[:, 1:] = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return records.tobytes()


def parse_class_names(text: str, source: str) -> list[str]:
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != len(CLASS_NAMES):
        raise DataError(f"{source}: {len(names)} class names; expected {len(CLASS_NAMES)} (one per line)")
    return names


def md5_of(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324  (the authors publish MD5; it is a transfer check, not a signature)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_tarball(path: Path) -> None:
    """Raise DataError unless ``path`` has the MD5 the authors publish for ``cifar-10-binary.tar.gz``."""
    try:
        actual = md5_of(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from err
    if actual != TARBALL_MD5:
        raise DataError(
            f"{path}: MD5 {actual} differs from the published {TARBALL_MD5} of {TARBALL} (corrupt, "
            "truncated or not the official release; pass verify=False for a tarball you packed yourself)"
        )


def read_tarball_members(path: Path, names: list[str]) -> dict[str, bytes]:
    """The bytes of ``cifar-10-batches-bin/<name>`` for each name; only regular files with exactly those names."""
    wanted = {f"{FOLDER}/{name}": name for name in names}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for member in archive:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None:
                    continue
                if not member.isreg():
                    raise DataError(f"{path}: member {member.name!r} is not a regular file (link or device); refused")
                handle = archive.extractfile(member)
                if handle is None:
                    raise DataError(f"{path}: member {member.name!r} cannot be read")
                found[name] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{path}: corrupt or truncated {TARBALL} ({err})") from err
    missing = [name for name in names if name not in found]
    if missing:
        raise DataError(f"{path}: no member {FOLDER}/{missing[0]}; expected the CIFAR-10 binary release layout")
    return found


def download(dest: Path) -> Path:
    """Fetch the tarball from the authors' site into ``dest``, check its published MD5, return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / TARBALL
    if target.is_file():
        return target
    tmp = target.with_name(f".{TARBALL}.part-{os.getpid()}")
    logger.info("downloading %s (162 MB)", URL)
    try:
        from edgeresnext.progress import progress_bar

        with urllib.request.urlopen(URL, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress_bar(
                total=total, unit="B", unit_scale=True, desc=TARBALL, disable=not logger.isEnabledFor(logging.INFO)
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        verify_tarball(tmp)
        os.replace(tmp, target)
    except OSError as err:
        raise DataError(
            f"cannot download CIFAR-10 from {URL} ({err}); copy {TARBALL} or the extracted {FOLDER}/ into {dest}"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _candidates(root: Path) -> list[Path]:
    """Where under ``root`` the files or the tarball may be."""
    return [root, root / FOLDER, root / TARBALL]


def _locate(split: str, roots: list[Path]) -> Path | None:
    for root in roots:
        for place in _candidates(root):
            if place.is_file() and place.name.endswith((".tar.gz", ".tgz")):
                return place
            if place.is_dir() and all((place / name).is_file() for name in SPLIT_FILES[split]):
                return place
    return None


def search_roots(root: str | os.PathLike[str] | None = None) -> list[Path]:
    return _search_roots("cifar10", root)


def load_cifar10(
    split: str = "train", root: str | os.PathLike[str] | None = None, download_missing: bool = True, verify: bool = True
) -> ArrayDataset:
    """CIFAR-10 ``train`` (50,000) or ``test`` (10,000) as uint8 32x32x3 (NHWC) images and int64 labels."""
    if split not in SPLITS:
        raise DataError(f"CIFAR-10 split {split!r}; expected one of {SPLITS}")
    if root is not None and not Path(root).exists():
        raise DataError(
            f"{root}: CIFAR-10 root not found (expected a folder with {FOLDER}/ or {TARBALL}, or the tarball itself)"
        )
    roots = search_roots(root)
    place = _locate(split, roots)
    if place is None:
        if root is not None or not download_missing:
            where = root if root is not None else ", ".join(str(r) for r in roots)
            raise DataError(
                f"{where}: no CIFAR-10 binary files for split {split!r} (expected "
                f"{', '.join(SPLIT_FILES[split])} in {FOLDER}/, or {TARBALL})"
            )
        place = download(cache_dir())
    names = [*SPLIT_FILES[split], META_FILE]
    if place.is_file():
        if verify:
            verify_tarball(place)
        blobs = read_tarball_members(place, names)
        sources = {name: f"{place}:{FOLDER}/{name}" for name in names}
    else:
        blobs, sources = {}, {}
        for name in names:
            path = place / name
            if name == META_FILE and not path.is_file():
                continue  # the class names are also known without it
            try:
                blobs[name] = path.read_bytes()
            except OSError as err:
                raise DataError(f"{path}: cannot read ({err.strerror})") from err
            sources[name] = str(path)
    parts = [parse_records(blobs[name], sources[name]) for name in SPLIT_FILES[split]]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    class_names = list(CLASS_NAMES)
    if META_FILE in blobs:
        class_names = parse_class_names(blobs[META_FILE].decode("utf-8", errors="replace"), sources[META_FILE])
    logger.debug("CIFAR-10 %s: %d images from %s", split, len(labels), place)
    return ArrayDataset(
        images=images, labels=labels, class_names=class_names, preprocess=PREPROCESS, name=f"cifar10/{split}"
    )


def write_cifar10_folder(
    folder: str | os.PathLike[str],
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | None = None,
) -> Path:
    """Write ``images``/``labels`` as a binary-release split into ``folder`` (tests, and converting own data)."""
    folder = Path(folder)
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images for {len(labels)} labels")
    files = SPLIT_FILES[split]
    chunks = np.array_split(np.arange(len(labels)), len(files))
    for name, index in zip(files, chunks, strict=True):
        write_bytes_atomic(folder / name, records_from_arrays(images[index], labels[index]))
    write_bytes_atomic(folder / META_FILE, ("\n".join(class_names or CLASS_NAMES) + "\n\n").encode())
    return folder
