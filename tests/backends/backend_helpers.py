"""Helpers shared by the backend tests (imported as a module; pytest puts this folder on sys.path)."""

from __future__ import annotations

import numpy as np


def agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Top-1 agreement: the fraction of images whose predicted class matches the reference's."""
    return float((logits.argmax(1) == reference.argmax(1)).mean())


def make_target(backend: str, precision: str, **sections):
    """A Target built in Python (the third way in, besides YAML and CLI flags)."""
    from edgeresnext.config import target_from_dict

    data = {"name": f"test-{backend}-{precision}", "backend": backend, "precision": precision, **sections}
    if precision != "int8":
        data.setdefault("quant", {"method": "none"})
    return target_from_dict(data, source="<test>")


def assert_int8_agrees(logits: np.ndarray, qdq_logits: np.ndarray, fp32_logits: np.ndarray, with_qdq: float = 0.98):
    """A backend's INT8 kernels reproduce what the Q/DQ file means; how far INT8 moves from FP32 is PTQ's business
    (a loose bound here: the quantize tests and the build's gates hold the real line)."""
    assert agreement(logits, qdq_logits) >= with_qdq
    assert agreement(logits, fp32_logits) >= 0.90


def compile_and_load(backend_name: str, onnx_path, target, out_dir, **extra):
    """``(artifact, runner)``: what ``target`` compiles ``onnx_path`` into, loaded as validation loads it."""
    from edgeresnext.backends import get_backend

    backend = get_backend(backend_name)
    artifact = backend.compile(onnx_path, target, out_dir, **extra)
    return artifact, backend.load(artifact, target)
