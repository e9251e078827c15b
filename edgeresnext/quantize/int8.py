"""The INT8 Q/DQ ONNX by the target's method: the one entry point of the build's quantize stage and of the CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from edgeresnext.config import QuantSpec


def quantize_int8(
    model,
    calib: np.ndarray,
    spec: QuantSpec,
    out_path: str | os.PathLike[str],
    *,
    fp32_onnx: str | os.PathLike[str] | None = None,
    progress: bool = True,
    train_limit: int | None = None,
) -> Path:
    """The Q/DQ INT8 ONNX by ``spec.method`` (the one entry point of the build's quantize stage and of
    ``edgeresnext quantize``): PTQ of ``fp32_onnx`` (or of the model, exported first), or QAT fine-tuning then
    the same PTQ. ``calib``: preprocessed calibration images (float32 NCHW)."""
    from edgeresnext.errors import ConfigError

    if spec.method == "qat":
        from edgeresnext.quantize.qat import quantize_qat

        return quantize_qat(model, calib, spec, out_path, progress=progress, train_limit=train_limit)
    if spec.method == "ptq":
        from edgeresnext.quantize.ptq import quantize_ptq

        return quantize_ptq(model, calib, spec, out_path, fp32_onnx=fp32_onnx)
    raise ConfigError(f"quant.method {spec.method!r} makes no INT8 model; expected ptq or qat")
