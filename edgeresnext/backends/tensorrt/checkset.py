"""The device check's set, written into a TensorRT on-device kit before it is bundled
(:meth:`TensorRTBackend.bundle_for_device <edgeresnext.backends.tensorrt.TensorRTBackend.bundle_for_device>`).

The kit's ``device_check.py`` (run by the device step once the engine is built) needs what the host knows about a
sample of validation images: the images after the bundle's resize and crop (``check/pixels-NNN.u8``, uint8 NCHW, one
file per batch; the device normalizes them into the float32 files trtexec's ``--loadInputs`` reads), their labels and
the host's per-image FP32 top-1s and INT8 stand-in logits, computed on exactly the float32 bytes the device will
feed, and how the set was chosen (``check/check.json``), and the host's validation report
(``check/host_report.json``, for ``edgeresnext report BUNDLE``).

**Which images**: the first of the validation set's seeded class-stratified order (``data.sample_seed``,
:mod:`edgeresnext.data.sampling`), so a random sample that keeps every class in proportion, and part of the images
the host validated every row on (also of ``validate.stand_in_images``'s).

**How many** (:func:`check_set_size`): ``backend_options.tensorrt.device_check_images``, or by default the smallest
set that proves the gate ``backend_options.tensorrt.max_device_disagreement`` at ``gates.confidence`` 95 % of the time
when the engine truly disagrees with the stand-in on 0.5 % of images (:data:`DESIGN_DISAGREEMENT`;
:func:`edgeresnext.stats.check_set_size`: 124 images for 5 % at 95 %), never more than
``backend_options.tensorrt.device_check_megabytes`` holds nor than the validation set has.

What the host knows (the validation images it scored, its outputs for them, its report) comes in a
:class:`~edgeresnext.backends.HostOutputs`: the pipeline fills it, this module never reaches into a build folder.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnext.backends.base import Artifact, copy_artifact_folder
from edgeresnext.backends.tensorrt.device_check import (
    CHECK_DIR,
    CHECK_FILE,
    GATE,
    HOST_REPORT,
    PIXEL_ENCODING,
    encoded_pixels,
    normalized_bytes,
)

if TYPE_CHECKING:
    from edgeresnext.backends.base import HostOutputs
    from edgeresnext.config import Target

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

    spec, gates = target.backend_options.tensorrt, target.gates
    per_image = math.prod(chw) + _json_bytes_per_image(num_classes)
    budget = int(spec.device_check_megabytes * 1e6 // per_image)
    if spec.device_check_images is not None:
        wanted, reason = spec.device_check_images, "backend_options.tensorrt.device_check_images"
    else:
        limit = spec.max_device_disagreement if spec.max_device_disagreement is not None else DEFAULT_GATE
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
        budget_key = "backend_options.tensorrt.device_check_megabytes"
        held = f"the byte budget ({budget_key})" if budget < wanted else "the validation set"
        reason += f"; {held} holds {min(budget, available)}"
    return CheckSetSize(images=images, wanted=wanted, budget_images=budget, available=available, reason=reason)


# ------------------------------------------------------------------------------------------ the set
def _rounded(logits: np.ndarray) -> list[list[float]]:
    """Logits as JSON numbers, to float32's precision (9 significant digits), so the file stays small."""
    return [[float(f"{value:.9g}") for value in row] for row in logits.astype(np.float32).tolist()]


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
    chw = list(pixels.shape[1:])
    data = normalized_bytes(np.ascontiguousarray(pixels).tobytes(), chw, list(preprocess.mean), list(preprocess.std))
    return np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(pixels.shape)


def _check_images(host: HostOutputs, plan: dict[str, Any]) -> _CheckImages:
    """The first images of the validation set's class-stratified order, at model size (uint8) and as the device
    will normalize them."""
    from edgeresnext.data.validation import load_validation_pixels

    meta = host.meta
    size = check_set_size(host.target, tuple(plan["input_chw"]), len(meta.class_names), host.validated_images)
    sample = load_validation_pixels(host.target.data, meta.preprocess, meta.class_names, size.images)
    inputs = check_inputs(sample.pixels, meta.preprocess)
    return _CheckImages(
        sample.pixels, inputs, sample.labels, sample.ids, sample.name, sample.total, sample.sample_seed, size
    )


def _host_logits(host: HostOutputs, stand_ins: list[tuple[str, Artifact]], onnx: Path, images: _CheckImages):
    """The host's FP32 logits and its INT8 stand-in's (name, logits) on the check inputs: the validate stage's, kept
    for these images, when they ran on the very same float32 bytes; else run here on them (the stand-in, or without
    one the kit's ``onnx``, in ONNX Runtime)."""
    inputs = images.inputs
    stand_in_name, stand_in = stand_ins[0] if stand_ins else ("qdq-int8 (onnxruntime)", None)
    stand_in_path = Path(stand_in.path) if stand_in is not None else onnx
    fp32, fp32_kept = host.logits(inputs, images.ids)
    stand_in_logits, stand_in_kept = host.logits(inputs, images.ids, row=stand_in_name, onnx=stand_in_path)
    reused = fp32_kept and stand_in_kept
    logger.info("device check set: host outputs %s", "kept from the validate stage" if reused else "computed here")
    return fp32[: len(inputs)], stand_in_name, stand_in_logits[: len(inputs)]


def _write_pixel_batches(check_dir: Path, pixels: np.ndarray, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """One file per batch of the plan's largest batch (a static engine: its one batch size), encoded as the device
    check decodes it (:func:`~edgeresnext.backends.tensorrt.device_check.encoded_pixels`, lossless); a last batch
    below the profile's minimum cannot run, so the set ends before it."""
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
    limit = target.backend_options.tensorrt.max_device_disagreement
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


def _check_record(host: HostOutputs, plan: dict[str, Any], output_name: str, images: _CheckImages, extra: dict) -> dict:
    """``check.json``: how to feed the pixel files and read the output, the sample, the labels, the host's results,
    the gate and what the set can prove."""
    from edgeresnext.data.sampling import class_counts

    gates, meta = host.target.gates, host.meta
    limit = host.target.backend_options.tensorrt.max_device_disagreement
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
        "gate": {GATE: limit, "confidence": gates.confidence, "unproven": gates.unproven},
        "proves": what_it_proves(host.target, count),
        # how many check images the quantize stage found to be near-copies of calibration images
        "calibration_near_copies": sum(1 for image in images.ids[:count] if image in host.near_copies),
    }


def kit_with_check_set(
    artifact: Artifact, scratch: Path, host: HostOutputs, stand_ins: list[tuple[str, Artifact]]
) -> tuple[Artifact, dict[str, Any]]:
    """A copy of the kit ``artifact`` in ``scratch`` with its check set; returns it and what the set holds.
    ``stand_ins``: what stands in for the engine on the host (the first is the one the device is compared with)."""
    from edgeresnext.onnx_io import load_onnx_safely

    plan = artifact.info.extra["plan"]
    kit, files = copy_artifact_folder(artifact, scratch)
    check_dir = kit / CHECK_DIR
    check_dir.mkdir(parents=True, exist_ok=True)
    images = _check_images(host, plan)
    fp32, stand_in_name, stand_in_logits = _host_logits(host, stand_ins, kit / plan["onnx"], images)
    output_name = load_onnx_safely(Path(artifact.path) / plan["onnx"], load_external_data=False).graph.output[0].name
    batches = _write_pixel_batches(check_dir, images.pixels, plan)
    files += [check_dir / batch["file"] for batch in batches]
    count = sum(b["size"] for b in batches)
    outputs = {
        "fp32_name": "pytorch-fp32",
        "fp32_top1": [int(i) for i in fp32[:count].argmax(1)],
        "stand_in_name": stand_in_name,
        "stand_in_top1": [int(i) for i in stand_in_logits[:count].argmax(1)],
        "stand_in_logits": _rounded(stand_in_logits[:count]),
    }
    extra = {"batches": batches, "host": outputs, "why": images.size.reason}
    check = _check_record(host, plan, output_name, images, extra)
    (check_dir / CHECK_FILE).write_text(json.dumps(check) + "\n", encoding="utf-8")
    files.append(check_dir / CHECK_FILE)
    report = host.report
    if report is not None and report.is_file():
        shutil.copyfile(report, check_dir / HOST_REPORT)
        files.append(check_dir / HOST_REPORT)
    mb = sum(path.stat().st_size for path in check_dir.iterdir() if path.name != "stats.py") / 1e6
    size = max(1, int(plan["batch"]["max"]))
    info = {
        "images": count,
        "batches": len(batches),
        "batch": size,
        "megabytes": round(mb, 2),
        "budget_megabytes": host.target.backend_options.tensorrt.device_check_megabytes,
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
        info=replace(artifact.info, extra=kit_info(artifact.info.extra, info)),
    )
    logger.info("device check set: %d images in %d batch(es) of %d, %.1f MB", count, len(batches), size, mb)
    return checked, info


def kit_info(extra: dict[str, Any], check_set: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kit's info as a bundle's manifest has always listed it: why it is a kit, the device commands and the check
    set first (they were shared fields of ``ArtifactInfo`` before they became the kit's own), then the rest."""
    first = {k: extra[k] for k in ("reason", "device_commands") if k in extra}
    if check_set is not None:
        first["device_check_set"] = check_set
    return {**first, **{k: v for k, v in extra.items() if k not in first}}


# ------------------------------------------------------------------------------------------ the build summary
def check_set_notes(check_set: dict[str, Any], where: str) -> list[str]:
    """What the build summary says about a kit's device check set (:func:`kit_with_check_set`'s record): its size
    and sample, what it can prove."""
    sample = check_set.get("sample") or {}
    counts = ", ".join(f"{name} {count}" for name, count in (check_set.get("class_counts") or {}).items())
    if not sample:
        chosen = "validation images"
    elif sample["of"] > check_set["images"]:
        chosen = f"a class-stratified random sample of {sample['of']:,} (data.sample_seed {sample['seed']}): {counts}"
    else:
        chosen = f"all the validation images: {counts}"
    lines = [
        f"device check set: {check_set['images']} images, {chosen}; {check_set['megabytes']:.1f} MB (uint8 after "
        f"resize and crop; budget {check_set.get('budget_megabytes', 0):g} MB), batches of {check_set['batch']}, "
        f"with the host's outputs, in {where}; the device step runs the engine on them and seals the result"
    ]
    proves = check_set.get("proves")
    if proves:
        lines.append(f"device check set: {_what_it_proves(proves)}")
    if check_set.get("calibration_near_copies"):
        lines.append(
            f"device check set: {check_set['calibration_near_copies']} of its images are near-copies of calibration "
            "images (see the quantize stage's WARNING)"
        )
    return lines


def _what_it_proves(proves: dict[str, Any]) -> str:
    n, level = proves["images"], f"{100 * proves['confidence']:g} %"
    limit, most = proves.get("limit"), proves.get("max_disagreements")
    if limit is None:
        said = "no max_device_disagreement gate"
    elif most is None:
        said = (
            f"cannot prove max_device_disagreement <= {100 * limit:g} % at {level} (at least {proves['min_images']:,} "
            "images needed): the device verdict will read NOT PROVEN (exit 3)"
        )
    else:
        power = ", ".join(
            f"{100 * p:.1f} % of the time at a true {100 * float(d):g} %" for d, p in proves["power"].items()
        )
        said = f"proves max_device_disagreement <= {100 * limit:g} % when at most {most} of {n} images disagree "
        said += f"(at {level}; {power})"
    detect = proves.get("detectable_drop") or {}
    if detect.get("images_lost") is None:
        said += "; against FP32 it can show no drop"
    else:
        said += (
            f"; against FP32 it shows a drop only when at least {detect['images_lost']} more images are lost than won "
            f"({100 * detect['drop']:.2f} pt)"
        )
    gate = proves.get("max_top1_drop")
    if gate:
        proven = "can" if gate["provable"] else "cannot"
        said += f" and {proven} prove max_top1_drop {100 * gate['limit']:g} pt ({gate['min_images']:,} images needed)"
    return said
