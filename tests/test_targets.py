"""Convention tests: every shipped target validates and names a registered backend; every backend satisfies
the protocol and states its facts (docs/architecture.md, "Adding a backend")."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from edgeresnext.backends import BACKENDS, Backend, RunOptions, get_backend, list_backends
from edgeresnext.config import load_target, target_from_dict
from edgeresnext.errors import ConfigError

TARGETS = sorted((Path(__file__).resolve().parents[1] / "targets").glob("*.yaml"))


def test_the_required_targets_exist():
    names = {path.stem for path in TARGETS}
    assert {"cpu", "cpu-fp32", "gpu", "jetson", "onnxruntime"} <= names


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.stem)
def test_every_target_validates_and_names_a_registered_backend(path):
    target = load_target(path)
    assert target.backend in BACKENDS
    assert target.description, f"{path}: say what device this target is for"
    assert isinstance(get_backend(target.backend), Backend)


def test_the_targets_mean_what_the_issue_asks():
    cpu, cpu_fp32 = load_target(TARGETS[0].parent / "cpu.yaml"), load_target(TARGETS[0].parent / "cpu-fp32.yaml")
    assert (cpu.backend, cpu.precision, cpu.gates.max_top1_drop) == ("openvino", "int8", 0.003)
    assert (cpu_fp32.backend, cpu_fp32.precision, cpu_fp32.quant.method) == ("openvino", "fp32", "none")
    gpu = load_target(TARGETS[0].parent / "gpu.yaml")
    assert (gpu.backend, gpu.precision, gpu.input.batch.min, gpu.input.batch.max) == ("tensorrt", "int8", 1, 32)
    assert gpu.backend_options.tensorrt.fp16 and gpu.backend_options.tensorrt.strongly_typed
    jetson = load_target(TARGETS[0].parent / "jetson.yaml")
    assert (jetson.input.batch.min, jetson.input.batch.opt, jetson.input.batch.max) == (1, 1, 8)
    assert jetson.backend_options.tensorrt.dla_core is None
    assert jetson.backend_options.tensorrt.on_device
    assert load_target(TARGETS[0].parent / "onnxruntime.yaml").backend == "onnxruntime"


@pytest.mark.parametrize("name", list_backends())
def test_every_backend_satisfies_the_protocol(name):
    backend = get_backend(name)
    assert backend.name == name and get_backend(name) is backend
    assert backend.kinds, "a backend says which artifact kinds it makes"
    reason = backend.available()
    assert reason is None or (isinstance(reason, str) and reason)
    cls = type(backend)
    # Backends implement the hooks; the public methods (input checks) stay the base class's or extend it.
    assert cls._compile_impl is not Backend._compile_impl and cls._load_impl is not Backend._load_impl
    assert list(inspect.signature(backend.compile).parameters)[:3] == ["onnx_path", "target", "out_dir"]
    # load() takes plain RunOptions (or a Target, or nothing: the artifact's recorded options).
    assert list(inspect.signature(backend.load).parameters)[:2] == ["artifact", "options"]
    assert issubclass(backend.options_type, RunOptions) and backend.default_device in backend.devices
    # The facts the rest of edgeresnext reads from the backend instead of listing them again.
    assert backend.display_name and backend.package in backend.packages
    assert backend.float_baseline in (None, "fp32", "fp16")
    for precision in ("int8", "fp32"):
        target = target_from_dict({"name": "t", "backend": name, "precision": precision})
        assert backend.compile_input(target) in ("qdq", "fp32")
        assert getattr(target.backend_options, name) is not None  # config's section, derived from options_type


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="expected one of: onnxruntime, openvino, tensorrt"):
        get_backend("coreml")


def test_backends_import_lazily():
    import subprocess
    import sys

    code = (
        "import sys, edgeresnext.backends as b; b.get_backend('tensorrt'); b.get_backend('onnxruntime'); "
        "print(sorted(m for m in ('openvino', 'tensorrt', 'torch', 'nncf') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"heavy packages imported just by getting backends: {out}"
