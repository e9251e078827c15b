"""Helpers shared by the backend tests (imported as a module; pytest puts this folder on sys.path)."""

from __future__ import annotations

import numpy as np
from tolerances import QDQ_CONFIDENT_GAP, QDQ_MEAN_ATOL


def agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Top-1 agreement: the fraction of images whose predicted class matches the reference's."""
    return float((logits.argmax(1) == reference.argmax(1)).mean())


def assert_reproduces_qdq(logits: np.ndarray, qdq_logits: np.ndarray) -> None:
    """A backend's INT8 (or FP16 Q/DQ) logits mean what the Q/DQ file means: close on average, and every image the
    file classifies with a clear margin keeps its class (see tests/tolerances.py for both figures)."""
    error = float(np.abs(logits - qdq_logits).mean())
    assert error <= QDQ_MEAN_ATOL, f"mean |logit - Q/DQ logit| = {error:.3g} > {QDQ_MEAN_ATOL}"
    top2 = np.sort(qdq_logits, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= QDQ_CONFIDENT_GAP
    flipped = np.flatnonzero(clear & (logits.argmax(1) != qdq_logits.argmax(1)))
    assert clear.mean() > 0.8, "the reference has too few clearly classified images to check"
    assert flipped.size == 0, f"images {flipped.tolist()} changed class despite a top-2 gap >= {QDQ_CONFIDENT_GAP}"


def fake_quantized(qdq_onnx, images: np.ndarray) -> np.ndarray:
    """What a Q/DQ file means: ONNX Runtime with every graph optimisation off runs each QuantizeLinear/
    DequantizeLinear as written (fake quantization in FP32)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(qdq_onnx), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def make_target(backend: str, precision: str, **sections):
    """A Target built in Python (the third way in, besides YAML and CLI flags)."""
    from edgeresnext.config import target_from_dict

    data = {"name": f"test-{backend}-{precision}", "backend": backend, "precision": precision, **sections}
    if precision != "int8":
        data.setdefault("quant", {"method": "none"})
    return target_from_dict(data, source="<test>")


def assert_int8_agrees(logits: np.ndarray, qdq_logits: np.ndarray, fp32_logits: np.ndarray) -> None:
    """A backend's INT8 kernels reproduce what the Q/DQ file means (:func:`assert_reproduces_qdq`); how far INT8 moves
    from FP32 is PTQ's business (a loose guard here, 3 of 512 images flip: the quantize tests and the build's gates
    hold the real line)."""
    assert_reproduces_qdq(logits, qdq_logits)
    assert agreement(logits, fp32_logits) >= 0.90


def compile_and_load(backend_name: str, onnx_path, target, out_dir, calibration=None):
    """``(artifact, runner)``: what ``target`` compiles ``onnx_path`` into, loaded as validation loads it."""
    from edgeresnext.backends import get_backend

    backend = get_backend(backend_name)
    artifact = backend.compile(onnx_path, target, out_dir, calibration=calibration)
    return artifact, backend.load(artifact, target)
