"""The Runner contract every backend keeps (run here on the two CPU backends): any batch size, bound inference,
plain options without a Target, and resources freed on close."""

from __future__ import annotations

import numpy as np
import pytest
from backend_helpers import make_target
from tolerances import FP32_LOGIT_ATOL

from edgeresnext.backends import RunOptions, get_backend
from edgeresnext.errors import EdgeResNeXtError

CPU_BACKENDS = ["onnxruntime", "openvino"]


def _static_batch_runner(backend_name: str, shipped_model, tmp_path, batch: int = 4):
    """A runner for an artifact that takes exactly ``batch`` images: a static-batch ONNX (ONNX Runtime runs the
    file as exported) or an IR reshaped to batch..batch (OpenVINO)."""
    from edgeresnext.export import onnx_from_torch

    onnx_path = onnx_from_torch(shipped_model, tmp_path / "model.onnx", dynamic_batch=backend_name == "openvino")
    if backend_name == "onnxruntime":
        import onnx

        model = onnx.load(str(onnx_path))
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
        onnx.save(model, str(onnx_path))
    target = make_target(backend_name, "fp32", input={"batch": {"min": batch, "opt": batch, "max": batch}})
    backend = get_backend(backend_name)
    return backend.load(backend.compile(onnx_path, target, tmp_path / "out"), target)


@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
def test_bound_inference_gives_the_runner_logits_and_checks_its_input(backend_name, fp32_onnx, test_images, tmp_path):
    """bind() (what validate times) runs the same model on the bound input, and refuses what runner() refuses."""
    backend = get_backend(backend_name)
    target = make_target(backend_name, "fp32")
    runner = backend.load(backend.compile(fp32_onnx, target, tmp_path), target)
    sample = test_images[3:4].copy()
    infer = runner.bind(sample)
    runner(test_images[:2])  # a plain call in between must not change what the bound call runs on
    np.testing.assert_array_equal(np.asarray(infer()), runner(sample))  # the same compiled model on the same input
    with pytest.raises(EdgeResNeXtError, match="does not match the model's"):
        runner.bind(np.zeros((1, 3, 28, 28), np.float32))


@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
def test_any_batch_size_runs_on_a_static_batch_artifact(backend_name, shipped_model, test_images, tmp_path):
    """The base class splits and zero-pads: callers never pad, whatever batch the artifact was built for."""
    runner = _static_batch_runner(backend_name, shipped_model, tmp_path)
    assert runner.batch_range == (4, 4)
    one_by_one = np.concatenate([runner(test_images[i : i + 1]) for i in range(11)])  # 1 image + 3 of padding
    assert one_by_one.shape == (11, 10)
    # The same batch-4 kernels on the same images (the padding rows are independent of the others), but a runtime
    # may pick other kernels for another fill of the batch on another CPU: FP32 reordering bound (tests/tolerances.py).
    np.testing.assert_allclose(runner(test_images[:11]), one_by_one, atol=FP32_LOGIT_ATOL)  # 4 + 4 + 3 (padded)
    np.testing.assert_allclose(np.asarray(runner.bind(test_images[:11])()), one_by_one, atol=FP32_LOGIT_ATOL)
    with pytest.raises(EdgeResNeXtError, match="empty batch"):
        runner(test_images[:0])


@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
def test_plain_options_load_without_a_target(backend_name, fp32_onnx, test_images, tmp_path):
    """The device runtime's way in: options from the artifact's recorded info, overridden by the caller."""
    backend = get_backend(backend_name)
    target = make_target(backend_name, "fp32", backend_options={backend_name: {"threads": 2}})
    artifact = backend.compile(fp32_onnx, target, tmp_path)
    from_target = backend.run_options(target)
    assert from_target == backend.run_options(info=artifact.info) and from_target.threads == 2
    options = backend.run_options(info=artifact.info, threads=1)
    assert isinstance(options, backend.options_type) and options.threads == 1 and options.device is None
    with backend.load(artifact, options) as runner:
        assert runner.options.threads == 1 and runner.options.device == backend.default_device
        expected = runner(test_images[:8])
    # A plain RunOptions takes this backend's defaults for the fields it does not have.
    with backend.load(artifact, RunOptions(threads=1)) as runner:
        assert isinstance(runner.options, backend.options_type)
        np.testing.assert_allclose(runner(test_images[:8]), expected, atol=1e-5)


@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
def test_close_frees_the_runtime_and_is_idempotent(backend_name, fp32_onnx, test_images, tmp_path):
    backend = get_backend(backend_name)
    target = make_target(backend_name, "fp32")
    with backend.load(backend.compile(fp32_onnx, target, tmp_path), target) as runner:
        assert runner(test_images[:2]).shape == (2, 10)
    resources = ("session",) if backend_name == "onnxruntime" else ("compiled", "request")
    assert all(getattr(runner, name) is None for name in resources)
    runner.close()  # twice is harmless


@pytest.mark.parametrize(
    ("backend_name", "name", "kind"),
    [
        ("openvino", "model.xml", "ir"),
        ("openvino", "model.onnx", "onnx"),
        ("onnxruntime", "model.onnx", "onnx"),
        ("tensorrt", "model.engine", "engine"),
        ("tensorrt", "model.plan", "engine"),
    ],
)
def test_a_file_given_alone_gets_its_backends_kind(backend_name, name, kind, tmp_path):
    artifact = get_backend(backend_name).artifact_for_file(tmp_path / name, "int8")
    assert (artifact.backend, artifact.kind, artifact.precision, artifact.files) == (
        backend_name,
        kind,
        "int8",
        [tmp_path / name],
    )
