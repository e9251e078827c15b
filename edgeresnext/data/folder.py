"""Image folders: ``root/<class>/<image>.{png,jpg,jpeg,bmp,webp}`` read lazily with Pillow.

Used for calibration sets (labels optional) and for user validation/training data. Decoding goes through
:func:`decode_image`, which turns every way an image can be broken into a :class:`DataError` naming the file.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# A decompression bomb (a tiny file claiming gigapixels) is refused rather than decoded.
MAX_PIXELS = 64_000_000


def decode_image(path: str | os.PathLike[str]):
    """Open and fully decode an image, or raise DataError naming the file and what is wrong."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DataError(f"{path}: cannot read image ({err.strerror})") from err
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes); expected a PNG/JPEG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise DataError(f"{path}: {image.width}x{image.height} exceeds {MAX_PIXELS} pixels")
                image.load()
                return image.copy()
    except DataError:
        raise
    except UnidentifiedImageError as err:
        raise DataError(f"{path}: not a readable image; accepted formats: {', '.join(IMAGE_SUFFIXES)}") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: corrupt or truncated image ({err})") from err


def list_images(root: str | os.PathLike[str]) -> list[Path]:
    """Every image file below ``root``, sorted; DataError if the folder is missing or holds none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{root}: no images found (expected files ending in {', '.join(IMAGE_SUFFIXES)})")
    return files


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
    if class_names is None:
        class_names = folders
    unknown = [name for name in folders if name not in class_names]
    if unknown:
        raise DataError(f"{root / unknown[0]}: class folder {unknown[0]!r} is not one of the model's classes "
                        f"({', '.join(class_names)})")
    loose = [f for f in files if len(f.relative_to(root).parts) == 1]
    if loose:
        raise DataError(f"{loose[0]}: labelled image folders need one sub-folder per class; found an image at the top")
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[f.relative_to(root).parts[0]] for f in files], dtype=np.int64)
    return ImageFolder(root=root, files=files, labels=labels, class_names=list(class_names))


def load_folder_arrays(files: list[Path], preprocess: Preprocess, on_bad_image: str = "fail",
                       skipped: list[tuple[str, str]] | None = None) -> tuple[np.ndarray, list[int]]:
    """Decode + preprocess ``files`` into one float32 NCHW array. Returns (array, indices of files kept).

    ``on_bad_image``: ``fail`` raises on the first broken file; ``skip`` drops it and appends
    ``(path, reason)`` to ``skipped`` (reported later).
    """
    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"on_bad_image={on_bad_image!r}; expected 'fail' or 'skip'")
    arrays, kept = [], []
    for position, path in enumerate(files):
        try:
            arrays.append(preprocess.image_to_array(decode_image(path)))
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
