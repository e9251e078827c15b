"""How well the near-copy check (edgeresnext.data.content) tells copies of validation images from look-alikes.

Measured on Fashion-MNIST, whose items are centred, same-sized product photos (many look alike, and the training split
holds a few near-copies of test images), so it is a hard case for false positives:

- **copies**: each of the 10,000 test images saved as JPEG q95, resized 2x (PNG), resized 2x then JPEG q95, and as
  RGBA with an opaque alpha channel, then put through a photo folder's preprocessing (``resize: 28, crop: 28``,
  what a user's folder of these images gets): how many the check misses, and the largest hash and thumbnail
  distances of each kind;
- **look-alikes**: the 5,000 held-out training images the quantize fallback tunes on, and the 500 calibration images
  ``make data`` writes, against the 10,000 test images: every pair the check flags, with its distances, and the
  nearest pairs it does not flag.

    .venv/bin/python -m bench.near_copies --out bench/near_copies.json [--pairs-png /tmp/near_copies.png]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

FOLDER_PREPROCESS = {"channels": "L", "resize": 28, "crop": 28, "mean": [0.286], "std": [0.353]}


def copy_of(image, kind: str):
    """``image`` (PIL) copied as a file would be: ``jpeg95``, ``resize2x`` (bilinear, saved as PNG),
    ``resize2x+jpeg95``, or ``alpha`` (RGBA with an opaque alpha channel, PNG), then decoded again."""
    from PIL import Image

    def reopened(picture, fmt: str, **options):
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        buffer.seek(0)
        return Image.open(buffer)

    if kind.startswith("resize2x"):
        image = image.resize((image.width * 2, image.height * 2), Image.BILINEAR)
    if kind.endswith("jpeg95"):
        return reopened(image, "JPEG", quality=95)
    if kind == "alpha":
        rgba = image.convert("RGBA")
        rgba.putalpha(255)
        return reopened(rgba, "PNG")
    return reopened(image, "PNG")


def _copies(images: np.ndarray, kind: str, preprocess) -> np.ndarray:
    """Model inputs of a copy of each image, encoded and decoded as a file would be."""
    from PIL import Image

    return np.stack([preprocess.image_to_array(copy_of(Image.fromarray(pixels), kind)) for pixels in images])


def _distances(candidates, reference) -> tuple[np.ndarray, np.ndarray]:
    """Hash bits and thumbnail distance of each candidate to the reference image at the same position."""
    bits = np.bitwise_count(candidates.bits ^ reference.bits).sum(axis=1)
    return bits, np.linalg.norm(candidates.thumbs - reference.thumbs, axis=1)


def pairwise(candidates, reference) -> tuple[np.ndarray, np.ndarray]:
    """Hash bits and thumbnail distance of every candidate to every reference image (candidates x references)."""
    bits = sum(
        np.bitwise_count(candidates.bits[:, w, None] ^ reference.bits[None, :, w]).astype(np.int32)
        for w in range(candidates.bits.shape[1])
    )
    squares = (candidates.thumbs**2).sum(1)[:, None] + (reference.thumbs**2).sum(1)[None]
    return bits, np.sqrt(np.maximum(0.0, squares - 2 * candidates.thumbs @ reference.thumbs.T))


def _rows(prints, start: int, stop: int):
    """Rows ``start:stop`` of fingerprints, as fingerprints (what :func:`pairwise` takes a chunk of)."""
    from edgeresnext.data.content import Fingerprints

    return Fingerprints(prints.bits[start:stop], prints.thumbs[start:stop])


def _flagged(name: str, found, ids: np.ndarray, labels: np.ndarray, test) -> list[dict]:
    return [
        {
            name: int(ids[f.image]),
            "test": f.near,
            "hash_bits": f.hash_bits,
            "thumb_distance": round(f.thumb_distance, 4),
            "score": round(f.score, 3),
            "same_label": bool(labels[f.image] == test.labels[f.near]),
        }
        for f in found
    ]


def _nearest_unflagged(candidates, reference, ids: np.ndarray, flagged: set[int], count: int = 8) -> list[dict]:
    """The candidate images with the lowest score against any test image that the check does not flag."""
    from edgeresnext.data.content import near_copy_score

    best = []
    for start in range(0, len(candidates), 250):
        bits, gaps = pairwise(_rows(candidates, start, start + 250), reference)
        scores = near_copy_score(bits, gaps)
        for row, column in enumerate(scores.argmin(axis=1)):
            if start + row not in flagged:
                values = (float(scores[row, column]), int(bits[row, column]), float(gaps[row, column]))
                best.append((values[0], int(ids[start + row]), int(column), values[1], values[2]))
    best.sort()
    return [
        {"train": i, "test": j, "hash_bits": b, "thumb_distance": round(d, 4), "score": round(s, 3)}
        for s, i, j, b, d in best[:count]
    ]


def _single_distance_alternatives(candidates, reference, copies: dict) -> dict:
    """How many of the tuning images a threshold on one distance alone would flag, set just high enough to catch
    every copy above (the hash's for JPEG copies, the thumbnail's for resized ones)."""
    bits_needed = max(row["max_hash_bits"] for row in copies.values())
    thumb_needed = max(row["max_thumb_distance"] for row in copies.values())
    by_bits, by_thumb = 0, 0
    for start in range(0, len(candidates), 250):
        bits, gaps = pairwise(_rows(candidates, start, start + 250), reference)
        by_bits += int((bits.min(axis=1) <= bits_needed).sum())
        by_thumb += int((gaps.min(axis=1) <= thumb_needed).sum())
    return {
        "hash_bits_threshold": bits_needed,
        "flagged_by_hash_alone": by_bits,
        "thumb_distance_threshold": thumb_needed,
        "flagged_by_thumbnail_alone": by_thumb,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--pairs-png", type=Path, help="also draw every flagged look-alike pair (train | test)")
    args = parser.parse_args(argv)

    from edgeresnext.data import content, load_dataset
    from edgeresnext.data.calibration import DEFAULT_COUNT, balanced_indices
    from edgeresnext.data.loaders import normalize_array
    from edgeresnext.data.preprocess import Preprocess
    from edgeresnext.data.validation import tuning_holdout_indices
    from edgeresnext.environment import cpu_model

    test = load_dataset("fashion-mnist", split="test")
    train = load_dataset("fashion-mnist", split="train")
    folder = Preprocess.from_dict(FOLDER_PREPROCESS)
    began = time.perf_counter()
    reference = content.fingerprints(normalize_array(test.images, test.preprocess).numpy())
    hashed = time.perf_counter() - began
    copies = {}
    for kind in ("jpeg95", "resize2x", "resize2x+jpeg95", "alpha"):
        prints = content.fingerprints(_copies(test.images, kind, folder))
        bits, gaps = _distances(prints, reference)
        caught = {f.image for f in content.near_copies(prints, reference)}
        copies[kind] = {
            "images": len(test.images),
            "missed": len(test.images) - len(caught),
            "max_hash_bits": int(bits.max()),
            "max_thumb_distance": round(float(gaps.max()), 4),
            "max_score": round(float(content.near_copy_score(bits, gaps).max()), 3),
        }
    holdout = tuning_holdout_indices(train.labels)
    tuning = content.fingerprints(normalize_array(train.images[holdout], train.preprocess).numpy())
    began = time.perf_counter()
    tuning_found = content.near_copies(tuning, reference)
    compared = time.perf_counter() - began
    calib_ids = balanced_indices(train.labels, DEFAULT_COUNT, seed=0)  # the images `make data` writes
    calib = content.fingerprints(normalize_array(train.images[calib_ids], train.preprocess).numpy())
    calib_found = content.near_copies(calib, reference)
    alone = _single_distance_alternatives(tuning, reference, copies)
    result = {
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "rule": f"hash bits / {content.HASH_BITS_SCALE} + thumbnail distance / {content.THUMB_SCALE} <= 1",
        "copies_of_the_10000_test_images": copies,
        "tuning_holdout_5000_vs_test": {
            "flagged": _flagged("train", tuning_found, holdout, train.labels[holdout], test),
            "nearest_not_flagged": _nearest_unflagged(tuning, reference, holdout, {f.image for f in tuning_found}),
            "compare_seconds": round(compared, 2),
        },
        "one_distance_alone_on_the_tuning_images": alone,
        "calib_data_500_vs_test": {
            "flagged": _flagged("train", calib_found, calib_ids, train.labels[calib_ids], test),
            "nearest_not_flagged": _nearest_unflagged(calib, reference, calib_ids, {f.image for f in calib_found}, 3),
        },
        "hash_seconds_10000": round(hashed, 2),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from edgeresnext.atomic import write_text_atomic

        write_text_atomic(args.out, text + "\n")
    if args.pairs_png:
        from PIL import Image

        rows = []
        for pair in result["tuning_holdout_5000_vs_test"]["flagged"] + result["calib_data_500_vs_test"]["flagged"]:
            gap = np.full((28, 2), 255, np.uint8)
            rows += [np.concatenate([train.images[pair["train"]], gap, test.images[pair["test"]]], 1)]
            rows += [np.full((2, 58), 128, np.uint8)]
        if rows:
            grid = np.concatenate(rows)
            Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(args.pairs_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
