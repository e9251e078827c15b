"""Near-copies by content: is an image (calibration, tuning) the same model input as a validation image?

The build's own decisions must not be made on the images the gates score, and calibration on them makes the
measured drop optimistic. Comparing folders by path misses a copy (``CALIB=photos_copy``); comparing decoded pixels
misses a photo saved again as JPEG, resized, or given an alpha channel, which the model's own preprocessing turns into
(almost) the same input. So images are compared here *after* that preprocessing (the float32 NCHW model inputs), in
two steps:

1. **Perceptual hash** (pHash: Zauner, "Implementation and Benchmarking of Perceptual Image Hash Functions", 2010; the
   algorithm of the ``imagehash`` package's ``phash``, with a larger hash): the channel mean of the input, resampled to
   32x32 (a triangle filter, antialiased when it shrinks), its 2-D DCT-II, and one bit per coefficient of the 16x16
   lowest frequencies: above the median of those 256 or not. Pairs within :data:`HASH_BITS_SCALE` bits are
   candidates (all pairs at once, as XOR and popcount of four 64-bit words: 5,000 x 10,000 pairs in about a second).
2. **Thumbnail distance**: the input resampled to 8x8, less its mean, scaled to unit length, and the Euclidean
   distance of two such thumbnails. A JPEG copy keeps the thumbnail but can flip many hash bits (coefficients near the
   median); a 2x resized copy, downsampled again by the preprocessing, is blurred, which moves the thumbnail but few
   bits. So a candidate is a near-copy when the two distances *together* are small:
   ``bits / HASH_BITS_SCALE + thumbnail distance / THUMB_SCALE <= 1`` (:func:`near_copy_score`).

The scales come from a measurement on Fashion-MNIST, whose centred, same-sized product photos make many look-alikes
(``python -m bench.near_copies``, ``bench/near_copies.json``): every one of the 10,000 test images copied as JPEG
q95, resized 2x, both, or with an opaque alpha channel, and put through a photo folder's preprocessing, scores at most
0.90; of the 5,000 held-out training images the fallback tunes on, three score below 1 (the same product photo as a
test image: Fashion-MNIST's training split holds near-copies of its test split), and the nearest look-alike scores
1.09. A single threshold on either distance alone cannot separate them there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "HASH_BITS_SCALE",
    "THUMB_SCALE",
    "Fingerprints",
    "NearCopy",
    "fingerprints",
    "near_copies",
    "near_copy_score",
]

HASH_SIDE = 32  # the thumbnail the DCT is taken of (as imagehash.phash: hash_size 16 x highfreq_factor 2)
HASH_FREQUENCIES = 16  # 16 x 16 lowest DCT frequencies: a 256-bit hash
THUMB_SIDE = 8
# A near-copy scores bits / HASH_BITS_SCALE + thumbnail distance / THUMB_SCALE <= 1 (module docstring; measured in
# bench/near_copies.json: copies reach 32 bits or 0.064, never both; look-alikes 34 bits with 0.062).
HASH_BITS_SCALE = 48
THUMB_SCALE = 0.16
_CHUNK = 512  # candidates compared at once: a 512 x N matrix of 16-bit distances


@dataclass(frozen=True)
class Fingerprints:
    """Per image: the 256-bit perceptual hash (four uint64 words) and the unit-length 8x8 thumbnail."""

    bits: np.ndarray
    thumbs: np.ndarray

    def __len__(self) -> int:
        return len(self.bits)

    @classmethod
    def concatenate(cls, parts: Iterable[Fingerprints]) -> Fingerprints:
        parts = list(parts)
        if not parts:
            return cls(np.zeros((0, 4), np.uint64), np.zeros((0, THUMB_SIDE * THUMB_SIDE), np.float32))
        return cls(np.concatenate([p.bits for p in parts]), np.concatenate([p.thumbs for p in parts]))


@dataclass(frozen=True)
class NearCopy:
    """Candidate ``image`` is a near-copy of reference ``near`` (positions in the two sets)."""

    image: int
    near: int
    hash_bits: int
    thumb_distance: float

    @property
    def score(self) -> float:
        return near_copy_score(self.hash_bits, self.thumb_distance)


def near_copy_score(hash_bits, thumb_distance):
    """How near two images are, 0 for the same model input; at most 1 for a near-copy (module docstring)."""
    return hash_bits / HASH_BITS_SCALE + thumb_distance / THUMB_SCALE


def _resample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Rows of triangle-filter weights taking ``size_in`` samples to ``size_out`` (widened when shrinking, as an
    antialiased bilinear resize)."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    source = np.arange(size_in)[None, :] + 0.5
    centre = (np.arange(size_out)[:, None] + 0.5) * scale
    weights = np.clip(1.0 - np.abs(source - centre) / support, 0.0, None)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _dct_matrix(size: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: row k is the k-th cosine."""
    k, x = np.arange(size)[:, None], np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    matrix[0] /= np.sqrt(2.0)
    return matrix.astype(np.float32)


def _resampled(grey: np.ndarray, side: int) -> np.ndarray:
    rows, cols = _resample_matrix(grey.shape[1], side), _resample_matrix(grey.shape[2], side)
    return rows @ grey @ cols.T


def fingerprints(inputs: np.ndarray) -> Fingerprints:
    """Fingerprints of model inputs (float32 NCHW, after the model's preprocessing), computed a few at a time."""
    inputs = np.asarray(inputs)
    if inputs.ndim != 4:
        raise ValueError(f"model inputs must be NCHW, got shape {inputs.shape}")
    dct = _dct_matrix(HASH_SIDE)[:HASH_FREQUENCIES]
    parts = []
    for start in range(0, len(inputs), 256):
        grey = inputs[start : start + 256].astype(np.float32).mean(axis=1)
        coefficients = (dct @ _resampled(grey, HASH_SIDE) @ dct.T).reshape(len(grey), -1)
        above = coefficients > np.median(coefficients, axis=1, keepdims=True)
        bits = np.packbits(above, axis=1).view(">u8").astype(np.uint64)
        thumbs = _resampled(grey, THUMB_SIDE).reshape(len(grey), -1)
        thumbs = thumbs - thumbs.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(thumbs, axis=1, keepdims=True)
        # A flat image has no shape to compare: its thumbnail stays 0, equal only to another flat one.
        thumbs = np.divide(thumbs, norms, out=np.zeros_like(thumbs), where=norms > 1e-6 * thumbs.shape[1])
        parts.append(Fingerprints(bits, thumbs.astype(np.float32)))
    return Fingerprints.concatenate(parts)


def near_copies(candidates: Fingerprints, reference: Fingerprints) -> list[NearCopy]:
    """Every candidate image that is a near-copy of a reference image, with its nearest one (module docstring)."""
    found: list[NearCopy] = []
    if not len(candidates) or not len(reference):
        return found
    for start in range(0, len(candidates), _CHUNK):
        bits = candidates.bits[start : start + _CHUNK]
        distance = np.zeros((len(bits), len(reference)), dtype=np.int16)
        for word in range(bits.shape[1]):
            distance += np.bitwise_count(bits[:, word, None] ^ reference.bits[None, :, word]).astype(np.int16)
        rows, cols = np.nonzero(distance <= HASH_BITS_SCALE)
        if not len(rows):
            continue
        gaps = np.linalg.norm(candidates.thumbs[start + rows] - reference.thumbs[cols], axis=1)
        scores = near_copy_score(distance[rows, cols], gaps)
        for row in np.unique(rows[scores <= 1.0]):
            mine = np.flatnonzero(rows == row)
            best = mine[np.argmin(scores[mine])]
            found.append(NearCopy(start + int(row), int(cols[best]), int(distance[row, cols[best]]), float(gaps[best])))
    logger.debug("near copies: %d of %d candidates", len(found), len(candidates))
    return found
