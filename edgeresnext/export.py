"""ONNX export and its checks: ``onnx.checker``, shape inference, and output parity with PyTorch.

The FP32 ONNX written here is what quantization starts from and what FP32/FP16 backends compile; it has
one input named ``input`` (NCHW float32) and one output named ``logits``, with an optional dynamic batch
axis. The TensorRT lint lives in :mod:`edgeresnext.lint` because it reads any ONNX, not only ours; reading
untrusted ONNX safely lives in :mod:`edgeresnext.onnx_io`.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from edgeresnext.atomic import atomic_path
from edgeresnext.errors import ExportError
from edgeresnext.onnx_io import load_onnx_safely, ort_session

logger = logging.getLogger(__name__)

__all__ = [
    "INPUT_NAME",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "assert_parity",
    "check_onnx",
    "max_abs_error_vs_torch",
    "onnx_from_torch",
    "onnx_runner",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET = 17
# Export keeps FP32 arithmetic, so ONNX Runtime and PyTorch differ only by summation order.
DEFAULT_TOLERANCE = 1e-3


def _model_input_shape(model) -> tuple[int, int, int]:
    meta = getattr(model, "meta", None)
    if meta is None:
        raise ExportError("input_shape is required for a model without .meta (load it with load_checkpoint)")
    return (int(meta.in_channels), int(meta.input_size), int(meta.input_size))


def onnx_from_torch(
    model,
    path: str | os.PathLike[str],
    input_shape: tuple[int, int, int] | None = None,
    dynamic_batch: bool = True,
    opset: int = MIN_OPSET,
) -> Path:
    """Export ``model`` (eval mode) to an FP32 ONNX at ``path``, then run :func:`check_onnx` on it.

    ``input_shape`` is (C, H, W); None takes it from ``model.meta``. BatchNorm is folded into the
    convolutions (constant folding), so node names follow the torch module names (``/layer1/layer1.0/conv1/Conv``).
    """
    import torch

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; expected >= {MIN_OPSET}")
    shape = tuple(input_shape) if input_shape is not None else _model_input_shape(model)
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise ExportError(f"input_shape {shape}; expected (channels, height, width) with positive sizes")
    path = Path(path)
    was_training = model.training
    model.eval()
    example = torch.zeros((1, *shape), dtype=torch.float32)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # The TorchScript exporter names nodes after modules and folds BatchNorm; the dynamo exporter's
            # deprecation notice for it is not actionable here.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_axes=axes,
                do_constant_folding=True,
                dynamo=False,
            )
            _materialize_shared_weights(tmp)
            check_onnx(tmp)
    except ExportError:
        raise
    except (RuntimeError, ValueError, TypeError) as err:
        raise ExportError(f"{path}: torch.onnx.export failed ({str(err).splitlines()[0]})") from err
    finally:
        model.train(was_training)
    logger.info("exported %s (opset %d, input %s, dynamic batch %s)", path, opset, shape, dynamic_batch)
    return path


def _materialize_shared_weights(path: Path) -> int:
    """Give every layer its own weight tensor: the exporter writes two identical weight tensors once and the second
    as ``Identity(first)`` (an untrained model's zero-initialised layers, say), which quantizers then see as an
    activation to quantize. Returns how many were copied back into initializers; the file is rewritten only then."""
    import onnx
    from onnx import numpy_helper

    model = load_onnx_safely(path)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    shared = [node for node in model.graph.node if node.op_type == "Identity" and node.input[0] in initializers]
    for node in shared:
        model.graph.initializer.append(
            numpy_helper.from_array(numpy_helper.to_array(initializers[node.input[0]]), node.output[0])
        )
        model.graph.node.remove(node)
    if shared:
        onnx.save(model, str(path))
        logger.info("%s: %d shared weight tensor(s) given to each layer", path, len(shared))
    return len(shared)


def check_onnx(path: str | os.PathLike[str]) -> None:
    """``onnx.checker`` (full check) plus strict shape inference; names the file and the first problem."""
    import onnx

    path = Path(path)
    model = load_onnx_safely(path, load_external_data=False)  # the file checks first: the checker reads external data
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"{path}: onnx.checker rejects the model: {str(err).splitlines()[0]}") from err
    except OSError as err:
        raise ExportError(f"{path}: cannot read ONNX file ({err})") from err
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except onnx.shape_inference.InferenceError as err:
        raise ExportError(f"{path}: shape inference fails: {str(err).splitlines()[0]}") from err
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ExportError(
            f"{path}: expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, "
            f"got inputs {inputs} and outputs {outputs}"
        )


def onnx_runner(onnx_path: str | os.PathLike[str], threads: int | None = None):
    """A callable batch -> logits running ``onnx_path`` in ONNX Runtime on the CPU (validation and tests)."""
    session = ort_session(onnx_path, threads=threads)
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return run


def max_abs_error_vs_torch(model, onnx_path: str | os.PathLike[str], batch: np.ndarray) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's logits on ``batch`` (NCHW float32)."""
    import torch

    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()
    actual = onnx_runner(onnx_path)(batch)
    if actual.shape != expected.shape:
        raise ExportError(f"{onnx_path}: output shape {actual.shape} differs from PyTorch's {expected.shape}")
    return float(np.max(np.abs(actual - expected)))


def assert_parity(
    model, onnx_path: str | os.PathLike[str], batch: np.ndarray, tolerance: float = DEFAULT_TOLERANCE
) -> float:
    """:func:`max_abs_error_vs_torch`, raising ExportError when it exceeds ``tolerance``; returns the error."""
    error = max_abs_error_vs_torch(model, onnx_path, batch)
    if not error <= tolerance:
        raise ExportError(
            f"{onnx_path}: logits differ from PyTorch by up to {error:.3g} on {len(batch)} images "
            f"(tolerance {tolerance:g})"
        )
    logger.info("parity: max abs error %.3g on %d images (tolerance %g)", error, len(batch), tolerance)
    return error
