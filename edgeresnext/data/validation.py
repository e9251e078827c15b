"""The validation set a build is judged on: a named dataset split or a labelled image folder, preprocessed
for the model (float32 NCHW) with its labels and class names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeresnext.errors import DataError

if TYPE_CHECKING:
    from edgeresnext.config import DataSpec, QuantSpec
    from edgeresnext.data.preprocess import Preprocess


@dataclass
class ValidationData:
    """Preprocessed validation images (float32 NCHW), their labels and the class names."""

    inputs: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str
    # (file, reason) of each unreadable image dropped under data.on_bad_image: skip; the report counts them.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Tuning sets only: images left out because their content (decoded pixels) is also in the validation set, and
    # whether what is left was checked to share no image with it (None: not checked, e.g. the validation set itself).
    overlap_excluded: int = 0
    disjoint_from_validation: bool | None = None

    def __post_init__(self) -> None:
        if self.inputs.ndim != 4 or self.inputs.dtype != np.float32:
            raise DataError(
                f"{self.name}: validation inputs must be float32 NCHW, got {self.inputs.dtype} {self.inputs.shape}"
            )
        if len(self.inputs) != len(self.labels) or len(self.labels) == 0:
            raise DataError(f"{self.name}: {len(self.inputs)} inputs for {len(self.labels)} labels")
        outside = np.flatnonzero((self.labels < 0) | (self.labels >= len(self.class_names)))
        if len(outside):
            first = int(outside[0])
            raise DataError(
                f"{self.name}: image {first} has label {int(self.labels[first])}, outside the model's "
                f"{len(self.class_names)} classes (0-{len(self.class_names) - 1}: "
                f"{', '.join(self.class_names)}); {len(outside)} such label(s)"
            )

    def __len__(self) -> int:
        return len(self.labels)


def load_validation_data(spec: DataSpec, preprocess: Preprocess, class_names: Sequence[str]) -> ValidationData:
    """The target's validation set (a named dataset split, or a labelled image folder) through ``preprocess``."""
    from edgeresnext.data import DATASETS, load_dataset

    if spec.dataset in DATASETS:
        from edgeresnext.data.loaders import normalize_array

        dataset = load_dataset(spec.dataset, split=spec.split, root=spec.root)
        count = min(spec.limit or len(dataset), len(dataset))
        if list(dataset.class_names) != list(class_names):
            raise DataError(
                f"{spec.dataset}: dataset classes {dataset.class_names} differ from the model's {list(class_names)}"
            )
        # The dataset's own preprocess was used for training; the model's is the one that must be applied here.
        inputs = normalize_array(dataset.images[:count], preprocess).numpy()
        return ValidationData(
            inputs=inputs,
            labels=dataset.labels[:count].astype(np.int64),
            class_names=list(class_names),
            name=f"{spec.dataset}/{spec.split}[:{count}]",
        )
    folder_path = Path(spec.dataset)
    if not folder_path.is_dir():
        raise DataError(
            f"data.dataset={spec.dataset!r} is neither a known dataset ({', '.join(DATASETS)}) "
            "nor an existing image folder"
        )
    from edgeresnext.data.folder import load_folder_arrays, scan_image_folder

    folder = scan_image_folder(folder_path, class_names=list(class_names))
    files = folder.files[: spec.limit] if spec.limit else folder.files
    skipped: list[tuple[str, str]] = []
    inputs, kept = load_folder_arrays(files, preprocess, on_bad_image=spec.on_bad_image, skipped=skipped)
    labels = folder.labels[: len(files)][kept]
    return ValidationData(
        inputs=inputs.astype(np.float32),
        labels=labels,
        class_names=list(class_names),
        name=str(folder_path),
        skipped=[(str(file), reason) for file, reason in skipped],
    )


@dataclass(frozen=True)
class ValidationImages:
    """The validation set's images as decoded, before any preprocessing (what a serving engine's own preprocessing
    starts from, e.g. DeepStream's nvinfer), one at a time: a folder's files are decoded when asked for, never all held
    in memory. The same selection as :func:`load_validation_data` (split, ``limit``); an image that preprocessing
    refuses is the caller's to leave out, as the validation set leaves it out."""

    labels: np.ndarray
    arrays: np.ndarray | None = None  # a named dataset's uint8 images
    files: tuple[Path, ...] = ()  # an image folder's files, in the validation set's order

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int):
        """Image ``index``: a uint8 array (named dataset) or a decoded PIL image (folder; DataError if unreadable)."""
        if self.arrays is not None:
            return self.arrays[index]
        from edgeresnext.data.folder import decode_image

        return decode_image(self.files[index])


def validation_images(spec: DataSpec, class_names: Sequence[str]) -> ValidationImages:
    """The target's validation images as decoded (see :class:`ValidationImages`)."""
    from edgeresnext.data import DATASETS, load_dataset

    if spec.dataset in DATASETS:
        dataset = load_dataset(spec.dataset, split=spec.split, root=spec.root)
        count = min(spec.limit or len(dataset), len(dataset))
        return ValidationImages(labels=dataset.labels[:count].astype(np.int64), arrays=dataset.images[:count])
    from edgeresnext.data.folder import scan_image_folder

    folder = scan_image_folder(Path(spec.dataset), class_names=list(class_names))
    files = folder.files[: spec.limit] if spec.limit else folder.files
    return ValidationImages(labels=np.asarray(folder.labels[: len(files)], np.int64), files=tuple(files))


TUNING_SEED = 1
# A named dataset's training split keeps 1 image in 12 (5,000 of Fashion-MNIST's 60,000, class-balanced, seeded) out of
# training and QAT: the fallback's default tuning images, which the FP32 model has never seen (tuning on its own
# training images understates the INT8 drop: bench/tuning_bias.py measures by how much).
TUNING_HOLDOUT_EVERY = 12


def tuning_holdout_indices(labels: np.ndarray) -> np.ndarray:
    """The indices of a named dataset's training split held out for tuning (sorted); training and QAT skip them."""
    from edgeresnext.data.calibration import balanced_indices

    count = len(labels) // TUNING_HOLDOUT_EVERY
    if count == 0:  # fewer than 12 images: nothing to hold out
        return np.zeros(0, dtype=np.int64)
    return balanced_indices(np.asarray(labels), count, seed=TUNING_SEED)


def without_tuning_holdout(labels: np.ndarray) -> np.ndarray:
    """The indices of a named dataset's training split that training and QAT may use (all but the held-out ones)."""
    return np.setdiff1d(np.arange(len(labels)), tuning_holdout_indices(labels))


def load_tuning_data(
    spec: DataSpec, quant: QuantSpec, preprocess: Preprocess, class_names: Sequence[str]
) -> ValidationData | str:
    """Labelled images for the build's own decisions (the float fallback), disjoint from the validation set the
    gates judge, so a decision is never tuned on the images that score it; or, when there are none, why.

    In order: ``quant.tune_dir`` (a labelled image folder); for a named dataset validated on one split, a seeded,
    class-balanced sample of ``quant.tune_images`` from the other split; for an image folder, the calibration
    folder when it is labelled with the model's classes. Disjointness is checked by content
    (:mod:`edgeresnext.data.content`: a digest of each decoded image), not by path: a tuning image that is also a
    validation image (a copied folder, an exported test image) is left out and counted in ``overlap_excluded``;
    when every one is, there are no tuning images.
    """
    from edgeresnext.data import DATASETS
    from edgeresnext.data.content import validation_digests

    count = quant.tune_images
    if quant.tune_dir is None and spec.dataset not in DATASETS:
        calib = Path(quant.calib_dir)
        if calib.resolve() == Path(spec.dataset).resolve():
            return (
                f"the calibration folder {calib} is also the validation set, and no other labelled images are given "
                "(quant.tune_dir)"
            )
    seen = validation_digests(spec)
    if quant.tune_dir is not None:
        return _folder_data(Path(quant.tune_dir), count, preprocess, class_names, spec.on_bad_image, seen)
    if spec.dataset in DATASETS:
        return _other_split_data(spec, count, preprocess, class_names, seen)
    calib = Path(quant.calib_dir)
    try:
        return _folder_data(calib, count, preprocess, class_names, spec.on_bad_image, seen)
    except DataError as err:
        return f"the calibration folder {calib} is not labelled with the model's classes ({err})"


def _other_split_data(
    spec: DataSpec, count: int, preprocess: Preprocess, class_names: Sequence[str], seen: set[str]
) -> ValidationData | str:
    """A seeded, class-balanced sample of ``count`` images from the named dataset's split that is not validated on
    (of the training split: its tuning hold-out, which training never sees), less any validation image."""
    from edgeresnext.data import load_dataset
    from edgeresnext.data.calibration import balanced_indices
    from edgeresnext.data.content import array_digests, overlapping
    from edgeresnext.data.loaders import normalize_array

    other = "train" if spec.split != "train" else "test"
    dataset = load_dataset(spec.dataset, split=other, root=spec.root)
    if list(dataset.class_names) != list(class_names):
        return f"{spec.dataset}/{other} has other classes than the model"
    if other == "train":  # the part of the training split that training never sees, or a balanced share of it
        pool = tuning_holdout_indices(dataset.labels)
        index = pool[balanced_indices(dataset.labels[pool], min(count, len(pool)), seed=TUNING_SEED)]
        other = f"train held-out 1 in {TUNING_HOLDOUT_EVERY}"
    else:
        index = balanced_indices(dataset.labels, min(count, len(dataset)), seed=TUNING_SEED)
    digests = array_digests(dataset.images[index])
    shared = overlapping(digests, seen)
    index, digests = np.delete(index, shared), [d for i, d in enumerate(digests) if i not in set(shared)]
    if len(index) == 0:
        return f"every one of the {len(shared)} {spec.dataset}/{other} tuning images is also a validation image"
    excluded = f"; {len(shared)} also in the validation set left out" if shared else ""
    return ValidationData(
        inputs=normalize_array(dataset.images[index], preprocess).numpy(),
        labels=dataset.labels[index].astype(np.int64),
        class_names=list(class_names),
        name=f"{spec.dataset}/{other} ({len(index)} images, class-balanced, seed {TUNING_SEED}{excluded}; "
        f"validation uses {spec.split})",
        overlap_excluded=len(shared),
        disjoint_from_validation=not overlapping(digests, seen),
    )


def _folder_data(
    folder: Path, count: int, preprocess: Preprocess, class_names: Sequence[str], on_bad_image: str, seen: set[str]
) -> ValidationData | str:
    from edgeresnext.data.content import file_digests, overlapping
    from edgeresnext.data.folder import load_folder_arrays, scan_image_folder

    scanned = scan_image_folder(folder, class_names=list(class_names))
    # Every k-th file, so a cap keeps every class (sorted paths list the classes one after another).
    step = max(1, len(scanned.files) // count)
    chosen = list(range(0, len(scanned.files), step))[:count]
    digests = file_digests([scanned.files[i] for i in chosen])
    shared = set(overlapping(digests, seen))
    if len(shared) == len(chosen):
        return (
            f"every one of the {len(chosen)} images taken from {folder} is also a validation image (same decoded "
            "pixels)"
        )
    chosen = [file for position, file in enumerate(chosen) if position not in shared]
    digests = [digest for position, digest in enumerate(digests) if position not in shared]
    inputs, kept = load_folder_arrays([scanned.files[i] for i in chosen], preprocess, on_bad_image=on_bad_image)
    excluded = f"; {len(shared)} also in the validation set left out" if shared else ""
    return ValidationData(
        inputs=inputs.astype(np.float32),
        labels=scanned.labels[chosen][kept],
        class_names=list(class_names),
        name=f"{folder} ({len(kept)} images{excluded})",
        overlap_excluded=len(shared),
        disjoint_from_validation=not overlapping([digests[i] for i in kept], seen),
    )
