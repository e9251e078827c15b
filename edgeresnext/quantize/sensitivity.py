"""Per-layer sensitivity of a Q/DQ model and float fallback until the accuracy gate holds.

Sensitivity of a layer = how much closer the INT8 model's logits get to the FP32 logits when only that
layer is left in float (its weight and input quantizers removed). :func:`fallback` then leaves the most
sensitive layers in float, one at a time, until the top-1 drop is within the gate, and records what each
step cost in latency (ONNX Runtime, batch 1, median). Both write ``sensitivity.json``.
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

from edgeresnext.atomic import atomic_path, write_json_atomic
from edgeresnext.errors import GateFailed
from edgeresnext.onnx_io import ort_session
from edgeresnext.quantize import qdq
from edgeresnext.timing import time_calls

logger = logging.getLogger(__name__)


def _logits(model_proto, images: np.ndarray, batch: int = 256) -> np.ndarray:
    session = ort_session(model_proto)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i : i + batch]})[0] for i in range(0, len(images), batch)])


def _latency_ms(model_proto, image: np.ndarray, runs: int = 20) -> float:
    session = ort_session(model_proto)
    run = functools.partial(session.run, None, {session.get_inputs()[0].name: image})
    return statistics.median(time_calls(run, runs, warmup=3))


def _load(path):
    import onnx

    return onnx.load(str(path))


def layer_sensitivity(
    qdq_onnx: str | os.PathLike[str],
    images: np.ndarray,
    out_json: str | os.PathLike[str] | None,
    fp32_onnx: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Rank the quantized layers of ``qdq_onnx`` by how much leaving each in float reduces the logit error.

    The reference is ``fp32_onnx`` when given, else the Q/DQ model with every layer in float. Returns (and
    writes to ``out_json``) ``{"metric", "images", "int8_error", "layers": [{"layer", "module", "error",
    "gain"}...]}`` sorted most sensitive first.
    """
    from tqdm import tqdm

    quantized = _load(qdq_onnx)
    layers = qdq.quantized_layers(quantized)
    weights = None
    if fp32_onnx is not None:
        fp32 = _load(fp32_onnx)
        weights = qdq.float_weights_of(fp32)
        reference = _logits(fp32, images)
    else:
        floated = copy.deepcopy(quantized)
        qdq.remove_quantizers_of(floated, set(layers))
        reference = _logits(floated, images)
    int8_error = float(np.mean((_logits(quantized, images) - reference) ** 2))
    rows = []
    for layer in tqdm(layers, desc="sensitivity", unit="layer", disable=not progress):
        candidate = copy.deepcopy(quantized)
        qdq.remove_quantizers_of(candidate, {layer}, weights)
        error = float(np.mean((_logits(candidate, images) - reference) ** 2))
        rows.append({"layer": layer, "module": qdq.module_name(layer), "error": error, "gain": int8_error - error})
    rows.sort(key=lambda row: row["gain"], reverse=True)
    report = {
        "metric": "mean squared logit error vs FP32 with only this layer in float",
        "images": len(images),
        "int8_error": int8_error,
        "layers": rows,
    }
    if out_json is not None:
        write_json_atomic(out_json, report)
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

    @property
    def layers(self) -> list[str]:
        return [step["layer"] for step in self.steps]

    @property
    def top1_drop(self) -> float:
        return self.steps[-1]["top1_drop"] if self.steps else self.fp32_top1 - self.int8_top1


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
) -> FallbackResult:
    """Leave the most sensitive layers in float, one at a time, until the top-1 drop is <= ``max_top1_drop``.

    Writes the final model to ``out_onnx`` (lint still applies: only float layers were added) and, with
    ``sensitivity_json``, the ranking plus the fallback steps. Raises GateFailed when ``max_layers``
    fallbacks do not reach the gate (unless ``raise_on_fail`` is False).
    """
    import onnx

    if sensitivity is None:
        sensitivity = layer_sensitivity(qdq_onnx, images[:256], None, fp32_onnx=fp32_onnx)
    fp32 = _load(fp32_onnx)
    weights = qdq.float_weights_of(fp32)  # a layer in float gets its FP32 weights back, not the dequantized ones
    fp32_top1 = float(np.mean(_logits(fp32, images).argmax(1) == labels))
    current = _load(qdq_onnx)
    int8_top1 = float(np.mean(_logits(current, images).argmax(1) == labels))
    result = FallbackResult(fp32_top1=fp32_top1, int8_top1=int8_top1, max_top1_drop=max_top1_drop)
    probe = images[:1]
    latency = _latency_ms(current, probe)
    result.int8_latency_ms = round(latency, 3)
    drop = fp32_top1 - int8_top1
    logger.info(
        "fallback: FP32 top-1 %.4f, INT8 %.4f (drop %.4f, gate %.4f)", fp32_top1, int8_top1, drop, max_top1_drop
    )
    ranking = [row["layer"] for row in sensitivity["layers"]]
    best_drop, best_model, best_steps = drop, copy.deepcopy(current), 0
    while drop > max_top1_drop and len(result.steps) < min(max_layers, len(ranking)):
        layer = ranking[len(result.steps)]
        qdq.remove_quantizers_of(current, {layer}, weights)
        top1 = float(np.mean(_logits(current, images).argmax(1) == labels))
        new_latency = _latency_ms(current, probe)
        drop = fp32_top1 - top1
        result.steps.append(
            {
                "layer": layer,
                "module": qdq.module_name(layer),
                "top1": top1,
                "top1_drop": drop,
                "latency_ms": round(new_latency, 3),
                "latency_cost_ms": round(new_latency - latency, 3),
            }
        )
        logger.info(
            "fallback: %s in float -> top-1 %.4f (drop %.4f), latency %+.3f ms",
            layer,
            top1,
            drop,
            new_latency - latency,
        )
        latency = new_latency
        if drop < best_drop:
            best_drop, best_model, best_steps = drop, copy.deepcopy(current), len(result.steps)
    result.passed = drop <= max_top1_drop
    if not result.passed and best_steps < len(result.steps):
        # The gate was not reached: keep the state with the smallest drop, not the last one tried (a layer
        # whose float copy did not help costs latency for nothing).
        current = best_model
        result.steps = result.steps[:best_steps]
        drop = best_drop
    with atomic_path(out_onnx) as tmp:
        onnx.save(current, str(tmp))
    if sensitivity_json is not None:
        payload = dict(sensitivity)
        payload["fallback"] = {
            **asdict(result),
            "images": len(images),
            "latency": "ONNX Runtime CPU, batch 1, median of 20",
        }
        write_json_atomic(sensitivity_json, payload)
    if not result.passed and raise_on_fail:
        raise GateFailed(
            f"top-1 drop {drop:.4f} still above the gate {max_top1_drop:.4f} after leaving "
            f"{len(result.steps)} layer(s) in float ({', '.join(result.layers) or 'none'}); raise "
            "quant.max_fallback_layers or try QAT"
        )
    return result
