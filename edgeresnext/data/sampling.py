"""The one way a build takes part of a labelled set: a seeded, class-stratified random order.

Every "first N images" the build uses (``data.limit``, ``validate.stand_in_images``, the Jetson device check set)
is a prefix of :func:`stratified_order`, so each is a random sample that keeps every class in proportion, and the
smaller ones are nested in the larger (the device check set is part of the stand-in's images, which are part of the
validation set). Taking the first N files of a sorted photo folder instead takes N images of its first class.

How the order is made: within each class the images get a random rank ``r`` (a permutation), and each image the key
``(r + u_c) / n_c`` with ``n_c`` the class's size and ``u_c`` one uniform offset per class; the order sorts the keys
(ties by a random draw). A prefix is every image up to some key ``t`` (its sampling fraction), so it holds
``ceil(t n_c - u_c)`` images of class ``c``: ``t n_c`` rounded up or down at random (up with probability equal to its
fractional part, so on average exactly ``t n_c``), never a whole image away from it, for every class at once
(``tests/test_sampling.py`` checks every prefix). A class too small for its share to reach one image at that
fraction may have none in it: the sample is proportional, so it stands for the whole set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeresnext.errors import DataError

__all__ = ["class_counts", "stratified_order", "stratified_sample"]


def stratified_order(labels: Sequence[int] | np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(len(labels))`` whose every prefix is a class-stratified random sample (the seed
    is the target's ``data.sample_seed``)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels have shape {labels.shape}; expected one label per image (1-D)")
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels), dtype=np.float64)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        keys[members] = (rng.permutation(len(members)) + rng.random()) / len(members)
    return np.lexsort((rng.random(len(labels)), keys)).astype(np.int64)


def stratified_sample(labels: Sequence[int] | np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """The first ``count`` images of :func:`stratified_order` (all of them when ``count`` is None or larger)."""
    order = stratified_order(labels, seed)
    return order if count is None else order[:count]


def class_counts(labels: Sequence[int] | np.ndarray, class_names: Sequence[str]) -> dict[str, int]:
    """``{class name: images}`` for every class, in the model's class order (0 for a class with none)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    return {name: int(counts[i]) for i, name in enumerate(class_names)}
