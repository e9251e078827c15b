"""Fashion-MNIST (Xiao et al. 2017) from its idx files.

An explicit ``root`` is the only place read (missing files there are an error). Otherwise looked up in
order: ``$EDGERESNEXT_DATA/fashion-mnist``, Debian's
``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``), the user cache
``~/.cache/edgeresnext/fashion-mnist``; if none has the files and ``download=True``, they are fetched from
the official mirror into the cache. Every file, found or downloaded, is checked against the sha256 of its
*uncompressed* idx bytes (robust to re-compression, e.g. Debian's package).

:func:`ensure_fashion_mnist` is the set-up step ``make build``/``make test`` run: when the files are nowhere, it
installs Debian's package with apt-get where it may (root, or sudo without a password), else downloads, else
fails with one line giving the command to run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeresnext.data.idx import parse_idx, read_idx_bytes
from edgeresnext.data.places import cache_dir as _cache_dir
from edgeresnext.data.places import search_roots as _search_roots
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
APT_PACKAGE = "dataset-fashion-mnist"
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
# apt-get on a fresh machine: an index update plus one small package; generous, but never hang a build forever.
APT_TIMEOUT_S = 900


def search_roots(root: str | os.PathLike[str] | None = None) -> list[Path]:
    return _search_roots("fashion-mnist", root, system=DEBIAN_ROOT)


def cache_dir() -> Path:
    return _cache_dir("fashion-mnist")


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
            raise DataError(f"cannot download Fashion-MNIST from {url} ({err}); {install_hint()}") from err
        finally:
            tmp.unlink(missing_ok=True)


def find_fashion_mnist() -> Path | None:
    """The first search root holding all four idx files (both splits), or None."""
    for root in search_roots(None):
        if all(_find(root, stem) for stem, _sha in FILES.values()):
            return root
    return None


def _apt_prefix() -> list[str] | None:
    """How this process may run apt-get without asking anyone: as root, or through password-less sudo."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") is None:
        return None
    probe = subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False)
    return ["sudo", "-n"] if probe.returncode == 0 else None


def _apt_install(prefix: list[str]) -> str | None:
    """Install Debian's package (refreshing the package lists once if apt does not know it); None or why not."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", APT_PACKAGE]
    reason = None
    for attempt in ("install", "update", "install"):
        command = install if attempt == "install" else [*prefix, "apt-get", "update", "-q"]
        logger.info("fashion-mnist: %s", " ".join(command))
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"{' '.join(command)} failed ({err})"
        if done.returncode == 0 and attempt == "install":
            return None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
            reason = f"{' '.join(command)} exited {done.returncode} ({last})"
            if attempt == "update":
                return reason
    return reason


def install_hint() -> str:
    """The one thing a user without root or network can do, as a command line."""
    return (
        f"run `sudo apt-get install -y {APT_PACKAGE}` (Debian/Ubuntu), or copy the four idx files "
        f"({', '.join(stem + '.gz' for stem, _ in FILES.values())}) from {MIRROR} into {cache_dir()}"
    )


def ensure_fashion_mnist(install: bool = True, download_missing: bool = True) -> Path:
    """Make sure Fashion-MNIST is on this machine and return the folder holding it.

    Order: a copy already in one of :func:`search_roots`; Debian's ``dataset-fashion-mnist`` through apt-get
    (``install``, and only as root or with password-less sudo; ``EDGERESNEXT_NO_INSTALL=1`` turns it off);
    the official mirror into the cache (``download_missing``); else a :class:`DataError` whose one line
    says what was tried and the command to run.
    """
    found = find_fashion_mnist()
    if found is not None:
        return found
    tried: list[str] = []
    if install and os.environ.get("EDGERESNEXT_NO_INSTALL", "") in ("", "0"):
        prefix = _apt_prefix()
        if prefix is None:
            tried.append("apt-get: not root and no password-less sudo")
        else:
            logger.warning("Fashion-MNIST is not on this machine: installing Debian's %s with apt-get", APT_PACKAGE)
            reason = _apt_install(prefix)
            found = find_fashion_mnist()
            if found is not None:
                return found
            tried.append(reason or f"apt-get installed {APT_PACKAGE} but {DEBIAN_ROOT} has no idx files")
    if download_missing:
        try:
            download(cache_dir())
            return cache_dir()
        except DataError as err:
            tried.append(f"download: {err.__cause__ or err}")
    raise DataError(f"Fashion-MNIST is not on this machine ({'; '.join(tried) or 'not looked for'}); {install_hint()}")


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
            raise DataError("Fashion-MNIST not found in " + ", ".join(str(r) for r in roots) + f"; {install_hint()}")
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
