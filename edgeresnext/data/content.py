"""Image identity by content: a digest of the decoded pixels, so a copied or renamed file is still the same image.

The build's own decisions (the float fallback) must not be tuned on the images the gates score. Comparing folders by
path misses the commonest way they overlap, a copy (``CALIB=photos_copy``); comparing file bytes misses a re-saved
PNG. The digest here is of what the model would see before any resizing: the decoded pixel array, its shape and its
dtype (a 28x28 grey Fashion-MNIST image in the dataset and the same image saved as a grey PNG have one digest).
Decoding dominates the cost; hashing a decoded image is a few microseconds.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeresnext.errors import DataError

if TYPE_CHECKING:
    from edgeresnext.config import DataSpec

logger = logging.getLogger(__name__)


def pixel_digest(pixels: np.ndarray) -> str:
    """A digest of one decoded image: its shape, dtype and pixel bytes (C order)."""
    array = np.ascontiguousarray(pixels)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def array_digests(images: np.ndarray | Iterable[np.ndarray]) -> list[str]:
    """One digest per image of a dataset array (N, H, W[, C])."""
    return [pixel_digest(image) for image in images]


def file_digests(files: Sequence[Path]) -> list[str | None]:
    """One digest per image file (decoded with Pillow, as every loader here decodes it); None for a file that does
    not decode (the loaders report those themselves, under ``data.on_bad_image``)."""
    from edgeresnext.data.folder import decode_image

    digests: list[str | None] = []
    for path in files:
        try:
            digests.append(pixel_digest(np.asarray(decode_image(path))))
        except DataError as err:
            logger.debug("no digest for %s: %s", path, err)
            digests.append(None)
    return digests


def validation_digests(spec: DataSpec) -> set[str]:
    """The digests of every image the validation set of ``spec`` scores (a named dataset's split up to
    ``data.limit``, or the image folder's files up to it), in the order the validation loader takes them."""
    from edgeresnext.data import DATASETS, load_dataset

    if spec.dataset in DATASETS:
        dataset = load_dataset(spec.dataset, split=spec.split, root=spec.root)
        count = min(spec.limit or len(dataset), len(dataset))
        return set(array_digests(dataset.images[:count]))
    from edgeresnext.data.folder import list_images

    files = list_images(Path(spec.dataset))
    files = files[: spec.limit] if spec.limit else files
    return {d for d in file_digests(files) if d is not None}


def overlapping(candidates: Sequence[str | None], reference: set[str]) -> list[int]:
    """Positions in ``candidates`` whose digest is in ``reference``."""
    return [i for i, digest in enumerate(candidates) if digest is not None and digest in reference]
