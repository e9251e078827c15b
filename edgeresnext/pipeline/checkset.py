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


def _copied_kit(artifact: Artifact, scratch: Path) -> tuple[Path, list[Path]]:
    """The kit's files linked (or copied) into a fresh ``scratch``; the kit folder there and its files."""
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
    return kit, files


def _check_images(ctx: BuildContext):
    """The first ``validate.device_check_images`` validation images (data.limit keeps the first N: only those are
    read and preprocessed) as the bundle preprocesses them; the data set and the float32 NCHW inputs."""
    from edgeresnext.data.validation import load_validation_data
    from edgeresnext.models import read_checkpoint

    target = ctx.target
    meta = read_checkpoint(ctx.model_file).meta
    wanted = target.validate_.device_check_images
    spec = target.data.model_copy(update={"limit": min(target.data.limit or wanted, wanted)})
    data = load_validation_data(spec, meta.preprocess, meta.class_names)
    count = min(wanted, len(data))
    return data, np.ascontiguousarray(data.inputs[:count], dtype=np.float32)


def _host_logits(ctx: BuildContext, artifact: Artifact, kit: Path, inputs: np.ndarray):
    """The host's FP32 logits and its INT8 stand-in's (name, logits) on ``inputs``: the validate stage's, which ran
    on these very images (the first of the set), when it kept them; else run here."""
    from edgeresnext.backends import get_backend
    from edgeresnext.validate import runner_from_file
    from edgeresnext.validate.gates import REFERENCE_NAME
    from edgeresnext.validate.measure import TorchRunner, run_logits

    stand_ins = get_backend(artifact.backend).stand_ins(artifact)
    stand_in_name, stand_in = stand_ins[0] if stand_ins else ("qdq-int8 (onnxruntime)", None)
    stand_in_path = Path(stand_in.path) if stand_in is not None else kit / artifact.info.extra["plan"]["onnx"]
    kept = load_kept_logits(ctx.folder("validate") / KEPT_LOGITS)
    fp32, stand_in_logits = kept.get(REFERENCE_NAME), kept.get(stand_in_name)
    if fp32 is None or len(fp32) < len(inputs):
        fp32 = run_logits(TorchRunner(ctx.load_model()), inputs, progress=False)
    if stand_in_logits is None or len(stand_in_logits) < len(inputs):
        runner = runner_from_file(stand_in_path, ctx.target, "onnxruntime")
        stand_in_logits = run_logits(runner, inputs, progress=False)
    return fp32, stand_in_name, stand_in_logits


def _write_input_batches(check_dir: Path, inputs: np.ndarray, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """One file per batch of the plan's largest batch (a static engine: its one batch size), as trtexec loads it;
    a last batch below the profile's minimum cannot run, so the set ends before it."""
    size = max(1, int(plan["batch"]["max"]))
    batches = []
    for index, start in enumerate(range(0, len(inputs), size)):
        chunk = inputs[start : start + size]
        if len(chunk) < int(plan["batch"]["min"]):
            break
        name = f"inputs-{index:03d}.bin"
        (check_dir / name).write_bytes(chunk.tobytes())
        batches.append({"file": name, "size": len(chunk)})
    return batches


def _check_record(ctx: BuildContext, plan: dict[str, Any], output_name: str, data, batches: list, host: dict) -> dict:
    """``check.json``: how to feed the input files and read the output, the labels, the host's results, the gate."""
    from edgeresnext.backends.tensorrt.device_check import GATE

    gates = ctx.target.gates
    count = sum(b["size"] for b in batches)
    return {
        "version": 1,
        "input_name": plan["input_name"],
        "input_chw": list(plan["input_chw"]),
        "output_name": output_name,
        "dtype": "float32",
        "layout": "NCHW",
        "batches": batches,
        "dataset": data.name,
        "labels": [int(y) for y in data.labels[:count]],
        "host": host,
        "gate": {GATE: gates.max_device_disagreement, "confidence": gates.confidence, "unproven": gates.unproven},
    }


def kit_with_check_set(ctx: BuildContext, artifact: Artifact, scratch: Path) -> tuple[Artifact, dict[str, Any]]:
    """A copy of the kit ``artifact`` in ``scratch`` with its check set; returns it and what the set holds."""
    from edgeresnext.backends import Artifact
    from edgeresnext.backends.tensorrt.device_check import CHECK_DIR, CHECK_FILE, HOST_REPORT
    from edgeresnext.onnx_io import load_onnx_safely

    plan = artifact.info.extra["plan"]
    kit, files = _copied_kit(artifact, scratch)
    check_dir = kit / CHECK_DIR
    check_dir.mkdir(parents=True, exist_ok=True)
    data, inputs = _check_images(ctx)
    fp32, stand_in_name, stand_in_logits = _host_logits(ctx, artifact, kit, inputs)
    output_name = load_onnx_safely(Path(artifact.path) / plan["onnx"], load_external_data=False).graph.output[0].name
    batches = _write_input_batches(check_dir, inputs, plan)
    files += [check_dir / batch["file"] for batch in batches]
    count = sum(b["size"] for b in batches)
    host = {
        "fp32_name": "pytorch-fp32",
        "fp32_top1": [int(i) for i in fp32[:count].argmax(1)],
        "stand_in_name": stand_in_name,
        "stand_in_top1": [int(i) for i in stand_in_logits[:count].argmax(1)],
        "stand_in_logits": _rounded(stand_in_logits[:count]),
    }
    check = _check_record(ctx, plan, output_name, data, batches, host)
    (check_dir / CHECK_FILE).write_text(json.dumps(check) + "\n", encoding="utf-8")
    files.append(check_dir / CHECK_FILE)
    report = ctx.folder("validate") / "report.json"
    if report.is_file():
        shutil.copyfile(report, check_dir / HOST_REPORT)
        files.append(check_dir / HOST_REPORT)
    mb = sum(path.stat().st_size for path in check_dir.iterdir() if path.name != "stats.py") / 1e6
    size = max(1, int(plan["batch"]["max"]))
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
