"""Per-layer sensitivity of a Q/DQ model and float fallback until the accuracy gate holds.

Sensitivity of a layer = the relative noise power its quantizers add: one pass of the FP32 and of the Q/DQ model
with every quantized layer's input and output exposed, and for each layer ``err(output) - err(input)``, where
``err(t) = |t_int8 - t_fp32|^2 / |t_fp32|^2`` over the images. Two inferences in all, whatever the depth (the
earlier measure, one model per layer with only that layer in float, took 54 runs of ResNeXt-50: 188 s of a
234 s quantize stage). :func:`fallback` then leaves the most sensitive layers in float, one at a time, measuring
the real top-1 after each, until the drop is within the gate, and records what each step cost in latency (ONNX
Runtime, batch 1, median). Both write ``sensitivity.json``.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeresnext import stats
from edgeresnext.atomic import atomic_path, write_json_atomic
from edgeresnext.errors import GateFailed
from edgeresnext.onnx_io import ort_session
from edgeresnext.quantize import qdq
from edgeresnext.timing import time_calls

logger = logging.getLogger(__name__)

# Images per inference of the one-pass sensitivity (every quantized layer's input and output are outputs then),
# and how many images rank the layers (no labels needed: the calibration images).
NOISE_BATCH = 8
SENSITIVITY_IMAGES = 32


def _logits(model_proto, images: np.ndarray, batch: int = 256) -> np.ndarray:
    session = ort_session(model_proto)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i : i + batch]})[0] for i in range(0, len(images), batch)])


def _latency_ms(model_proto, image: np.ndarray, runs: int = 20) -> float:
    session = ort_session(model_proto)
    run = functools.partial(session.run, None, {session.get_inputs()[0].name: image})
    return statistics.median(time_calls(run, runs, warmup=3))


def _load(path):
    from edgeresnext.onnx_io import load_onnx_safely

    return load_onnx_safely(path)


def _with_outputs(model_proto, tensors: list[str]):
    """A copy of ``model_proto`` that also outputs ``tensors`` (float), so one inference returns them all."""
    from onnx import TensorProto, helper

    exposed = copy.deepcopy(model_proto)
    present = {value.name for value in exposed.graph.output}
    exposed.graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in tensors if name not in present
    )
    return exposed


def _layer_ports(model_proto, layer: str) -> tuple[str, str] | None:
    """``(activation input before its quantizer, output)`` of the node named ``layer``."""
    producers = {out: node for node in model_proto.graph.node for out in node.output}
    node = next((n for n in model_proto.graph.node if n.name == layer), None)
    if node is None:
        return None
    source = node.input[0]
    dq = producers.get(source)
    if dq is not None and dq.op_type == "DequantizeLinear":
        q = producers.get(dq.input[0])
        source = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]
    return source, node.output[0]


def _noise_sums(
    quantized, fp32, ports: dict[str, tuple[tuple[str, str], tuple[str, str]]], images: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Sums over ``images`` of ``|int8 - fp32|^2`` and ``|fp32|^2`` per layer and port (input, output): one inference
    of each model, every port exposed as an output."""
    q_names = sorted({name for pair in ports.values() for name in pair[0]})
    f_names = sorted({name for pair in ports.values() for name in pair[1]})
    q_session = ort_session(_with_outputs(quantized, q_names), optimization="disable")
    f_session = ort_session(_with_outputs(fp32, f_names), optimization="disable")
    # A few images at a time: ResNeXt-50's 108 exposed tensors hold ~40 MB per image and model, too much to keep
    # for all images at once.
    error = {layer: np.zeros(2) for layer in ports}
    power = {layer: np.zeros(2) for layer in ports}
    for start in range(0, len(images), NOISE_BATCH):
        batch = images[start : start + NOISE_BATCH]
        q_values = dict(zip(q_names, q_session.run(q_names, {q_session.get_inputs()[0].name: batch}), strict=True))
        f_values = dict(zip(f_names, f_session.run(f_names, {f_session.get_inputs()[0].name: batch}), strict=True))
        for layer, (q_ports, f_ports) in ports.items():
            for k in range(2):
                reference = f_values[f_ports[k]].astype(np.float64)
                error[layer][k] += float(np.sum((q_values[q_ports[k]] - reference) ** 2))
                power[layer][k] += float(np.sum(reference**2))
    return error, power


def _ranked_rows(error: dict[str, np.ndarray], power: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per layer (relative noise at its input and output, the difference is its sensitivity), most
    sensitive first."""
    rows = []
    for layer in error:
        noise_in, noise_out = (error[layer] / np.maximum(power[layer], 1e-30)).tolist()
        rows.append(
            {
                "layer": layer,
                "module": qdq.module_name(layer),
                "sensitivity": noise_out - noise_in,
                "noise_in": noise_in,
                "noise_out": noise_out,
            }
        )
    rows.sort(key=lambda row: row["sensitivity"], reverse=True)
    return rows


def layer_sensitivity(
    qdq_onnx: str | os.PathLike[str],
    images: np.ndarray,
    out_json: str | os.PathLike[str] | None,
    fp32_onnx: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Rank the quantized layers of ``qdq_onnx`` by the relative noise power each one's quantizers add (module
    docstring), in one inference of each model over ``images``.

    The reference is ``fp32_onnx`` when given, else the Q/DQ model with every layer in float. Returns (and writes to
    ``out_json``) ``{"metric", "images", "int8_error", "layers": [{"layer", "module", "sensitivity",
    "noise_in", "noise_out"}...]}`` sorted most sensitive first.
    """
    quantized = _load(qdq_onnx)
    layers = qdq.quantized_layers(quantized)
    if fp32_onnx is not None:
        fp32 = _load(fp32_onnx)
    else:
        fp32 = copy.deepcopy(quantized)
        qdq.remove_quantizers_of(fp32, set(layers))
    ports = {layer: (_layer_ports(quantized, layer), _layer_ports(fp32, layer)) for layer in layers}
    ports = {layer: pair for layer, pair in ports.items() if pair[0] is not None and pair[1] is not None}
    rows = _ranked_rows(*_noise_sums(quantized, fp32, ports, images))
    int8_error = float(np.mean((_logits(quantized, images) - _logits(fp32, images)) ** 2))
    report = {
        "metric": "relative noise power the layer's quantizers add (err(output) - err(input), one pass)",
        "images": len(images),
        "int8_error": int8_error,
        "layers": rows,
    }
    if out_json is not None:
        write_json_atomic(out_json, report)
    most = rows[0]["module"] if rows else "-"
    logger.info("sensitivity: %d layers ranked on %d images, most sensitive %s", len(rows), len(images), most)
    return report


@dataclass
class FallbackResult:
    """What :func:`fallback` did: layers left in float (in order) and the drop/latency after each step."""

    fp32_top1: float
    int8_top1: float
    max_top1_drop: float
    int8_latency_ms: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    passed: bool = False
    ranked: bool = False  # the per-layer ranking was computed here (the drop was above the gate)
    # How the gate was decided on the tuning images, as the validation gate decides it (stats.DropGateVerdict.holds):
    # "bound" (the one-sided upper bound at `confidence`), "point, not provable on N images" or "point" (no bound)
    decided_on: str = "point"
    confidence: float | None = None
    top1_drop_upper_bound: float | None = None

    @property
    def layers(self) -> list[str]:
        return [step["layer"] for step in self.steps]

    @property
    def top1_drop(self) -> float:
        return self.steps[-1]["top1_drop"] if self.steps else self.fp32_top1 - self.int8_top1


@dataclass
class _DropGate:
    """ "The drop holds", decided as the validation gate decides it; each decision is recorded on ``result``."""

    fp32_correct: np.ndarray
    result: FallbackResult
    unproven: str

    def holds(self, correct: np.ndarray) -> bool:
        result = self.result
        if result.confidence is None:
            result.decided_on, result.top1_drop_upper_bound = "point", None
            return result.fp32_top1 - float(np.mean(correct)) <= result.max_top1_drop
        verdict = stats.drop_gate(
            stats.paired_counts(self.fp32_correct, correct), result.max_top1_drop, result.confidence
        )
        result.top1_drop_upper_bound = verdict.upper_bound
        result.decided_on = "bound" if verdict.provable else f"point, not provable on {len(correct)} images"
        return verdict.holds(self.unproven)


@dataclass
class _Tuning:
    """The labelled images the fallback decides on, and the FP32 weights a layer in float gets back."""

    images: np.ndarray
    labels: np.ndarray
    weights: dict[str, Any]

    def correct(self, model) -> np.ndarray:
        return _logits(model, self.images).argmax(1) == self.labels


def _float_step(current, layer: str, tuning: _Tuning, gate: _DropGate, latency: float) -> tuple[dict, bool, float]:
    """``layer`` left in float in ``current`` (in place): the step's record, whether the gate holds now, and the
    new latency (ms, batch 1)."""
    qdq.remove_quantizers_of(current, {layer}, tuning.weights)
    correct = tuning.correct(current)
    top1 = float(np.mean(correct))
    new_latency = _latency_ms(current, tuning.images[:1])
    drop = gate.result.fp32_top1 - top1
    held = gate.holds(correct)
    step = {
        "layer": layer,
        "module": qdq.module_name(layer),
        "top1": top1,
        "top1_drop": drop,
        "top1_drop_upper_bound": gate.result.top1_drop_upper_bound,
        "latency_ms": round(new_latency, 3),
        "latency_cost_ms": round(new_latency - latency, 3),
    }
    logger.info(
        "fallback: %s in float -> top-1 %.4f (drop %.4f), latency %+.3f ms", layer, top1, drop, new_latency - latency
    )
    return step, held, new_latency


def _leave_layers_in_float(current, ranking: list[str], max_layers: int, tuning: _Tuning, gate: _DropGate):
    """The most sensitive layers left in float, one at a time, until the gate holds (``result.steps``); when it never
    does, the state with the smallest drop, not the last one tried (a layer whose float copy did not help costs
    latency for nothing). Returns the model and its drop; called when the quantized model misses the gate."""
    result = gate.result
    drop, initial_bound = result.fp32_top1 - result.int8_top1, result.top1_drop_upper_bound
    held, latency = False, 0.0
    if ranking:  # each step's latency cost is against this (not timed when none is taken)
        latency = _latency_ms(current, tuning.images[:1])
        result.int8_latency_ms = round(latency, 3)
    best_drop, best_model, best_steps = drop, copy.deepcopy(current), 0
    for layer in ranking[: min(max_layers, len(ranking))]:
        step, held, latency = _float_step(current, layer, tuning, gate, latency)
        result.steps.append(step)
        drop = step["top1_drop"]
        if drop < best_drop:
            best_drop, best_model, best_steps = drop, copy.deepcopy(current), len(result.steps)
        if held:
            break
    result.passed = held
    if not held and best_steps < len(result.steps):
        current, drop = best_model, best_drop
        result.steps = result.steps[:best_steps]
        result.top1_drop_upper_bound = result.steps[-1]["top1_drop_upper_bound"] if result.steps else initial_bound
    return current, drop


def _write_fallback_json(path, sensitivity: dict[str, Any], result: FallbackResult, images: int) -> None:
    payload = dict(sensitivity)
    payload["fallback"] = {**asdict(result), "images": images, "latency": "ONNX Runtime CPU, batch 1, median of 20"}
    write_json_atomic(path, payload)


def _gate_missed(result: FallbackResult, drop: float) -> GateFailed:
    bound = result.top1_drop_upper_bound
    return GateFailed(
        f"top-1 drop {drop:.4f} (decided on the {result.decided_on}"
        + (f", upper bound {bound:.4f}" if bound is not None else "")
        + f") still above the gate {result.max_top1_drop:.4f} after leaving "
        f"{len(result.steps)} layer(s) in float ({', '.join(result.layers) or 'none'}); raise "
        "quant.max_fallback_layers or try QAT"
    )


def fallback(
    qdq_onnx: str | os.PathLike[str],
    fp32_onnx: str | os.PathLike[str],
    images: np.ndarray,
    labels: np.ndarray,
    max_top1_drop: float,
    out_onnx: str | os.PathLike[str],
    sensitivity: dict[str, Any] | None = None,
    max_layers: int = 8,
    sensitivity_json: str | os.PathLike[str] | None = None,
    raise_on_fail: bool = True,
    ranking_images: np.ndarray | None = None,
    confidence: float | None = 0.95,
    unproven: str = "warn",
) -> FallbackResult:
    """Leave the most sensitive layers in float, one at a time, until the top-1 drop is <= ``max_top1_drop``.

    "The drop holds" is decided as the validation gate decides it (:meth:`edgeresnext.stats.DropGateVerdict.holds`):
    on the one-sided upper bound at ``confidence`` from the paired per-image outcomes on these images; on a set
    too small for a result as good as FP32 to pass (500 images cannot prove 0.3 pt), on the measured drop when
    ``unproven`` is ``"warn"``; with ``confidence=None``, on the measured drop alone.

    Writes the final model to ``out_onnx`` (lint still applies: only float layers were added) and, with
    ``sensitivity_json``, the ranking plus the fallback steps. Raises GateFailed when ``max_layers``
    fallbacks do not reach the gate (unless ``raise_on_fail`` is False). Without ``sensitivity`` the layers are
    ranked (:func:`layer_sensitivity` on ``ranking_images``, default the first images) only when the drop is above
    the gate: a model that already holds it costs two inferences of ``images``.
    """
    import onnx

    fp32 = _load(fp32_onnx)
    # A layer in float gets its FP32 weights back, not the dequantized ones.
    tuning = _Tuning(images, labels, qdq.float_weights_of(fp32))
    fp32_correct, current = tuning.correct(fp32), _load(qdq_onnx)
    int8_correct = tuning.correct(current)
    fp32_top1, int8_top1 = float(np.mean(fp32_correct)), float(np.mean(int8_correct))
    result = FallbackResult(fp32_top1=fp32_top1, int8_top1=int8_top1, max_top1_drop=max_top1_drop)
    result.confidence = confidence
    gate = _DropGate(fp32_correct, result, unproven)
    drop, held = fp32_top1 - int8_top1, gate.holds(int8_correct)
    logger.info(
        "fallback: FP32 top-1 %.4f, INT8 %.4f (drop %.4f, gate %.4f)", fp32_top1, int8_top1, drop, max_top1_drop
    )
    if sensitivity is None and not held:
        probe_images = images[:SENSITIVITY_IMAGES] if ranking_images is None else ranking_images
        sensitivity = layer_sensitivity(qdq_onnx, probe_images, None, fp32_onnx=fp32_onnx)
        result.ranked = True
    if held:
        result.passed = True
    else:
        ranking = [row["layer"] for row in sensitivity["layers"]] if sensitivity else []
        current, drop = _leave_layers_in_float(current, ranking, max_layers, tuning, gate)
    with atomic_path(out_onnx) as tmp:
        onnx.save(current, str(tmp))
    if sensitivity_json is not None and sensitivity is not None:
        _write_fallback_json(sensitivity_json, sensitivity, result, len(images))
    if not result.passed and raise_on_fail:
        raise _gate_missed(result, drop)
    return result
