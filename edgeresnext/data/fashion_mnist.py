"""Fashion-MNIST (Xiao et al. 2017) from its idx files.

An explicit ``root`` is the only place read (missing files there are an error). Otherwise looked up in
order: ``$EDGERESNEXT_DATA/fashion-mnist``, Debian's
``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``), the user cache
``~/.cache/edgeresnext/fashion-mnist``; if none has the files and ``download=True``, they are fetched from
the official mirror into the cache. Every file, found or downloaded, is checked against the sha256 of its
*uncompressed* idx bytes (robust to re-compression, e.g. Debian's package).
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeresnext.data.idx import parse_idx, read_idx_bytes
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import DataError

logger = logging.getLogger(__name__)

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Mean/std of the 60,000 training images (pixels / 255).
PREPROCESS = Preprocess(channels="L", resize=None, crop=None, mean=(0.2860,), std=(0.3530,))
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {
    ("train", "images"): (
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    ("train", "labels"): (
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    ("test", "images"): ("t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
SPLITS = ("train", "test")


def search_roots(root: str | os.PathLike[str] | None = None) -> list[Path]:
    roots = []
    if root is not None:
        roots.append(Path(root))
    if os.environ.get("EDGERESNEXT_DATA"):
        roots.append(Path(os.environ["EDGERESNEXT_DATA"]) / "fashion-mnist")
    roots.append(Path("/usr/share/datasets/fashion-mnist"))
    roots.append(cache_dir())
    return roots


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeresnext" / "fashion-mnist"


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def download(dest: Path, verify: bool = True) -> None:
    """Fetch the four files from the official mirror into ``dest`` (atomic, sha256-checked)."""
    dest.mkdir(parents=True, exist_ok=True)
    for stem, sha256 in FILES.values():
        target = dest / (stem + ".gz")
        if target.is_file():
            continue
        url = MIRROR + stem + ".gz"
        logger.info("downloading %s", url)
        tmp = target.with_name(target.name + f".part-{os.getpid()}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:  # noqa: S310
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            if verify:
                _verify(tmp, sha256, source=url)
            os.replace(tmp, target)
        except OSError as err:
            raise DataError(
                f"cannot download Fashion-MNIST from {url} ({err}); install Debian's "
                f"dataset-fashion-mnist or copy the idx files into {dest}"
            ) from err
        finally:
            tmp.unlink(missing_ok=True)


def _verify(path: Path, sha256: str, source: str | None = None) -> bytes:
    data = read_idx_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DataError(
            f"{source or path}: sha256 of the idx data is {digest}, expected {sha256} "
            "(corrupt, truncated, or not the official Fashion-MNIST file)"
        )
    return data


@dataclass
class ArrayDataset:
    """Images as uint8 NHW or NHWC plus int64 labels, with class names and the preprocessing they need."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    preprocess: Preprocess
    name: str

    def __len__(self) -> int:
        return len(self.labels)


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None, download_missing: bool = True, verify: bool = True
) -> ArrayDataset:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000) as uint8 28x28 images and labels."""
    if split not in SPLITS:
        raise DataError(f"Fashion-MNIST split {split!r}; expected one of {SPLITS}")
    found: dict[str, Path] = {}
    names = [FILES[(split, kind)][0] for kind in ("images", "labels")]
    if root is not None:
        # An explicit root is what the user wants read: never fall back to another copy behind their back.
        paths = {kind: _find(Path(root), name) for kind, name in zip(("images", "labels"), names, strict=True)}
        missing = [name for name, path in zip(names, paths.values(), strict=True) if path is None]
        if missing:
            raise DataError(
                f"{root}: no Fashion-MNIST file {missing[0]}[.gz] for split {split!r} "
                f"(expected {names[0]}[.gz] and {names[1]}[.gz])"
            )
        found = paths  # type: ignore[assignment]
    roots = search_roots(None)
    for candidate in roots if not found else []:
        paths = {kind: _find(candidate, FILES[(split, kind)][0]) for kind in ("images", "labels")}
        if all(paths.values()):
            found = paths  # type: ignore[assignment]
            break
    if not found:
        if not download_missing:
            raise DataError(
                "Fashion-MNIST not found in "
                + ", ".join(str(r) for r in roots)
                + "; install Debian's dataset-fashion-mnist or pass a root with the idx files"
            )
        download(cache_dir(), verify=verify)
        found = {kind: _find(cache_dir(), FILES[(split, kind)][0]) for kind in ("images", "labels")}  # type: ignore[misc]
    arrays = {}
    for kind, path in found.items():
        _stem, sha256 = FILES[(split, kind)]
        data = _verify(path, sha256) if verify else read_idx_bytes(path)
        arrays[kind] = parse_idx(data, str(path))
    images, labels = arrays["images"], arrays["labels"].astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{found['images']}: {images.shape} images do not match {labels.shape} labels")
    return ArrayDataset(
        images=images,
        labels=labels,
        class_names=list(CLASS_NAMES),
        preprocess=PREPROCESS,
        name=f"fashion-mnist/{split}",
    )
