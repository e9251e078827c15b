"""The near-copy check (edgeresnext.data.content) on real photos, with an ImageNet model's preprocessing (RGB, resize
256, center crop 224): bench/near_copies.py measures it on Fashion-MNIST only.

The only real photos a machine here has are the sample photos that come with matplotlib and scikit-learn
(grace_hopper.jpg, china.jpg, flower.jpg). From each, ``--crops`` seeded random crops (a side of 45-80 % of the
photo's shorter side, anywhere in it) make the "validation photos". Then:

- **copies**: each crop saved as JPEG q95, resized 2x, resized 2x then JPEG q95, and as RGBA with an opaque alpha
  channel: how many the check misses, and the largest distances;
- **look-alikes**: every pair of crops of the same photo whose boxes overlap by less than half (intersection over
  union < 0.5: the same scene, framed differently, which a user would call two photos): how many the check flags;
  and the pairs of crops from different photos.

    .venv/bin/python -m bench.near_copies_photos --out bench/near_copies_photos.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

PREPROCESS = {
    "channels": "RGB",
    "resize": 256,
    "crop": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
KINDS = ("jpeg95", "resize2x", "resize2x+jpeg95", "alpha")


def sample_photos() -> list[Path]:
    """The sample photos of the installed matplotlib and scikit-learn (NNCF installs it)."""
    import importlib.util

    found = []
    for package, names in (
        ("matplotlib", ["mpl-data/sample_data/grace_hopper.jpg"]),
        ("sklearn", ["datasets/images/china.jpg", "datasets/images/flower.jpg"]),
    ):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            found += [Path(spec.origin).parent / name for name in names]
    photos = [path for path in found if path.is_file()]
    if not photos:
        raise SystemExit("bench.near_copies_photos: no sample photos found (pip install matplotlib scikit-learn)")
    return photos


def crops(photo, count: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """``count`` square boxes (left, top, right, bottom) of 45-80 % of the shorter side, anywhere in the photo."""
    width, height = photo.size
    boxes = []
    for _ in range(count):
        side = int(rng.uniform(0.45, 0.8) * min(width, height))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        boxes.append((left, top, left + side, top + side))
    return boxes


def iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--crops", type=int, default=60, choices=range(2, 1001), metavar="2..1000")
    parser.add_argument("--seed", type=int, default=0, choices=range(0, 2**31), metavar="SEED")
    args = parser.parse_args(argv)

    from PIL import Image

    from bench.near_copies import _distances, copy_of, pairwise
    from edgeresnext.data import content
    from edgeresnext.data.preprocess import Preprocess
    from edgeresnext.environment import cpu_model

    preprocess = Preprocess.from_dict(PREPROCESS)
    rng = np.random.default_rng(args.seed)
    images, boxes, sources = [], [], []
    photos = sample_photos()
    for index, path in enumerate(photos):
        photo = Image.open(path).convert("RGB")
        for box in crops(photo, args.crops, rng):
            images.append(photo.crop(box))
            boxes.append(box)
            sources.append(index)
    reference = content.fingerprints(np.stack([preprocess.image_to_array(image) for image in images]))
    copies = {}
    for kind in KINDS:
        prints = content.fingerprints(np.stack([preprocess.image_to_array(copy_of(image, kind)) for image in images]))
        bits, gaps = _distances(prints, reference)
        caught = {f.image for f in content.near_copies(prints, reference) if f.near == f.image}
        copies[kind] = {
            "images": len(images),
            "missed": len(images) - len(caught),
            "max_hash_bits": int(bits.max()),
            "max_thumb_distance": round(float(gaps.max()), 4),
            "max_score": round(float(content.near_copy_score(bits, gaps).max()), 3),
        }
    # Every crop against every other: which pairs the check calls near-copies.
    bits, gaps = pairwise(reference, reference)
    flagged = content.near_copy_score(bits, gaps) <= 1.0
    pairs = {"same photo, IoU < 0.5": [0, 0], "same photo, IoU >= 0.5": [0, 0], "different photos": [0, 0]}
    worst: list[dict] = []
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            if sources[i] != sources[j]:
                kind = "different photos"
            else:
                overlap = iou(boxes[i], boxes[j])
                kind = "same photo, IoU < 0.5" if overlap < 0.5 else "same photo, IoU >= 0.5"
            pairs[kind][0] += 1
            pairs[kind][1] += int(flagged[i, j])
            if flagged[i, j] and kind != "same photo, IoU >= 0.5":
                worst.append({"pair": [i, j], "kind": kind, "hash_bits": int(bits[i, j]), "thumb": float(gaps[i, j])})
    result = {
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "photos": [path.name for path in photos],
        "crops_per_photo": args.crops,
        "preprocess": PREPROCESS,
        "rule": f"hash bits / {content.HASH_BITS_SCALE} + thumbnail distance / {content.THUMB_SCALE} <= 1",
        "copies": copies,
        "pairs": {kind: {"pairs": total, "flagged": hits} for kind, (total, hits) in pairs.items()},
        "flagged_look_alikes": worst[:20],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from edgeresnext.atomic import write_text_atomic

        write_text_atomic(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
