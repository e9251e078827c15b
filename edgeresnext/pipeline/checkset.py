"""The device check's set, written into a TensorRT on-device kit before it is bundled.

The kit's ``device_check.py`` (run by the device step once the engine is built) needs what the host knows about a
few validation images: the images already put through the bundle's preprocessing (``check/inputs-NNN.bin``, raw
float32 NCHW, one file per batch as trtexec's ``--loadInputs`` reads it), their labels and the host's per-image FP32
top-1s and INT8 stand-in logits (``check/check.json``), and the host's validation report
(``check/host_report.json``, for ``edgeresnext report BUNDLE``). Cost: two inference passes over
``validate.device_check_images`` images.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgeresnext.backends import Artifact
    from edgeresnext.pipeline.stages import BuildContext

logger = logging.getLogger(__name__)


def _link_or_copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


KEPT_LOGITS = "check_logits.npz"  # the validate stage's logits of the first images, by row name


def save_kept_logits(path: Path, kept: dict[str, np.ndarray]) -> None:
    from edgeresnext.atomic import atomic_path

    names = sorted(kept)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, names=np.array(names), **{f"row{i}": kept[name] for i, name in enumerate(names)})


def load_kept_logits(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {str(name): data[f"row{i}"] for i, name in enumerate(data["names"])}


def _rounded(logits: np.ndarray) -> list[list[float]]:
    """Logits as JSON numbers, to float32's precision (9 significant digits), so the file stays small."""
    return [[float(f"{value:.9g}") for value in row] for row in logits.astype(np.float32).tolist()]


def kit_with_check_set(ctx: BuildContext, artifact: Artifact, scratch: Path) -> tuple[Artifact, dict[str, Any]]:
    """A copy of the kit ``artifact`` in ``scratch`` with its check set; returns it and what the set holds."""
    import onnx

    from edgeresnext.backends import Artifact, get_backend
    from edgeresnext.backends.tensorrt.device_check import CHECK_DIR, CHECK_FILE, GATE, HOST_REPORT
    from edgeresnext.data.validation import load_validation_data
    from edgeresnext.validate import runner_from_file
    from edgeresnext.validate.measure import TorchRunner, run_logits

    target = ctx.target
    plan = artifact.info.extra["plan"]
    source = Path(artifact.path)
    if scratch.exists():
        shutil.rmtree(scratch)
    kit = scratch / source.name
    files = []
    for path in artifact.files:
        path = Path(path)
        if path == source:
            continue
        copy = kit / path.relative_to(source)
        _link_or_copy(path, copy)
        files.append(copy)
    check_dir = kit / CHECK_DIR
    check_dir.mkdir(parents=True, exist_ok=True)

    from edgeresnext.models import read_checkpoint
    from edgeresnext.validate.gates import REFERENCE_NAME

    meta = read_checkpoint(ctx.model_file).meta
    # The first images of the validation set (data.limit keeps the first N): only those are read and preprocessed.
    wanted = target.validate_.device_check_images
    spec = target.data.model_copy(update={"limit": min(target.data.limit or wanted, wanted)})
    data = load_validation_data(spec, meta.preprocess, meta.class_names)
    count = min(wanted, len(data))
    inputs = np.ascontiguousarray(data.inputs[:count], dtype=np.float32)
    labels = [int(y) for y in data.labels[:count]]
    stand_ins = get_backend(artifact.backend).stand_ins(artifact)
    stand_in_name, stand_in = stand_ins[0] if stand_ins else ("qdq-int8 (onnxruntime)", None)
    stand_in_path = Path(stand_in.path) if stand_in is not None else kit / plan["onnx"]
    # The validate stage ran both on these very images (the first of the set): reuse its logits when it kept them.
    kept = load_kept_logits(ctx.folder("validate") / KEPT_LOGITS)
    fp32, stand_in_logits = kept.get(REFERENCE_NAME), kept.get(stand_in_name)
    if fp32 is None or len(fp32) < count:
        fp32 = run_logits(TorchRunner(ctx.load_model()), inputs, progress=False)
    if stand_in_logits is None or len(stand_in_logits) < count:
        runner = runner_from_file(stand_in_path, target, "onnxruntime")
        stand_in_logits = run_logits(runner, inputs, progress=False)
    output_name = onnx.load(str(source / plan["onnx"]), load_external_data=False).graph.output[0].name

    # One file per batch of the plan's largest batch (a static engine: its one batch size), as trtexec loads it.
    size = max(1, int(plan["batch"]["max"]))
    batches = []
    for index, start in enumerate(range(0, count, size)):
        chunk = inputs[start : start + size]
        if len(chunk) < int(plan["batch"]["min"]):
            break  # a last batch below the profile's minimum cannot run; the set ends before it
        name = f"inputs-{index:03d}.bin"
        (check_dir / name).write_bytes(chunk.tobytes())
        batches.append({"file": name, "size": len(chunk)})
        files.append(check_dir / name)
    count = sum(b["size"] for b in batches)
    check = {
        "version": 1,
        "input_name": plan["input_name"],
        "input_chw": list(plan["input_chw"]),
        "output_name": output_name,
        "dtype": "float32",
        "layout": "NCHW",
        "batches": batches,
        "dataset": data.name,
        "labels": labels[:count],
        "host": {
            "fp32_name": "pytorch-fp32",
            "fp32_top1": [int(i) for i in fp32[:count].argmax(1)],
            "stand_in_name": stand_in_name,
            "stand_in_top1": [int(i) for i in stand_in_logits[:count].argmax(1)],
            "stand_in_logits": _rounded(stand_in_logits[:count]),
        },
        "gate": {
            GATE: target.gates.max_device_disagreement,
            "confidence": target.gates.confidence,
            "unproven": target.gates.unproven,
        },
    }
    (check_dir / CHECK_FILE).write_text(json.dumps(check) + "\n", encoding="utf-8")
    files.append(check_dir / CHECK_FILE)
    report = ctx.folder("validate") / "report.json"
    if report.is_file():
        shutil.copyfile(report, check_dir / HOST_REPORT)
        files.append(check_dir / HOST_REPORT)
    mb = sum(path.stat().st_size for path in check_dir.iterdir() if path.name != "stats.py") / 1e6
    info = {"images": count, "batches": len(batches), "batch": size, "megabytes": round(mb, 2)}
    checked = Artifact(
        backend=artifact.backend,
        precision=artifact.precision,
        kind=artifact.kind,
        path=kit,
        files=sorted(set(files)),
        info=replace(artifact.info, device_check_set=info),
    )
    logger.info("device check set: %d images in %d batch(es) of %d, %.1f MB", count, len(batches), size, mb)
    return checked, info
