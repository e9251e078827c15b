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
