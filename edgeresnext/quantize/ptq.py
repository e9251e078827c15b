"""Post-training quantization: FP32 ONNX + calibration images -> INT8 Q/DQ ONNX that passes the TensorRT lint.

NNCF's ONNX backend calibrates the exported FP32 ONNX (statistics collected by ONNX Runtime in batches,
which is what keeps ResNeXt-50 within 90 s on two cores), then :mod:`edgeresnext.quantize.qdq` makes
the result TensorRT-ready: signed INT8 activations with zero point 0, per-channel axis-0 weights, and the
residual placement (see :func:`~edgeresnext.quantize.qdq.apply_residual_placement`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from edgeresnext.atomic import atomic_path
from edgeresnext.config import QuantSpec
from edgeresnext.errors import ConfigError, DataError
from edgeresnext.quantize import qdq

logger = logging.getLogger(__name__)

# Images per ONNX Runtime call during calibration: batching is 1.4x faster than NNCF's one-by-one default.
CALIB_BATCH = 10


def _range_estimator(name: str):
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as Sets

    table = {
        "minmax": Sets.MINMAX,
        "mean_minmax": Sets.MEAN_MINMAX,
        "percentile": Sets.MEAN_QUANTILE,
        "histogram": Sets.HISTOGRAM,
    }
    if name not in table:
        raise ConfigError(f"quant.range_estimator={name!r}; expected one of {', '.join(table)}")
    return table[name]


def resolve_ignored_scope(onnx_model, names: list[str]) -> list[str]:
    """Map user layer names (ONNX node names or torch module names such as ``layer1.0.conv1``) to ONNX nodes."""
    by_node = {n.name: n for n in onnx_model.graph.node}
    weighted = [n for n in onnx_model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    resolved = []
    for name in names:
        if name in by_node:
            resolved.append(name)
            continue
        matches = [n.name for n in weighted if qdq.module_name(n.name) == name]
        if not matches:
            known = ", ".join(qdq.module_name(n.name) for n in weighted[:8])
            raise ConfigError(
                f"quant.ignored_scope: no layer named {name!r}; use a torch module name "
                f"({known}, ...) or an ONNX node name"
            )
        resolved += matches
    return resolved


def calibration_dataset(calib: np.ndarray, batch_size: int = CALIB_BATCH):
    """An ``nncf.Dataset`` of batches of ``calib`` (NCHW float32, already preprocessed)."""
    import nncf

    calib = np.ascontiguousarray(calib, dtype=np.float32)
    batches = [calib[i : i + batch_size] for i in range(0, len(calib), batch_size)]
    return nncf.Dataset(batches, lambda batch: {"input": batch})


def calibration_batches(images: int, batch_size: int) -> int:
    """NNCF's ``subset_size`` for ``images`` calibration images: it counts dataset items, which are batches here."""
    return -(-images // batch_size)


def _advanced_parameters(spec: QuantSpec):
    """NNCF's advanced settings for ``spec``: batched statistics, bias correction on/off, the range estimator and
    per-tensor weights when asked."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    advanced = AdvancedQuantizationParameters(
        batchwise_statistics=True,
        # fast_bias_correction=False in NNCF means the *full* BiasCorrection, which builds sub-models that
        # ONNX Runtime rejects on our graphs ("Duplicate definition-site"); quant.bias_correction means on/off.
        disable_bias_correction=not spec.bias_correction,
        activations_range_estimator_params=_range_estimator(spec.range_estimator),
    )
    if not spec.per_channel:
        from nncf.quantization.advanced_parameters import QuantizationParameters

        advanced.weights_quantization_params = QuantizationParameters(per_channel=False)
    return advanced


def _nncf_quantize(model, calibration_images: np.ndarray, spec: QuantSpec, batch_size: int):
    """NNCF's Q/DQ model of the FP32 ``model``, calibrated on all of ``calibration_images`` in batches."""
    import nncf

    ignored = resolve_ignored_scope(model, list(spec.ignored_scope))
    advanced = _advanced_parameters(spec)
    dataset = calibration_dataset(calibration_images, batch_size)
    preset = nncf.QuantizationPreset.PERFORMANCE if spec.symmetric_activations else nncf.QuantizationPreset.MIXED
    try:
        return nncf.quantize(
            model,
            dataset,
            preset=preset,
            subset_size=calibration_batches(len(calibration_images), batch_size),
            fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
            advanced_parameters=advanced,
        )
    except (ValueError, nncf.ValidationError) as err:
        raise ConfigError(f"NNCF rejects the quantization settings: {str(err).splitlines()[0]}") from err


def _make_tensorrt_ready(quantized, spec: QuantSpec) -> None:
    """The :mod:`~edgeresnext.quantize.qdq` rewrites of NNCF's model, in place: signed symmetric activations, axis-0
    weights, the residual placement (each as ``spec`` asks)."""
    if spec.symmetric_activations:
        changed = qdq.signed_symmetric(quantized)
        logger.info("made %d activation quantizers signed INT8 with zero point 0", changed)
    qdq.normalize_weight_axes(quantized)
    if spec.placement == "residual":
        rewritten = qdq.apply_residual_placement(quantized)
        logger.info("residual placement: %d Add nodes take the convolution output unquantized", rewritten)
    # Inferred types recorded by NNCF describe the graph before the rewrites (UINT8 tensors); re-infer later.
    del quantized.graph.value_info[:]


def quantize_onnx(
    fp32_onnx: str | os.PathLike[str],
    calib: np.ndarray,
    spec: QuantSpec,
    out_path: str | os.PathLike[str],
    lint: bool = True,
    batch_size: int = CALIB_BATCH,
):
    """Quantize an FP32 ONNX file (input ``input``) into a Q/DQ INT8 ONNX at ``out_path``; returns the ModelProto.

    Calibrates on the first ``spec.subset_size`` *images* of ``calib`` (all of them when it holds fewer: a build's
    preflight has said so already). NNCF's own ``subset_size`` counts batches of ``batch_size``
    (:func:`calibration_batches` converts).
    """
    import onnx

    from edgeresnext.export import check_onnx
    from edgeresnext.lint import assert_lint_clean
    from edgeresnext.onnx_io import load_onnx_safely

    if calib.ndim != 4 or calib.dtype != np.float32 or len(calib) == 0:
        raise DataError(f"calibration images must be a non-empty float32 NCHW array, got {calib.dtype} {calib.shape}")
    calibration_images = calib[: spec.subset_size]
    quantized = _nncf_quantize(load_onnx_safely(fp32_onnx), calibration_images, spec, batch_size)
    _make_tensorrt_ready(quantized, spec)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save(quantized, str(tmp))
        check_onnx(tmp)
        if lint and spec.symmetric_activations:
            assert_lint_clean(tmp)
    return quantized


def quantize_ptq(
    model,
    calib: np.ndarray,
    spec: QuantSpec,
    out_path: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int] | None = None,
    dynamic_batch: bool = True,
    fp32_onnx: str | os.PathLike[str] | None = None,
    lint: bool = True,
) -> Path:
    """PTQ of a torch ``model`` (or of ``fp32_onnx`` when given) into a Q/DQ INT8 ONNX at ``out_path``.

    ``calib``: preprocessed calibration images (float32 NCHW), e.g. from
    :func:`edgeresnext.data.calibration.load_calibration_images`. The file is signed/symmetric with zero
    point 0, per-channel axis-0 weights, residual placement (``spec.placement``), and passes the TensorRT lint.
    """
    from edgeresnext.export import onnx_from_torch

    out_path = Path(out_path)
    if fp32_onnx is not None:
        quantize_onnx(fp32_onnx, calib, spec, out_path, lint=lint)
        return out_path
    if input_shape is None and getattr(model, "meta", None) is None:
        input_shape = tuple(calib.shape[1:])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".ptq-") as scratch:
        fp32 = onnx_from_torch(model, Path(scratch) / "fp32.onnx", input_shape=input_shape, dynamic_batch=dynamic_batch)
        quantize_onnx(fp32, calib, spec, out_path, lint=lint)
    return out_path
