"""Calibration sets: class-balanced samples written as PNG images into ``calib_data/<class>/``.

The folder layout is the image-folder layout (one sub-folder per class, JPEG/PNG files), so a user can
replace it with their own images; labels are not needed for calibration, only the images.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeresnext.atomic import TMP_MARK, write_text_atomic
from edgeresnext.errors import DataError

logger = logging.getLogger(__name__)

# Written last by write_calibration_set: a folder with it holds a finished set (an interrupted one has none).
COMPLETE_MARK = ".complete"
DEFAULT_FOLDER = "calib_data"
DEFAULT_COUNT = 500

README = """# Calibration images

`make data` (or `edgeresnext data --count 500`) fills this folder with a class-balanced sample of the
*training* split of the default dataset (Fashion-MNIST), one sub-folder per class:

    calib_data/
      00_t-shirt-top/00000.png
      01_trouser/00000.png
      ...

Other sources: `edgeresnext data --dataset cifar10 --count 500` (CIFAR-10 binary release), or
`edgeresnext data --dataset /path/to/images` (an image folder: one sub-folder per class). The sample is
seeded (`--seed`, default 0), so the same command writes the same files.

## Format (to use your own images)

- Files: `.png`, `.jpg`/`.jpeg`, `.bmp`, `.webp`, `.gif`, `.tif`/`.tiff`, `.ppm`/`.pgm`/`.pbm`/`.pnm`
  anywhere below this folder (symlinks must stay inside it); hidden files and folders
  (starting with `.`) are ignored. They are read in sorted path order.
- Any size and mode (grayscale, RGB, RGBA, palette, 16-bit): each image is converted to the model's
  channel mode and size with the preprocessing stored in the checkpoint (channel mode, resize of the
  shorter side, center crop, mean/std), exactly as in training and on the device.
- Labels are not used for calibration, so class sub-folders are optional; keeping one per class makes
  it easy to check that every class is represented.
- How many: 300-1000 images representative of what the device will see (all classes, real lighting and
  backgrounds); the default is 500.

Never put validation or test images here: calibrating on the images you validate on hides errors.
"""


@dataclass
class CalibrationSet:
    folder: Path
    count: int
    per_class: int


def _slug(index: int, name: str) -> str:
    return f"{index:02d}_" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def balanced_indices(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` indices with classes as equal as possible (earlier classes take the remainder), seeded."""
    classes = np.unique(labels)
    if count < 1:
        raise DataError(f"calibration count {count}; expected at least 1")
    if count > len(labels):
        raise DataError(f"calibration count {count} exceeds the {len(labels)} images available")
    rng = np.random.default_rng(seed)
    per_class, extra = divmod(count, len(classes))
    chosen = []
    for position, cls in enumerate(classes):
        pool = np.flatnonzero(labels == cls)
        take = per_class + (1 if position < extra else 0)
        if take > len(pool):
            raise DataError(f"class {cls} has {len(pool)} images, {take} needed for a balanced set of {count}")
        chosen.append(rng.choice(pool, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


@contextmanager
def _writer_lock(folder: Path, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Exclusive lock for writing ``folder``: one process writes it at a time, the others wait.

    The lock file lives in the temporary folder, named by the hash of ``folder``'s absolute path, so that nothing
    is left in the user's folders (not even on a full disk) and no lock file is ever deleted while held.
    """
    import hashlib
    import tempfile

    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    try:
        import fcntl

        handle = open(Path(tempfile.gettempdir()) / f"edgeresnext-calib-{key}.lock", "a+b")
    except (ImportError, OSError) as err:  # not POSIX, or no writable temp folder: no lock, as before
        logger.debug("no lock for writing %s (%s)", folder, err)
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            (say or logger.info)(f"calibration images: another process is writing {folder}/; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_calibration_set(
    folder: str | os.PathLike[str],
    count: int = DEFAULT_COUNT,
    install: bool = False,
    say: Callable[[str], None] | None = None,
) -> bool:
    """Write the default calibration set (Fashion-MNIST training images) into ``folder`` unless it holds one: a
    finished set, or images of the user's own (used as they are). Returns whether this call wrote it.

    Builds started together on a fresh clone all call this: one writes while holding the folder's lock, the
    others wait for it and then find the finished set, so none reads (or deletes) a half-written one.
    """
    folder = Path(folder)
    with _writer_lock(folder, say):
        if calibration_set_complete(folder) or _has_images(folder):
            return False
        (say or logger.info)(f"calibration images: {folder}/ is empty; writing {count} Fashion-MNIST training images")
        _write_calibration_set(folder, "fashion-mnist", None, count=count, seed=0, split="train", install=install)
        return True


def _has_images(folder: Path) -> bool:
    """Whether ``folder`` holds any image file (by name; whether each can be read is the loader's concern, and a
    folder whose images are refused later is still never overwritten)."""
    from edgeresnext.data.folder import IMAGE_SUFFIXES

    if not folder.is_dir():
        return False
    return any(
        path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        for path in folder.rglob("*")
    )


def write_calibration_set(
    out: str | os.PathLike[str],
    dataset: str = "fashion-mnist",
    root: str | None = None,
    count: int = 500,
    seed: int = 0,
    split: str = "train",
    install: bool = False,
) -> CalibrationSet:
    """Write a balanced sample into ``out``, replacing only a set this function wrote there before.

    ``out`` must be missing, empty of images, or hold only images that this function wrote (listed with their
    sha256 in ``out/.edgeresnext-calibration.json``); any other image in it is the user's, and the call refuses
    (:class:`DataError` naming the folder) rather than delete, overwrite or mix with it. Files other than images are
    never touched. ``install``: Fashion-MNIST missing from the machine may be installed with apt-get (see
    :func:`~edgeresnext.data.fashion_mnist.ensure_fashion_mnist`). ``out/.complete`` is written last. Holds the
    folder's lock while writing (see :func:`ensure_calibration_set`).
    """
    out = Path(out)
    with _writer_lock(out):
        return _write_calibration_set(out, dataset, root, count, seed, split, install)


# Lists every image write_calibration_set put in the folder, with its sha256: what it may replace or remove.
RECORD = ".edgeresnext-calibration.json"
_STAGING = f".calibration{TMP_MARK}"


def _write_calibration_set(
    out: Path, dataset: str, root: str | None, count: int, seed: int, split: str, install: bool
) -> CalibrationSet:
    """:func:`write_calibration_set`'s work, with the folder's lock held by the caller."""
    from edgeresnext.data import load_dataset

    ours = _own_images(out)  # refuses a folder with images of the user's, before any work
    if dataset == "fashion-mnist" and root is None:
        from edgeresnext.data.fashion_mnist import ensure_fashion_mnist

        ensure_fashion_mnist(install=install)
    data = load_dataset(dataset, split=split, root=root)
    indices = balanced_indices(data.labels, count, seed)
    created = not out.exists()
    staging = out / f"{_STAGING}{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(f"{_STAGING}*"):  # a killed writer's (the lock says none is live): ours by name
            shutil.rmtree(stale, ignore_errors=True)
        staging.mkdir()
        written, per_class = _save_sample(data, indices, staging)
        _swap_in(out, staging, ours, written)
        if not (out / "README.md").exists():  # a README of the user's is theirs
            write_text_atomic(out / "README.md", README)
        write_text_atomic(out / COMPLETE_MARK, f"{dataset} {split} count={count} seed={seed}\n")
    except OSError as err:  # Pillow's save drops the file name: say which folder filled the disk
        from edgeresnext.atomic import storage_error

        full = storage_error(out, err)
        if full is None:
            raise DataError(f"{out}: cannot write the calibration images ({err.strerror or err})") from err
        raise full from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing of a failed first write is left
    logger.info("wrote %d images to %s", len(indices), out)
    return CalibrationSet(folder=out, count=len(indices), per_class=per_class)


def _save_sample(data, indices: np.ndarray, staging: Path) -> tuple[dict[str, str], int]:
    """The sample as ``<class slug>/<number>.png`` in ``staging``: ``{relative path: sha256}``, images per class."""
    from PIL import Image

    from edgeresnext.atomic import sha256_file

    counters: dict[int, int] = {}
    written: dict[str, str] = {}
    for index in indices:
        label = int(data.labels[index])
        relative = f"{_slug(label, data.class_names[label])}/{counters.get(label, 0):05d}.png"
        counters[label] = counters.get(label, 0) + 1
        (staging / relative).parent.mkdir(exist_ok=True)
        Image.fromarray(data.images[index]).save(staging / relative)
        written[relative] = sha256_file(staging / relative)
    return written, len(indices) // len(counters)


def _swap_in(out: Path, staging: Path, ours: dict[str, str], written: dict[str, str]) -> None:
    """Replace the images of ours in ``out`` by the staged ones. At every step the record lists each image of ours
    the folder holds, so an interrupted swap leaves a folder the next call may still replace."""
    from edgeresnext.atomic import write_json_atomic

    (out / COMPLETE_MARK).unlink(missing_ok=True)
    _remove_own_images(out, ours)
    write_json_atomic(out / RECORD, {"format": "edgeresnext-calibration", "files": written})
    for relative in sorted(written):
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, out / relative)


def _remove_own_images(out: Path, ours: dict[str, str]) -> None:
    """Delete the images listed in ``ours`` (still as written), then the class folders they leave empty."""
    for relative in sorted(ours):
        (out / relative).unlink(missing_ok=True)
    for folder in sorted({(out / relative).parent for relative in ours}, key=lambda p: len(p.parts), reverse=True):
        if folder != out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _own_images(out: Path) -> dict[str, str]:
    """The images in ``out`` this module wrote (``{relative path: sha256}``, from its record, each checked); a
    :class:`DataError` if ``out`` is not a folder or holds any other image (the user's, or one of ours changed)."""
    from edgeresnext.atomic import sha256_file
    from edgeresnext.data.folder import IMAGE_SUFFIXES

    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: not a folder; the calibration images are written into a folder (data --out FOLDER)")
    if not out.exists():
        return {}
    recorded = _read_record(out)
    ours: dict[str, str] = {}
    foreign: list[str] = []
    try:
        for path in sorted(out.rglob("*")):
            relative = path.relative_to(out).as_posix()
            hidden = any(part.startswith(".") for part in path.relative_to(out).parts)  # never read, never touched
            if hidden or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.is_file() and not path.is_symlink() and recorded.get(relative) == sha256_file(path):
                ours[relative] = recorded[relative]
            else:
                foreign.append(relative)
    except OSError as err:
        raise DataError(f"{out}: cannot read the folder ({err.strerror or err}: {err.filename})") from err
    if foreign:
        raise DataError(
            f"{out}: holds {len(foreign)} image(s) that `edgeresnext data` did not write (first: {foreign[0]}); it "
            f"writes only into a folder without images or one holding a set it wrote (listed in {RECORD}) and never "
            "deletes or overwrites other images: give another --out, or move those images (a build calibrates on "
            "the images in its calibration folder as they are)"
        )
    return ours


def _read_record(out: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of the images the record in ``out`` lists ({} without a readable record)."""
    import json

    try:
        record = json.loads((out / RECORD).read_text(encoding="utf-8"))
        files = record["files"]
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def remove_calibration_set(folder: str | os.PathLike[str]) -> int:
    """Remove the images :func:`write_calibration_set` wrote into ``folder`` (those still as written), their empty
    class folders, the record and the mark; anything else stays. Returns how many images were removed."""
    folder = Path(folder)
    with _writer_lock(folder):
        if not folder.is_dir():
            return 0
        recorded = _read_record(folder)
        ours = {}
        for relative, digest in recorded.items():
            path = folder / relative
            if path.is_file() and not path.is_symlink() and _sha256(path) == digest:
                ours[relative] = digest
        (folder / COMPLETE_MARK).unlink(missing_ok=True)
        _remove_own_images(folder, ours)
        (folder / RECORD).unlink(missing_ok=True)
        return len(ours)


def _sha256(path: Path) -> str:
    from edgeresnext.atomic import sha256_file

    return sha256_file(path)


def calibration_set_complete(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a calibration set that :func:`write_calibration_set` finished writing."""
    return (Path(folder) / COMPLETE_MARK).is_file()


def load_calibration_images(
    folder: str | os.PathLike[str],
    preprocess,
    count: int | None = None,
    on_bad_image: str = "fail",
    skipped: list[tuple[str, str]] | None = None,
    shape: tuple[int, ...] | None = None,
    used: list[Path] | None = None,
) -> np.ndarray:
    """The first ``count`` images below ``folder`` (sorted paths), preprocessed for the model: float32 NCHW.

    Any folder of images works (class sub-folders optional). ``on_bad_image='skip'`` drops unreadable files
    with a warning and takes the next ones, so the set still has ``count`` images when the folder has them;
    ``skipped`` receives ``(file, reason)`` of each dropped file, ``used`` the file of each image returned. ``shape``:
    the CHW input the model takes (an image that does not become it is a bad image, named).
    """
    from edgeresnext.data.folder import list_images, load_folder_arrays

    files = list_images(folder)
    if count is not None and count < 1:
        raise DataError(f"calibration count {count}; expected at least 1")
    # Fewer images than asked: all of them. A build's preflight says so (it counts the decodable ones, before any
    # stage); this loader and PTQ do not repeat it.
    wanted = len(files) if count is None else count
    arrays: list[np.ndarray] = []
    position = 0
    while sum(len(a) for a in arrays) < wanted and position < len(files):
        take = files[position : position + wanted - sum(len(a) for a in arrays)]
        position += len(take)
        try:
            if shape is None and arrays:
                shape = arrays[0].shape[1:]
            batch, kept = load_folder_arrays(take, preprocess, on_bad_image, skipped, shape)
        except DataError:
            if on_bad_image == "fail":
                raise
            continue  # every file of this slice was bad: try the next ones
        arrays.append(batch)
        if used is not None:
            used += [take[i] for i in kept]
    if not arrays:
        raise DataError(f"{folder}: none of its {len(files)} images could be used for calibration")
    images = np.concatenate(arrays)
    logger.info("calibration: %d images from %s", len(images), folder)
    return images
