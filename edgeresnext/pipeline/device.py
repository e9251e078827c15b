"""What the pipeline hands a backend whose build finishes on the device: the validate stage keeps the host's logits of
the images the bundle for the device will carry (:func:`save_kept_logits`), and the bundle stage gives the backend
what the host knows (:func:`host_outputs`, a :class:`~edgeresnext.backends.HostOutputs`) for
:meth:`~edgeresnext.backends.Backend.bundle_for_device`. The backend never reaches into a build folder."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgeresnext.backends import HostOutputs
    from edgeresnext.models import ModelMeta
    from edgeresnext.pipeline.stages import BuildContext

KEPT_LOGITS = "check_logits.npz"  # the validate stage's logits of the images a device bundle carries, by row name


def save_kept_logits(path: Path, kept: dict[str, np.ndarray], ids: list[str], inputs: np.ndarray) -> None:
    """The validate stage's logits of the first images, with those images' ids and the sha256 of their float32 bytes
    (they are reused only for the very same bytes)."""
    from edgeresnext.atomic import atomic_path

    names = sorted(kept)
    arrays = {f"row{i}": kept[name] for i, name in enumerate(names)}
    digest = _inputs_sha256(inputs)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, names=np.array(names), ids=np.array(ids), inputs_sha256=np.array(digest), **arrays)


def _inputs_sha256(inputs: np.ndarray) -> str:
    """The sha256 of images as the float32 bytes a device is fed (the one hash both sides of the reuse compare)."""
    return hashlib.sha256(np.ascontiguousarray(inputs, dtype=np.float32).tobytes()).hexdigest()


def load_kept_logits(path: Path) -> tuple[dict[str, np.ndarray], list[str], str]:
    """``(logits by row name, image ids, sha256 of the inputs)``; empty when the validate stage kept none."""
    if not path.is_file():
        return {}, [], ""
    with np.load(path, allow_pickle=False) as data:
        kept = {str(name): data[f"row{i}"] for i, name in enumerate(data["names"])}
        ids = [str(i) for i in data["ids"]] if "ids" in data else []
        digest = str(data["inputs_sha256"]) if "inputs_sha256" in data else ""
    return kept, ids, digest


def _near_copies(ctx: BuildContext) -> frozenset[str]:
    """The validation images the quantize stage found to be near-copies of calibration images."""
    near = ctx.done["quantize"].info.calibration_near_copies if "quantize" in ctx.done else None
    return frozenset(pair["near"] for pair in near.images) if near is not None else frozenset()


def host_outputs(ctx: BuildContext, meta: ModelMeta, report: Path, validated: int) -> HostOutputs:
    """What the host knows for a bundle finished on the device: the validate stage's report (``report``, which
    validated ``validated`` images) and kept logits, the model ``meta`` (the model is run here for logits the
    validate stage did not keep), the quantize stage's near-copies."""
    from edgeresnext.backends import HostOutputs

    kept, kept_ids, digest = load_kept_logits(ctx.folder("validate") / KEPT_LOGITS)

    def logits(inputs: np.ndarray, ids: list[str], row: str | None = None, onnx: Path | None = None):
        from edgeresnext.validate import runner_from_file
        from edgeresnext.validate.gates import REFERENCE_NAME
        from edgeresnext.validate.measure import TorchRunner, run_logits

        same = kept_ids[: len(inputs)] == ids and digest == _inputs_sha256(inputs)
        rows = kept.get(REFERENCE_NAME if row is None else row) if same else None
        if rows is not None and len(rows) >= len(inputs):
            return rows, True
        runner = TorchRunner(ctx.load_model()) if onnx is None else runner_from_file(onnx, ctx.target, "onnxruntime")
        return run_logits(runner, inputs, progress=False), False

    return HostOutputs(ctx.target, meta, validated, report, logits, _near_copies(ctx))
