"""The bundle stage's DeepStream export: the variant ONNX into a copy of the kit (the device step builds its engine),
and the ``deepstream/`` folder, its settings taken from the validation report's DeepStream section (measured by the
validate stage: :mod:`edgeresnext.validate.deepstream`)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeresnext.serving.deepstream import FOLDER, write_deepstream_folder

if TYPE_CHECKING:
    from edgeresnext.backends import Artifact
    from edgeresnext.models import ModelMeta
    from edgeresnext.pipeline.stages import BuildContext
    from edgeresnext.validate.deepstream import DeepStreamPreprocessing

logger = logging.getLogger(__name__)


def deepstream_export(
    ctx: BuildContext, artifact: Artifact, meta: ModelMeta, section: DeepStreamPreprocessing
) -> tuple[Artifact, tuple[dict[str, Any], dict[str, Path]]]:
    """The kit with the DeepStream variant (a copy), and the export (the manifest's record, the folder's files), the
    configs set as the report's DeepStream ``section`` measured."""
    from edgeresnext.backends import copy_artifact_folder, get_backend
    from edgeresnext.serving.deepstream import kit_with_deepstream

    kit, files = copy_artifact_folder(artifact, ctx.root / "deepstream-kit")
    # The kit's plan and build script are rewritten through temporary names: the compile stage's files stay as they were
    variant, plan = kit_with_deepstream(kit, meta.preprocess, get_backend(artifact.backend))
    if tuple(plan["input_chw"][1:]) != tuple(section.network_size):
        raise ValueError(f"the report measured nvinfer at {section.network_size}, the kit builds {plan['input_chw']}")
    folder = ctx.root / FOLDER
    record = write_deepstream_folder(folder, plan, meta.preprocess, list(meta.class_names or []), section)
    exported = {f"{FOLDER}/{path.name}": path for path in sorted(folder.iterdir()) if path.is_file()}
    return replace(artifact, path=kit, files=[*files, variant]), (record, exported)
