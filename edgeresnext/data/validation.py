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
    from edgeresnext.config import DataSpec
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
