"""Validation without a model: per-image outcomes built by hand (which images FP32 and the artifact get right) as
logits, and runners that look them up by image index, so ``validate()`` runs on known counts."""

from __future__ import annotations

import time

import numpy as np

from edgeresnext.config import Target, target_from_dict
from edgeresnext.data.validation import ValidationData
from edgeresnext.validate import ArtifactUnderTest, ValidationReport, validate


def outcomes(a: int, b: int, c: int, d: int, classes: int = 4, disagree: int = 0):
    """Validation data and the FP32 / artifact logits for known per-image outcomes: ``a`` images both get right,
    ``b`` only FP32, ``c`` only the artifact, ``d`` neither (the last ``disagree`` of them with different wrong
    classes). Each image's input is its index, so a runner looks its logits up: no model involved."""
    n = a + b + c + d
    labels = np.arange(n) % classes
    fp32_right = np.r_[np.ones(a + b, bool), np.zeros(c + d, bool)]
    art_right = np.r_[np.ones(a, bool), np.zeros(b, bool), np.ones(c, bool), np.zeros(d, bool)]
    fp32_pred = np.where(fp32_right, labels, (labels + 1) % classes)
    art_pred = np.where(art_right, labels, (labels + 1) % classes)
    art_pred[n - disagree :] = (labels[n - disagree :] + 2) % classes
    one_hot = np.eye(classes, dtype=np.float32) * 5
    data = ValidationData(
        inputs=np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1),
        labels=labels,
        class_names=[f"class{i}" for i in range(classes)],
        name=f"outcomes[{a},{b},{c},{d}]",
    )
    return data, one_hot[fp32_pred], one_hot[art_pred]


def lookup(logits: np.ndarray, seconds: float = 0.0):
    def runner(batch: np.ndarray) -> np.ndarray:
        if seconds:
            time.sleep(seconds)
        return logits[batch[:, 0, 0, 0].astype(int)]

    return runner


def int8_target(**gates) -> Target:
    return target_from_dict(
        {
            "name": "cpu-like",
            "backend": "openvino",
            "precision": "int8",
            "gates": gates,
            "validate": {"latency_runs": 5, "warmup_runs": 1},
        }
    )


def validate_outcomes(a: int, b: int, c: int, d: int, disagree: int = 0, **gates) -> ValidationReport:
    data, fp32, int8 = outcomes(a, b, c, d, disagree=disagree)
    artifacts = [ArtifactUnderTest("openvino-int8", lookup(int8), [], "openvino", "int8")]
    return validate(int8_target(**gates), artifacts, lookup(fp32), data, threads=1, progress=False)
