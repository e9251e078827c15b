"""Fixtures for the backend tests: the shipped (tiny) ResNeXt, its FP32 ONNX and its Q/DQ INT8 ONNX made by
the project's own PTQ on real calibration images, and the FP32 logits every backend is compared with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def test_images(fmnist_test, shipped_model) -> np.ndarray:
    """The 512 Fashion-MNIST test images, preprocessed as the model was trained (float32 NCHW)."""
    preprocess = shipped_model.meta.preprocess
    return np.stack([preprocess.image_to_array(image) for image in fmnist_test.images])


@pytest.fixture(scope="session")
def fp32_logits(shipped_model, test_images) -> np.ndarray:
    import torch

    with torch.no_grad():
        return shipped_model.eval()(torch.from_numpy(test_images)).numpy()


@pytest.fixture(scope="session")
def fp32_onnx(tmp_path_factory, shipped_model) -> Path:
    from edgeresnext.export import onnx_from_torch

    return onnx_from_torch(shipped_model, tmp_path_factory.mktemp("onnx") / "model_fp32.onnx", dynamic_batch=True)


@pytest.fixture(scope="session")
def calib_images(shipped_model, calib_dir) -> np.ndarray:
    """The 100 calibration images, preprocessed (float32 NCHW)."""
    from edgeresnext.data.folder import list_images, load_folder_arrays

    calib, _kept = load_folder_arrays(list_images(calib_dir), shipped_model.meta.preprocess)
    return calib


@pytest.fixture(scope="session")
def qdq_onnx(tmp_path_factory, shipped_model, calib_images, fp32_onnx) -> Path:
    """The Q/DQ INT8 ONNX every backend compiles: signed symmetric, per-channel, residual placement."""
    from edgeresnext.config import QuantSpec
    from edgeresnext.quantize.ptq import quantize_ptq

    out = tmp_path_factory.mktemp("qdq") / "model.qdq.onnx"
    return quantize_ptq(shipped_model, calib_images, QuantSpec(subset_size=100), out, fp32_onnx=fp32_onnx, lint=False)


@pytest.fixture(scope="session")
def qdq_logits(qdq_onnx, test_images) -> np.ndarray:
    """What the Q/DQ file means: ONNX Runtime with every graph optimisation off runs each QuantizeLinear/
    DequantizeLinear as written (fake quantization in FP32). A backend's INT8 kernels must reproduce this."""
    from backend_helpers import fake_quantized

    return fake_quantized(qdq_onnx, test_images)
