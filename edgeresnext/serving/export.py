"""The bundle stage's DeepStream export: the variant ONNX into a copy of the kit (the device step builds its engine),
nvinfer's preprocessing measured on the validation images, and the ``deepstream/`` folder."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnext.serving.deepstream import FOLDER, measure_preprocessing, write_deepstream_folder

if TYPE_CHECKING:
    from edgeresnext.backends import Artifact
    from edgeresnext.config import DataSpec
    from edgeresnext.models import ModelMeta
    from edgeresnext.pipeline.stages import BuildContext

logger = logging.getLogger(__name__)


def raw_validation_images(spec: DataSpec, class_names: list[str]) -> tuple[list[Any], np.ndarray]:
    """The validation images as decoded (before any preprocessing: nvinfer's own is applied to them) and their
    labels; unreadable files are left out, as the validation set leaves them out."""
    from edgeresnext.data import DATASETS, load_dataset
    from edgeresnext.data.folder import decode_image, scan_image_folder
    from edgeresnext.errors import DataError

    if spec.dataset in DATASETS:
        dataset = load_dataset(spec.dataset, split=spec.split, root=spec.root)
        count = min(spec.limit or len(dataset), len(dataset))
        return list(dataset.images[:count]), dataset.labels[:count].astype(np.int64)
    folder = scan_image_folder(Path(spec.dataset), class_names=list(class_names))
    files = folder.files[: spec.limit] if spec.limit else folder.files
    images, labels = [], []
    for file, label in zip(files, folder.labels[: len(files)], strict=True):
        try:
            images.append(decode_image(file))
        except DataError as err:
            logger.warning("deepstream figures: %s left out (%s)", file, err)
            continue
        labels.append(int(label))
    return images, np.asarray(labels, np.int64)


def deepstream_export(
    ctx: BuildContext, artifact: Artifact, meta: ModelMeta
) -> tuple[Artifact, tuple[dict[str, Any], dict[str, Path]]]:
    """The kit with the DeepStream variant (a copy), and the export (the manifest's record, the folder's files)."""
    from edgeresnext.pipeline.checkset import _copied_kit
    from edgeresnext.serving.deepstream import kit_with_deepstream

    kit, files = _copied_kit(artifact, ctx.root / "deepstream-kit")
    # kit.json and build_engine.sh are rewritten through temporary names: the compile stage's files stay as they were
    variant = kit_with_deepstream(kit, meta.preprocess)
    plan = json.loads((kit / "kit.json").read_text(encoding="utf-8"))["plan"]
    images, labels = raw_validation_images(ctx.target.data, list(meta.class_names or []))
    size = (int(plan["input_chw"][1]), int(plan["input_chw"][2]))
    rows = measure_preprocessing(ctx.fp32_onnx, images, labels, meta.preprocess, size)
    folder = ctx.root / FOLDER
    record = write_deepstream_folder(folder, plan, meta.preprocess, list(meta.class_names or []), rows)
    exported = {f"{FOLDER}/{path.name}": path for path in sorted(folder.iterdir()) if path.is_file()}
    return replace(artifact, path=kit, files=[*files, variant]), (record, exported)
