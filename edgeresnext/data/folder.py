"""Image folders: ``root/<class>/<image>`` (:data:`IMAGE_FORMATS`: PNG, JPEG, BMP, WebP, GIF, TIFF, PNM) read with
Pillow.

Used for calibration sets (labels optional) and for user validation/training data. Decoding goes through
:func:`decode_image`, which turns every way an image can be broken into a :class:`DataError` naming the file.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

# The one list of image formats the build (data, calibration, validation folders) and the device runtime read:
# Pillow's format name -> the file suffixes listed for it. Files are found by suffix and decoded by content, and a
# file whose content is none of these formats is refused, whatever its name. Multi-frame GIF/TIFF: the first frame.
IMAGE_FORMATS = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "BMP": (".bmp",),
    "WEBP": (".webp",),
    "GIF": (".gif",),
    "TIFF": (".tif", ".tiff"),
    "PPM": (".ppm", ".pgm", ".pbm", ".pnm"),  # Pillow's netpbm reader
}
IMAGE_SUFFIXES = tuple(suffix for suffixes in IMAGE_FORMATS.values() for suffix in suffixes)
# A decompression bomb (a tiny file claiming gigapixels) is refused rather than decoded.
MAX_PIXELS = 64_000_000


def decode_image(path: str | os.PathLike[str] | bytes, name: str | None = None):
    """Open and fully decode an image, or raise DataError naming the file and what is wrong.

    ``path`` may also be the encoded bytes themselves (an image sent to a server); ``name`` then names them in errors.
    The same formats and pixel limit apply either way."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(path, bytes | bytearray | memoryview):
        data = bytes(path)
        path, size, source = Path(name or "<image bytes>"), len(data), io.BytesIO(data)
    else:
        path = source = Path(path)
        try:
            size = path.stat().st_size
        except OSError as err:
            raise DataError(f"{path}: cannot read image ({err.strerror})") from err
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes); expected an image ({', '.join(IMAGE_SUFFIXES)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=list(IMAGE_FORMATS)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise DataError(_too_large(path, image.width * image.height))
                image.load()
                return image.copy()
    except DataError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        # Pillow refuses before we see the size (over twice its own limit): still "too large", not "corrupt".
        import re

        found = re.search(r"\((\d+) pixels\)", str(err))
        raise DataError(_too_large(path, int(found.group(1)) if found else None)) from err
    except UnidentifiedImageError as err:
        raise DataError(f"{path}: not a readable image; accepted formats: {', '.join(IMAGE_SUFFIXES)}") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or truncated image ({err})") from err


def _too_large(path: Path, pixels: int | None) -> str:
    size = f"{pixels:,} pixels" if pixels is not None else "more pixels than Pillow allows"
    return f"{path}: too large ({size}, limit {MAX_PIXELS:,}); a decompression bomb or an image to downscale first"


def list_images(root: str | os.PathLike[str]) -> list[Path]:
    """Every image file below ``root``, sorted; DataError if the folder is missing or holds none.

    Data folders do not follow links out: a symlink (to a file or a folder) below ``root`` that resolves outside
    ``root`` is refused, naming it, rather than read or silently dropped. Hidden files and folders are ignored.
    """
    root = Path(root)
    try:
        if not root.is_dir():
            raise DataError(f"{root}: image folder not found")
        inside = root.resolve()
        files = [path for path in sorted(root.rglob("*")) if _listed_image(path, root, inside)]
    except OSError as err:  # a folder that cannot be read (/proc, a permission), or a file vanishing while listed
        where = err.filename or root
        raise DataError(f"{where}: cannot read the image folder {root} ({err.strerror or err})") from err
    if not files:
        raise DataError(f"{root}: no images found (expected files ending in {', '.join(IMAGE_SUFFIXES)})")
    return files


def _listed_image(path: Path, root: Path, inside: Path) -> bool:
    """Whether ``path`` (below ``root``, which resolves to ``inside``) is an image to read; a link leading out of the
    folder or into a loop is refused."""
    if any(part.startswith(".") for part in path.relative_to(root).parts):
        return False
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except FileNotFoundError as err:
            raise DataError(f"{path}: a symbolic link to nothing ({os.readlink(path)}); remove it") from err
        except RuntimeError as err:  # a loop, before Python 3.13
            raise DataError(f"{path}: a symbolic link loop; remove it or replace it by the file") from err
        except OSError as err:  # ELOOP (a loop, Python 3.13 and later), a permission
            why = (
                "a symbolic link loop"
                if err.errno == errno.ELOOP
                else f"a symbolic link that cannot be followed ({err.strerror})"
            )
            raise DataError(f"{path}: {why}; remove it or replace it by the file") from err
        if not target.is_relative_to(inside):
            raise DataError(
                f"{path}: a symlink to {target}, outside the data folder {root}; data folders do not follow "
                "links out (copy the file in, or point the build at the folder that holds it)"
            )
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


@dataclass
class ImageFolder:
    """Images with labels from their class sub-folder (sorted folder names are class indices)."""

    root: Path
    files: list[Path]
    labels: np.ndarray
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)


def scan_image_folder(root: str | os.PathLike[str], class_names: list[str] | None = None) -> ImageFolder:
    """Index ``root/<class>/*``. With ``class_names`` (the model's), an unknown class folder is an error."""
    root = Path(root)
    files = list_images(root)
    folders = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1})
    # A class folder without images would silently drop its class (and the count would be blamed later).
    empty = sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in folders
    )
    if empty:
        raise DataError(
            f"{root / empty[0]}: class folder {empty[0]!r} holds no images (expected files ending in "
            f"{', '.join(IMAGE_SUFFIXES)}); add images or remove the folder"
        )
    if class_names is None:
        class_names = folders
    unknown = [name for name in folders if name not in class_names]
    if unknown:
        raise DataError(
            f"{root / unknown[0]}: class folder {unknown[0]!r} is not one of the model's classes "
            f"({', '.join(class_names)})"
        )
    loose = [f for f in files if len(f.relative_to(root).parts) == 1]
    if loose:
        raise DataError(f"{loose[0]}: labelled image folders need one sub-folder per class; found an image at the top")
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[f.relative_to(root).parts[0]] for f in files], dtype=np.int64)
    return ImageFolder(root=root, files=files, labels=labels, class_names=list(class_names))


def model_input(path: Path, preprocess: Preprocess, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The float32 CHW input ``preprocess`` makes of the image at ``path``; with ``shape``, a :class:`DataError` naming
    the file when it is not that shape (an image of another size under ``resize: null``, say: it cannot be batched)."""
    array = preprocess.image_to_array(decode_image(path))
    if shape is not None and tuple(array.shape) != tuple(shape):
        size = "x".join(str(n) for n in array.shape)
        wanted = "x".join(str(n) for n in shape)
        raise DataError(
            f"{path}: becomes a {size} input after preprocessing (resize={preprocess.resize}, crop={preprocess.crop}), "
            f"not the {wanted} the model takes; images must reach that size: set the preprocessing's resize and crop, "
            "or give images of that size"
        )
    return array


def load_folder_arrays(
    files: list[Path],
    preprocess: Preprocess,
    on_bad_image: str = "fail",
    skipped: list[tuple[str, str]] | None = None,
    shape: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Decode + preprocess ``files`` into one float32 NCHW array. Returns (array, indices of files kept).

    ``on_bad_image``: ``fail`` raises on the first broken file; ``skip`` drops it and appends
    ``(path, reason)`` to ``skipped`` (reported later). ``shape``: the CHW input every image must become (default:
    the first image's), so one of another size is that file's error, not a failure to stack them.
    """
    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"on_bad_image={on_bad_image!r}; expected 'fail' or 'skip'")
    arrays, kept = [], []
    for position, path in enumerate(files):
        try:
            arrays.append(model_input(path, preprocess, shape or (arrays[0].shape if arrays else None)))
        except DataError as err:
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            if on_bad_image == "fail":
                raise DataError(message) from err
            logger.warning("skipping %s", message)
            if skipped is not None:
                skipped.append((str(path), message))
            continue
        kept.append(position)
    if not arrays:
        raise DataError(f"no usable images among {len(files)} files (first: {files[0] if files else '-'})")
    return np.stack(arrays), kept


# Folder data has no preprocessing of its own: ``root/preprocess.json`` gives it (Preprocess keys), else the
# ImageNet convention applies (RGB, shorter side to 224, center crop 224, ImageNet mean/std). Resize equals
# crop on purpose: the images kept in memory are then already at model size and running the same
# preprocessing on them again changes nothing.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FOLDER_PREPROCESS = Preprocess(channels="RGB", resize=224, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
# Split sub-folders recognised below a dataset root, in order of preference.
PREPROCESS_FILE = "preprocess.json"
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}
# Without split sub-folders, every HOLDOUT_EVERY-th image of each class (sorted paths, starting with the
# first) is held out as the test split, so train and test never share an image.
HOLDOUT_EVERY = 10


def folder_preprocess(root: str | os.PathLike[str]) -> Preprocess:
    """The preprocessing of an image-folder dataset: ``root/preprocess.json`` if present, else the default."""
    import json

    path = Path(root) / PREPROCESS_FILE
    if not path.is_file():
        return FOLDER_PREPROCESS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON object of preprocess keys ({err})") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of preprocess keys, got {type(data).__name__}")
    try:
        return Preprocess.from_dict(data, str(path))
    except (ConfigError, TypeError, ValueError) as err:
        raise DataError(str(err) if str(path) in str(err) else f"{path}: {err}") from err


def split_image_folder(
    root: str | os.PathLike[str], split: str = "test", class_names: list[str] | None = None
) -> ImageFolder:
    """The ``split`` of an image-folder dataset.

    ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``test/``) are used as they are; a plain
    ``root/<class>/*`` is split deterministically (every 10th image per class is ``test``/``val``).
    """
    root = Path(root)
    if split not in SPLIT_FOLDERS:
        raise DataError(f"image folder split {split!r}; expected one of {', '.join(SPLIT_FOLDERS)}")
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    present = [name for names in SPLIT_FOLDERS.values() for name in names if (root / name).is_dir()]
    if present:
        sub = next((root / name for name in SPLIT_FOLDERS[split] if (root / name).is_dir()), None)
        if sub is None:
            raise DataError(
                f"{root}: has {present[0]}/ but no {' or '.join(SPLIT_FOLDERS[split])}/ sub-folder "
                f"for the {split!r} split"
            )
        return scan_image_folder(sub, class_names)
    folder = scan_image_folder(root, class_names)
    keep = []
    rank: dict[int, int] = {}
    for label in folder.labels:
        position = rank.get(int(label), 0)
        rank[int(label)] = position + 1
        held_out = position % HOLDOUT_EVERY == 0
        keep.append(held_out if split != "train" else not held_out)
    index = np.flatnonzero(keep)
    if index.size == 0:
        raise DataError(
            f"{root}: too few images for a {split!r} split (every {HOLDOUT_EVERY}th image per class is "
            "held out for testing); add images or use train/ and val/ sub-folders"
        )
    return ImageFolder(
        root=root, files=[folder.files[i] for i in index], labels=folder.labels[index], class_names=folder.class_names
    )


def images_at_model_size(
    files: list[Path], preprocess: Preprocess, on_bad_image: str = "fail", progress: bool = False
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode ``files`` to uint8 HWC (or HW) pixels after ``preprocess``'s mode conversion, resize and crop.

    Returns (pixels, indices of the files kept, skipped (path, reason) pairs). Normalisation is left to
    :meth:`Preprocess.normalize` (or ``loaders.normalize_array``), so the result fits an :class:`ArrayDataset`.
    """
    from edgeresnext.data.preprocess import to_mode
    from edgeresnext.progress import progress_bar

    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"on_bad_image={on_bad_image!r}; expected 'fail' or 'skip'")
    pixels, kept, skipped = [], [], []
    for position, path in enumerate(progress_bar(files, desc="images", unit="img", disable=not progress, leave=False)):
        try:
            image = preprocess.geometry(to_mode(decode_image(path), preprocess.channels))
        except DataError as err:
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            if on_bad_image == "fail":
                raise DataError(message) from err
            logger.warning("skipping %s", message)
            skipped.append((str(path), message))
            continue
        pixels.append(np.asarray(image, dtype=np.uint8))
        kept.append(position)
    if not pixels:
        raise DataError(f"no usable images among {len(files)} files (first: {files[0] if files else '-'})")
    if len({p.shape for p in pixels}) > 1:
        raise DataError(
            "image folders need preprocess.crop (images of different sizes cannot be stacked); "
            f"got {preprocess.to_dict()}"
        )
    return np.stack(pixels), kept, skipped


def load_image_folder(
    root: str | os.PathLike[str],
    split: str = "test",
    preprocess: Preprocess | None = None,
    class_names: list[str] | None = None,
    on_bad_image: str = "fail",
    progress: bool = False,
):
    """A labelled image folder as an :class:`~edgeresnext.data.fashion_mnist.ArrayDataset` held in memory.

    ``preprocess`` defaults to ``root/preprocess.json`` or :data:`FOLDER_PREPROCESS`; pass the model's
    (``model.meta.preprocess``) to validate a trained model. The dataset's images are already converted,
    resized and cropped (uint8, model size); its ``preprocess`` is the full one to apply to raw images.
    For training on large folders use ``edgeresnext.data.loaders.ImageFolderDataset`` (lazy, DataLoader
    workers) instead.
    """
    from edgeresnext.data.fashion_mnist import ArrayDataset

    preprocess = preprocess or folder_preprocess(root)
    folder = split_image_folder(root, split, class_names)
    pixels, kept, skipped = images_at_model_size(folder.files, preprocess, on_bad_image, progress)
    if skipped:
        logger.warning("%s: skipped %d of %d images (first: %s)", root, len(skipped), len(folder.files), skipped[0][1])
    return ArrayDataset(
        images=pixels,
        labels=folder.labels[kept],
        class_names=folder.class_names,
        preprocess=preprocess,
        name=f"{Path(root).name}/{split}",
    )


def is_image_folder_name(name: str | os.PathLike[str]) -> bool:
    """True when a dataset name is meant as a path (it exists, or is written like one)."""
    text = os.fspath(name)
    return Path(text).is_dir() or os.sep in text or text.startswith((".", "~"))
