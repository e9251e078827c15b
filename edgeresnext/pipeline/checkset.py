"""The device check's set, written into a TensorRT on-device kit before it is bundled.

The kit's ``device_check.py`` (run by the device step once the engine is built) needs what the host knows about a
sample of validation images: the images after the bundle's resize and crop (``check/pixels-NNN.u8``, uint8 NCHW, one
file per batch; the device normalizes them into the float32 files trtexec's ``--loadInputs`` reads), their labels and
the host's per-image FP32 top-1s and INT8 stand-in logits, computed on exactly the float32 bytes the device will
feed, and how the set was chosen (``check/check.json``), and the host's validation report
(``check/host_report.json``, for ``edgeresnext report BUNDLE``).

**Which images**: the first of the validation set's seeded class-stratified order (``data.sample_seed``,
:mod:`edgeresnext.data.sampling`), so a random sample that keeps every class in proportion, and part of the images
the host validated every row on (also of ``validate.stand_in_images``'s).

**How many** (:func:`check_set_size`): ``validate.device_check_images``, or by default the smallest set that proves
the gate ``gates.max_device_disagreement`` at ``gates.confidence`` 95 % of the time when the engine truly disagrees
with the stand-in on 0.5 % of images (:data:`DESIGN_DISAGREEMENT`; :func:`edgeresnext.stats.check_set_size`: 124
images for 5 % at 95 %), never more than ``validate.device_check_megabytes`` holds nor than the validation set has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgeresnext.backends import Artifact
    from edgeresnext.config import Target
    from edgeresnext.pipeline.stages import BuildContext

logger = logging.getLogger(__name__)

# The design point of the default size. The engine and the host's stand-in run the same Q/DQ graph; they differ in
# kernels and float rounding, which move a top-1 only where two classes' logits nearly tie. Measured on the host, the
# FP16 stand-in and the FP32 Q/DQ model (two faithful runs of one graph) disagree on 21 of the 10,000 Fashion-MNIST
# test images (0.21 %, shipped model). 0.5 % leaves room for TensorRT's kernels; at it, 124 images prove a 5 % gate
# 97.5 % of the time (95 % asked), and at 1 % still 87 %.
DESIGN_DISAGREEMENT = 0.005
DESIGN_POWER = 0.95
DEFAULT_GATE = 0.05  # sizes the set when the target sets no max_device_disagreement
PIXEL_FILE = "pixels-{:03d}.u8.z"
KEPT_LOGITS = "check_logits.npz"  # the validate stage's logits of the check set's images, by row name


@dataclass(frozen=True)
class CheckSetSize:
    """How many images the check set holds, and why."""

    images: int
    wanted: int
    budget_images: int
    available: int
    reason: str


def _json_bytes_per_image(num_classes: int) -> int:
    """A generous estimate of check.json's share of one image: its logits at 9 significant digits, id, label."""
    return 16 * num_classes + 160


def check_set_size(target: Target, chw: tuple[int, ...], num_classes: int, available: int) -> CheckSetSize:
    """The check set's size for ``target``: asked for, or derived from the gate (module docstring), within the byte
    budget and the ``available`` validation images; a static batch profile rounds it to whole batches."""
    from edgeresnext import stats

    spec, gates = target.validate_, target.gates
    per_image = math.prod(chw) + _json_bytes_per_image(num_classes)
    budget = int(spec.device_check_megabytes * 1e6 // per_image)
    if spec.device_check_images is not None:
        wanted, reason = spec.device_check_images, "validate.device_check_images"
    else:
        limit = gates.max_device_disagreement if gates.max_device_disagreement is not None else DEFAULT_GATE
        confidence = gates.confidence or 0.95
        wanted = stats.check_set_size(limit, confidence, DESIGN_DISAGREEMENT, DESIGN_POWER) or budget
        reason = (
            f"derived from the gate: the smallest set that proves <= {100 * limit:g} % at {100 * confidence:g} % "
            f"{100 * DESIGN_POWER:g} % of the time when the engine truly disagrees on {100 * DESIGN_DISAGREEMENT:g} %"
        )
    images = min(wanted, budget, available)
    batch = target.input.batch
    if batch.min == batch.max > 1 and images % batch.max:  # a static engine runs whole batches only
        up = -(-images // batch.max) * batch.max
        images = up if up <= min(budget, available) else images // batch.max * batch.max
    if images < wanted:
        held = "the byte budget (validate.device_check_megabytes)" if budget < wanted else "the validation set"
        reason += f"; {held} holds {min(budget, available)}"
    return CheckSetSize(images=images, wanted=wanted, budget_images=budget, available=available, reason=reason)


# ------------------------------------------------------------------------------------------ kept logits
def save_kept_logits(path: Path, kept: dict[str, np.ndarray], ids: list[str], inputs: np.ndarray) -> None:
    """The validate stage's logits of the first images, with those images' ids and the sha256 of their float32 bytes
    (the check set reuses them only for the very same bytes)."""
    from edgeresnext.atomic import atomic_path

    names = sorted(kept)
    arrays = {f"row{i}": kept[name] for i, name in enumerate(names)}
    digest = hashlib.sha256(np.ascontiguousarray(inputs, dtype=np.float32).tobytes()).hexdigest()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, names=np.array(names), ids=np.array(ids), inputs_sha256=np.array(digest), **arrays)


def load_kept_logits(path: Path) -> tuple[dict[str, np.ndarray], list[str], str]:
    """``(logits by row name, image ids, sha256 of the inputs)``; empty when the validate stage kept none."""
    if not path.is_file():
        return {}, [], ""
    with np.load(path, allow_pickle=False) as data:
        kept = {str(name): data[f"row{i}"] for i, name in enumerate(data["names"])}
        ids = [str(i) for i in data["ids"]] if "ids" in data else []
        digest = str(data["inputs_sha256"]) if "inputs_sha256" in data else ""
    return kept, ids, digest


# ------------------------------------------------------------------------------------------ the set
def _link_or_copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


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


@dataclass
class _CheckImages:
    """The check set's images: uint8 pixels as stored, the float32 inputs the device will make of them, labels, ids."""

    pixels: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    ids: list[str]
    name: str
    total: int
    seed: int
    size: CheckSetSize


def check_inputs(pixels: np.ndarray, preprocess) -> np.ndarray:
    """The float32 NCHW inputs the device makes of uint8 NCHW ``pixels``: the kit's own normalization, byte for
    byte (:func:`edgeresnext.backends.tensorrt.device_check.normalized_bytes`)."""
    from edgeresnext.backends.tensorrt.device_check import normalized_bytes

    chw = list(pixels.shape[1:])
    data = normalized_bytes(np.ascontiguousarray(pixels).tobytes(), chw, list(preprocess.mean), list(preprocess.std))
    return np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(pixels.shape)


def _check_images(ctx: BuildContext, plan: dict[str, Any]) -> _CheckImages:
    """The first images of the validation set's class-stratified order, at model size (uint8) and as the device
    will normalize them."""
    from edgeresnext.data.validation import load_validation_pixels
    from edgeresnext.models import read_checkpoint

    meta = read_checkpoint(ctx.model_file).meta
    available = _validated_images(ctx)
    size = check_set_size(ctx.target, tuple(plan["input_chw"]), len(meta.class_names), available)
    sample = load_validation_pixels(ctx.target.data, meta.preprocess, meta.class_names, size.images)
    inputs = check_inputs(sample.pixels, meta.preprocess)
    return _CheckImages(
        sample.pixels, inputs, sample.labels, sample.ids, sample.name, sample.total, sample.sample_seed, size
    )


def _validated_images(ctx: BuildContext) -> int:
    """How many images the validate stage scored (the check set is taken from them)."""
    report = ctx.folder("validate") / "report.json"
    return int(json.loads(report.read_text(encoding="utf-8"))["data"]["count"])


def _host_logits(ctx: BuildContext, artifact: Artifact, kit: Path, images: _CheckImages):
    """The host's FP32 logits and its INT8 stand-in's (name, logits) on the check inputs: the validate stage's, kept
    for these images, when they ran on the very same float32 bytes; else run here on them."""
    from edgeresnext.backends import get_backend
    from edgeresnext.validate import runner_from_file
    from edgeresnext.validate.gates import REFERENCE_NAME
    from edgeresnext.validate.measure import TorchRunner, run_logits

    inputs = images.inputs
    stand_ins = get_backend(artifact.backend).stand_ins(artifact)
    stand_in_name, stand_in = stand_ins[0] if stand_ins else ("qdq-int8 (onnxruntime)", None)
    stand_in_path = Path(stand_in.path) if stand_in is not None else kit / artifact.info.extra["plan"]["onnx"]
    kept, ids, digest = load_kept_logits(ctx.folder("validate") / KEPT_LOGITS)
    same = ids[: len(inputs)] == images.ids and digest == hashlib.sha256(inputs.tobytes()).hexdigest()
    fp32, stand_in_logits = (kept.get(REFERENCE_NAME), kept.get(stand_in_name)) if same else (None, None)
    reused = fp32 is not None and len(fp32) >= len(inputs)
    if not reused:
        fp32 = run_logits(TorchRunner(ctx.load_model()), inputs, progress=False)
    if stand_in_logits is None or len(stand_in_logits) < len(inputs):
        reused = False
        runner = runner_from_file(stand_in_path, ctx.target, "onnxruntime")
        stand_in_logits = run_logits(runner, inputs, progress=False)
    logger.info("device check set: host outputs %s", "kept from the validate stage" if reused else "computed here")
    return fp32[: len(inputs)], stand_in_name, stand_in_logits[: len(inputs)]


def _write_pixel_batches(check_dir: Path, pixels: np.ndarray, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """One file per batch of the plan's largest batch (a static engine: its one batch size), encoded as the device
    check decodes it (:func:`~edgeresnext.backends.tensorrt.device_check.encoded_pixels`, lossless); a last batch
    below the profile's minimum cannot run, so the set ends before it."""
    from edgeresnext.backends.tensorrt.device_check import encoded_pixels

    size = max(1, int(plan["batch"]["max"]))
    batches = []
    for index, start in enumerate(range(0, len(pixels), size)):
        chunk = pixels[start : start + size]
        if len(chunk) < int(plan["batch"]["min"]):
            break
        name = PIXEL_FILE.format(index)
        chw = list(chunk.shape[1:])
        (check_dir / name).write_bytes(encoded_pixels(np.ascontiguousarray(chunk, dtype=np.uint8).tobytes(), chw))
        batches.append({"file": name, "size": len(chunk)})
    return batches


def what_it_proves(target: Target, images: int) -> dict[str, Any]:
    """What a check set of ``images`` can prove: the device gate (at most K of N may disagree; its power at the
    design point) and, against FP32, the smallest drop it can show and whether it could prove ``max_top1_drop``."""
    from edgeresnext import stats

    gates = target.gates
    confidence = gates.confidence or 0.95
    limit = gates.max_device_disagreement
    proves: dict[str, Any] = {"images": images, "confidence": confidence, "limit": limit}
    if limit is not None and images > 0:
        proves["max_disagreements"] = stats.max_disagreements(images, limit, confidence)
        proves["min_images"] = stats.min_images_for_agreement(1 - limit, confidence)
        proves["power"] = {
            f"{d:g}": round(stats.agreement_gate_power(images, limit, d, confidence), 4)
            for d in (DESIGN_DISAGREEMENT, 2 * DESIGN_DISAGREEMENT)
        }
    if images > 0:
        lost = stats.min_detectable_drop(images, confidence)
        proves["detectable_drop"] = {"images_lost": lost, "drop": None if lost is None else lost / images}
        if gates.max_top1_drop:
            needed = stats.min_images_to_prove(gates.max_top1_drop, confidence)
            proves["max_top1_drop"] = {"limit": gates.max_top1_drop, "min_images": needed, "provable": images >= needed}
    return proves


def _calibration_overlap(ctx: BuildContext, ids: list[str]) -> int:
    """How many check images the quantize stage found to be near-copies of calibration images."""
    if "quantize" not in ctx.done:
        return 0
    record = ctx.folder("quantize") / "quant.json"
    near = json.loads(record.read_text(encoding="utf-8")).get("calibration_near_copies") or {}
    copied = {pair["near"] for pair in near.get("images", [])}
    return sum(1 for image in ids if image in copied)


def _check_record(ctx: BuildContext, plan: dict[str, Any], output_name: str, images: _CheckImages, extra: dict) -> dict:
    """``check.json``: how to feed the pixel files and read the output, the sample, the labels, the host's results,
    the gate and what the set can prove."""
    from edgeresnext.backends.tensorrt.device_check import GATE, PIXEL_ENCODING
    from edgeresnext.data.sampling import class_counts
    from edgeresnext.models import read_checkpoint

    gates, meta = ctx.target.gates, read_checkpoint(ctx.model_file).meta
    count = sum(b["size"] for b in extra["batches"])
    labels = images.labels[:count]
    return {
        "version": 2,
        "input_name": plan["input_name"],
        "input_chw": list(plan["input_chw"]),
        "output_name": output_name,
        "dtype": "uint8",
        "layout": "NCHW",
        "encoding": PIXEL_ENCODING,
        "normalize": {
            "mean": list(meta.preprocess.mean),
            "std": list(meta.preprocess.std),
            "formula": "((x / 255) - mean) / std, each step rounded to float32, little-endian float32 NCHW",
        },
        "batches": extra["batches"],
        "dataset": images.name,
        "sample": {"order": "class-stratified", "seed": images.seed, "of": images.total, "size_reason": extra["why"]},
        "class_counts": class_counts(labels, meta.class_names),
        "ids": images.ids[:count],
        "labels": [int(y) for y in labels],
        "host": extra["host"],
        "gate": {GATE: gates.max_device_disagreement, "confidence": gates.confidence, "unproven": gates.unproven},
        "proves": what_it_proves(ctx.target, count),
        "calibration_near_copies": _calibration_overlap(ctx, images.ids[:count]),
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
    images = _check_images(ctx, plan)
    fp32, stand_in_name, stand_in_logits = _host_logits(ctx, artifact, kit, images)
    output_name = load_onnx_safely(Path(artifact.path) / plan["onnx"], load_external_data=False).graph.output[0].name
    batches = _write_pixel_batches(check_dir, images.pixels, plan)
    files += [check_dir / batch["file"] for batch in batches]
    count = sum(b["size"] for b in batches)
    host = {
        "fp32_name": "pytorch-fp32",
        "fp32_top1": [int(i) for i in fp32[:count].argmax(1)],
        "stand_in_name": stand_in_name,
        "stand_in_top1": [int(i) for i in stand_in_logits[:count].argmax(1)],
        "stand_in_logits": _rounded(stand_in_logits[:count]),
    }
    extra = {"batches": batches, "host": host, "why": images.size.reason}
    check = _check_record(ctx, plan, output_name, images, extra)
    (check_dir / CHECK_FILE).write_text(json.dumps(check) + "\n", encoding="utf-8")
    files.append(check_dir / CHECK_FILE)
    report = ctx.folder("validate") / "report.json"
    if report.is_file():
        shutil.copyfile(report, check_dir / HOST_REPORT)
        files.append(check_dir / HOST_REPORT)
    mb = sum(path.stat().st_size for path in check_dir.iterdir() if path.name != "stats.py") / 1e6
    size = max(1, int(plan["batch"]["max"]))
    info = {
        "images": count,
        "batches": len(batches),
        "batch": size,
        "megabytes": round(mb, 2),
        "budget_megabytes": ctx.target.validate_.device_check_megabytes,
        "sample": {**check["sample"], "dataset": images.name},
        "class_counts": check["class_counts"],
        "proves": check["proves"],
        "calibration_near_copies": check["calibration_near_copies"],
    }
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
