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
    from edgeresnext.data.content import Fingerprints
    from edgeresnext.data.preprocess import Preprocess


@dataclass
class ValidationData:
    """Preprocessed validation images (float32 NCHW), their labels and the class names.

    Loaded by :func:`load_validation_data`, the images are in the set's seeded class-stratified order
    (:mod:`edgeresnext.data.sampling`), so the first N of them are a class-stratified random sample of the set:
    what ``validate.stand_in_images`` and the device check set take.
    """

    inputs: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str
    # (file, reason) of each unreadable image dropped under data.on_bad_image: skip; the report counts them.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Tuning sets only: images left out because they are near-copies of validation images (same model input up to a
    # resize, a re-encoding or an alpha channel: edgeresnext.data.content), and whether the check found none
    # (None: not checked, e.g. the validation set itself).
    overlap_excluded: int = 0
    disjoint_from_validation: bool | None = None
    # Where each image comes from (a named dataset's index in its split, or the file's path), in this order.
    ids: list[str] = field(default_factory=list)
    # The class-stratified order's seed (data.sample_seed) and the size of the set it was taken from; None: the
    # images are in the order given (not a sample).
    sample_seed: int | None = None
    total: int | None = None
    # Near-copies found by the content check: [{"image", "near", "distance"}...] (tuning sets: the images left out).
    near_copies: list[dict[str, object]] = field(default_factory=list)

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

    def sample_of(self, count: int) -> str:
        """How the first ``count`` images were chosen, for a note: a class-stratified sample, or the first ones."""
        if self.sample_seed is None:
            return f"the first {count:,} of {len(self):,} images"
        seed = f"data.sample_seed {self.sample_seed}"
        return f"a class-stratified random sample of {count:,} of {len(self):,} images ({seed})"


@dataclass
class ValidationPixels:
    """The validation images at model size before normalization (uint8 NCHW), in the set's class-stratified order:
    what :func:`load_validation_data` normalizes, and what the device check set stores."""

    pixels: np.ndarray
    labels: np.ndarray
    ids: list[str]
    name: str
    total: int
    sample_seed: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _sample_name(base: str, count: int, total: int, seed: int) -> str:
    if count >= total:
        return base
    return f"{base} (class-stratified sample of {count:,} of {total:,}, seed {seed})"


def load_validation_pixels(
    spec: DataSpec, preprocess: Preprocess, class_names: Sequence[str], count: int | None = None
) -> ValidationPixels:
    """The first ``count`` (default: ``data.limit``, else all) images of the validation set's class-stratified
    order (:func:`~edgeresnext.data.sampling.stratified_sample`, seed ``data.sample_seed``) at model size, uint8
    NCHW: a named dataset's images as stored (they are at model size), an image folder's after ``preprocess``'s
    mode conversion, resize and crop. Only the chosen files are decoded."""
    from edgeresnext.data import DATASETS, load_dataset
    from edgeresnext.data.sampling import stratified_sample

    count = spec.limit if count is None else min(count, spec.limit or count)
    if spec.dataset in DATASETS:
        dataset = load_dataset(spec.dataset, split=spec.split, root=spec.root)
        if list(dataset.class_names) != list(class_names):
            raise DataError(
                f"{spec.dataset}: dataset classes {dataset.class_names} differ from the model's {list(class_names)}"
            )
        index = stratified_sample(dataset.labels, count, spec.sample_seed)
        images = dataset.images[index]
        pixels = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
        return ValidationPixels(
            pixels=np.ascontiguousarray(pixels),
            labels=dataset.labels[index].astype(np.int64),
            ids=[f"{spec.dataset}/{spec.split}#{int(i)}" for i in index],
            name=_sample_name(f"{spec.dataset}/{spec.split}", len(index), len(dataset), spec.sample_seed),
            total=len(dataset),
            sample_seed=spec.sample_seed,
        )
    folder, files, labels = _sampled_folder(spec, class_names, count)
    from edgeresnext.data.folder import images_at_model_size

    pixels, kept, skipped = images_at_model_size(files, preprocess, on_bad_image=spec.on_bad_image)
    pixels = pixels[:, None] if pixels.ndim == 3 else pixels.transpose(0, 3, 1, 2)
    return ValidationPixels(
        pixels=np.ascontiguousarray(pixels),
        labels=labels[kept],
        ids=[str(files[i]) for i in kept],
        name=_sample_name(str(spec.dataset), len(files), len(folder.files), spec.sample_seed),
        total=len(folder.files),
        sample_seed=spec.sample_seed,
        skipped=skipped,
    )


def _sampled_folder(spec: DataSpec, class_names: Sequence[str], count: int | None):
    """(the scanned folder, the files of its class-stratified sample in order, their labels)."""
    from edgeresnext.data import DATASETS
    from edgeresnext.data.folder import scan_image_folder
    from edgeresnext.data.sampling import stratified_sample

    folder_path = Path(spec.dataset)
    if not folder_path.is_dir():
        raise DataError(
            f"data.dataset={spec.dataset!r} is neither a known dataset ({', '.join(DATASETS)}) "
            "nor an existing image folder"
        )
    folder = scan_image_folder(folder_path, class_names=list(class_names))
    index = stratified_sample(folder.labels, count, spec.sample_seed)
    return folder, [folder.files[i] for i in index], folder.labels[index]


def load_validation_data(spec: DataSpec, preprocess: Preprocess, class_names: Sequence[str]) -> ValidationData:
    """The target's validation set (a named dataset split, or a labelled image folder) through ``preprocess``, in
    its class-stratified order; ``data.limit`` keeps the first N of that order (only those are read)."""
    from edgeresnext.data import DATASETS

    if spec.dataset in DATASETS:
        from edgeresnext.data.loaders import normalize_array

        sample = load_validation_pixels(spec, preprocess, class_names)
        # The dataset's own preprocess was used for training; the model's is the one that must be applied here.
        pixels = sample.pixels[:, 0] if sample.pixels.shape[1] == 1 else sample.pixels.transpose(0, 2, 3, 1)
        return ValidationData(
            inputs=normalize_array(pixels, preprocess).numpy(),
            labels=sample.labels,
            class_names=list(class_names),
            name=sample.name,
            ids=sample.ids,
            sample_seed=sample.sample_seed,
            total=sample.total,
        )
    from edgeresnext.data.folder import load_folder_arrays

    folder, files, labels = _sampled_folder(spec, class_names, spec.limit)
    skipped: list[tuple[str, str]] = []
    inputs, kept = load_folder_arrays(files, preprocess, on_bad_image=spec.on_bad_image, skipped=skipped)
    return ValidationData(
        inputs=inputs.astype(np.float32),
        labels=labels[kept],
        class_names=list(class_names),
        name=_sample_name(str(spec.dataset), len(files), len(folder.files), spec.sample_seed),
        skipped=[(str(file), reason) for file, reason in skipped],
        ids=[str(files[i]) for i in kept],
        sample_seed=spec.sample_seed,
        total=len(folder.files),
    )


@dataclass(frozen=True)
class ValidationImages:
    """The validation set's images as decoded, before any preprocessing (what a serving engine's own preprocessing
    starts from, e.g. DeepStream's nvinfer), one at a time: a folder's files are decoded when asked for, never all held
    in memory. The same selection and order as :func:`load_validation_data`; an image that preprocessing refuses is
    the caller's to leave out, as the validation set leaves it out."""

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
    """The target's validation images as decoded (see :class:`ValidationImages`): the images
    :func:`load_validation_data` takes, in its class-stratified order (``data.limit``, ``data.sample_seed``)."""
    from edgeresnext.data import DATASETS, load_dataset
    from edgeresnext.data.sampling import stratified_sample

    if spec.dataset in DATASETS:
        dataset = load_dataset(spec.dataset, split=spec.split, root=spec.root)
        index = stratified_sample(dataset.labels, spec.limit, spec.sample_seed)
        return ValidationImages(labels=dataset.labels[index].astype(np.int64), arrays=dataset.images[index])
    _folder, files, labels = _sampled_folder(spec, class_names, spec.limit)
    return ValidationImages(labels=np.asarray(labels, np.int64), files=tuple(files))


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


@dataclass
class ValidationPrints:
    """The validation set's near-copy fingerprints (:mod:`edgeresnext.data.content`) and where each image comes from."""

    prints: Fingerprints
    ids: list[str]
    name: str


def validation_fingerprints(spec: DataSpec, preprocess: Preprocess, class_names: Sequence[str]) -> ValidationPrints:
    """Fingerprints of every image the validation set of ``spec`` scores, as the model sees it (after
    ``preprocess``); an image folder is decoded a chunk at a time, so its float inputs are never all in memory."""
    from edgeresnext.data import DATASETS
    from edgeresnext.data.content import Fingerprints, fingerprints

    if spec.dataset in DATASETS:
        data = load_validation_data(spec, preprocess, class_names)
        return ValidationPrints(fingerprints(data.inputs), data.ids, data.name)
    from edgeresnext.data.folder import load_folder_arrays

    _, files, _ = _sampled_folder(spec, class_names, spec.limit)
    parts, ids = [], []
    for start in range(0, len(files), 64):
        chunk = files[start : start + 64]
        try:
            inputs, kept = load_folder_arrays(chunk, preprocess, on_bad_image="skip")
        except DataError:  # none of the chunk decodes: the validation loader reports those files
            continue
        parts.append(fingerprints(inputs))
        ids += [str(chunk[i]) for i in kept]
    return ValidationPrints(Fingerprints.concatenate(parts), ids, str(spec.dataset))


def near_copies_of_validation(inputs: np.ndarray, ids: Sequence[str], reference: ValidationPrints) -> list[dict]:
    """``[{"image", "near", "score"}...]``: each of ``inputs`` (model inputs, named by ``ids``) that is a near-copy of a
    validation image (the same model input up to a resize, a re-encoding or an alpha channel), with the nearest one."""
    from edgeresnext.data.content import fingerprints, near_copies

    found = near_copies(fingerprints(inputs), reference.prints)
    return [{"image": str(ids[f.image]), "near": reference.ids[f.near], "score": round(f.score, 3)} for f in found]


def load_tuning_data(
    spec: DataSpec,
    quant: QuantSpec,
    preprocess: Preprocess,
    class_names: Sequence[str],
    reference: ValidationPrints | None = None,
) -> ValidationData | str:
    """Labelled images for the build's own decisions (the float fallback), disjoint from the validation set the
    gates judge, so a decision is never tuned on the images that score it; or, when there are none, why.

    In order: ``quant.tune_dir`` (a labelled image folder); for a named dataset validated on one split, a seeded,
    class-balanced sample of ``quant.tune_images`` from the other split; for an image folder, the calibration
    folder when it is labelled with the model's classes. Disjointness is checked by content, after the model's
    preprocessing (:mod:`edgeresnext.data.content`; ``reference`` holds the validation set's fingerprints, computed
    here when not given), not by path: a tuning image that is a near-copy of a validation image (a copied folder, an
    exported test image, the same photo resized, saved again as JPEG or with an alpha channel) is left out and
    counted in ``overlap_excluded``, and ``disjoint_from_validation`` is True only when there was none; when every
    one is, there are no tuning images.
    """
    from edgeresnext.data import DATASETS

    count = quant.tune_images
    if quant.tune_dir is None and spec.dataset not in DATASETS:
        calib = Path(quant.calib_dir)
        if calib.resolve() == Path(spec.dataset).resolve():
            return (
                f"the calibration folder {calib} is also the validation set, and no other labelled images are given "
                "(quant.tune_dir)"
            )
    reference = reference or validation_fingerprints(spec, preprocess, class_names)
    if quant.tune_dir is not None:
        return _folder_data(Path(quant.tune_dir), count, preprocess, class_names, spec.on_bad_image, reference)
    if spec.dataset in DATASETS:
        return _other_split_data(spec, count, preprocess, class_names, reference)
    calib = Path(quant.calib_dir)
    try:
        return _folder_data(calib, count, preprocess, class_names, spec.on_bad_image, reference)
    except DataError as err:
        return f"the calibration folder {calib} is not labelled with the model's classes ({err})"


def _without_near_copies(
    inputs: np.ndarray,
    labels: np.ndarray,
    ids: list[str],
    class_names: Sequence[str],
    reference: ValidationPrints,
    source: str,
    extra: str = "",
) -> ValidationData | str:
    """The tuning images less the near-copies of validation images, saying how many were left out."""
    copies = near_copies_of_validation(inputs, ids, reference)
    if len(copies) == len(ids):
        return (
            f"every one of the {len(ids)} images taken from {source} is a near-copy of a validation image (the same "
            "model input up to a resize, a re-encoding or an alpha channel)"
        )
    left_out = {copy["image"] for copy in copies}
    keep = np.array([i for i, name in enumerate(ids) if name not in left_out], dtype=np.int64)
    excluded = f"; {len(copies)} near-copies of validation images left out" if copies else ""
    return ValidationData(
        inputs=np.ascontiguousarray(inputs[keep], dtype=np.float32),
        labels=labels[keep],
        class_names=list(class_names),
        name=f"{source} ({len(keep)} images{extra}{excluded})",
        overlap_excluded=len(copies),
        disjoint_from_validation=not copies,
        ids=[ids[i] for i in keep],
        near_copies=copies,
    )


def _other_split_data(
    spec: DataSpec, count: int, preprocess: Preprocess, class_names: Sequence[str], reference: ValidationPrints
) -> ValidationData | str:
    """A seeded, class-balanced sample of ``count`` images from the named dataset's split that is not validated on
    (of the training split: its tuning hold-out, which training never sees), less any near-copy of a validation
    image."""
    from edgeresnext.data import load_dataset
    from edgeresnext.data.calibration import balanced_indices
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
    inputs = normalize_array(dataset.images[index], preprocess).numpy()
    ids = [f"{spec.dataset}/{other.split()[0]}#{int(i)}" for i in index]
    labels = dataset.labels[index].astype(np.int64)
    extra = f", class-balanced, seed {TUNING_SEED}; validation uses {spec.split}"
    return _without_near_copies(inputs, labels, ids, class_names, reference, f"{spec.dataset}/{other}", extra)


def _folder_data(
    folder: Path,
    count: int,
    preprocess: Preprocess,
    class_names: Sequence[str],
    on_bad_image: str,
    reference: ValidationPrints,
) -> ValidationData | str:
    from edgeresnext.data.folder import load_folder_arrays, scan_image_folder

    scanned = scan_image_folder(folder, class_names=list(class_names))
    # Every k-th file, so a cap keeps every class (sorted paths list the classes one after another).
    step = max(1, len(scanned.files) // count)
    chosen = list(range(0, len(scanned.files), step))[:count]
    inputs, kept = load_folder_arrays([scanned.files[i] for i in chosen], preprocess, on_bad_image=on_bad_image)
    chosen = [chosen[i] for i in kept]
    ids = [str(scanned.files[i]) for i in chosen]
    return _without_near_copies(inputs, scanned.labels[chosen], ids, class_names, reference, str(folder))
