"""A backend added from the test folder alone (tests/toy_backend.py and one registry entry) goes through build,
``edgeresnext validate``, the bundle, ``bundle verify`` and ``load_bundle``.

Nothing outside tests/ names the toy: its target section, the manifest schema's backend and kind enums, the package
versions the stage cache keys on and the report's runtime name all come from the registered class. A backend that
needed an edit anywhere else (a hand-listed options model, enum or package list) fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import toy_backend
import yaml

from edgeresnext.backends import BACKENDS, register_backend
from edgeresnext.config import load_target, target_from_dict
from edgeresnext.environment import stage_packages
from edgeresnext.errors import ConfigError
from edgeresnext.pipeline import build
from edgeresnext.registry import PLUGIN_ENV
from edgeresnext.runtime import load_bundle
from edgeresnext.validate.results import runtime_label

REPO = Path(__file__).resolve().parents[1]
IMAGES = 64


@pytest.fixture
def toy_registered():
    register_backend(toy_backend.NAME, toy_backend.SPEC)
    try:
        yield toy_backend.NAME
    finally:
        BACKENDS.pop(toy_backend.NAME, None)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The command in another process, the toy registered the way such a process registers it (an environment
    variable) and importable from the test folder."""
    path = os.pathsep.join([str(Path(__file__).parent), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path, PYTHONWARNINGS="ignore", **{PLUGIN_ENV: "toy=" + toy_backend.SPEC})
    command = [sys.executable, "-m", "edgeresnext.cli", "--quiet", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def _target_file(folder: Path) -> Path:
    data = {
        "name": "toy-small",
        "backend": "toy",
        "precision": "fp32",
        "quant": {"method": "none"},
        "data": {"limit": IMAGES},
        "validate": {"latency_runs": 3, "warmup_runs": 1},
        "backend_options": {"toy": {"threads": 1, "flavour": "fancy"}},
    }
    path = folder / "toy-small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_target_schema_knows_the_toy_only_once_registered(tmp_path: Path, toy_registered: str) -> None:
    path = _target_file(tmp_path)
    target = load_target(path)
    assert target.backend_options.toy.flavour == "fancy" and target.backend_options.toy.threads == 1
    assert target.resolved()["backend_options"]["toy"] == {"threads": 1, "flavour": "fancy"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("flavour: fancy", "colour: red"))
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'backend_options\.toy\.colour'.*flavour, threads"):
        load_target(bad)
    BACKENDS.pop(toy_registered)
    with pytest.raises(ConfigError, match=r"toy-small\.yaml: backend must be one of 'onnxruntime', 'openvino'"):
        load_target(path)


def test_a_registry_entry_that_cannot_be_imported_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLUGIN_ENV, "ghost=no_such_module:Ghost")
    with pytest.raises(ConfigError, match=r"backend 'ghost' \(no_such_module:Ghost, from EDGERESNEXT_BACKENDS"):
        target_from_dict({"name": "x", "backend": "onnxruntime"})
    monkeypatch.setenv(PLUGIN_ENV, "ghost")
    with pytest.raises(ConfigError, match=r"EDGERESNEXT_BACKENDS: 'ghost' is not name=module:Class"):
        target_from_dict({"name": "x", "backend": "onnxruntime"})


@pytest.mark.promise("docs/architecture.md", "is one module and one registry entry")
def test_a_backend_from_the_test_folder_goes_from_build_to_a_loaded_bundle(tmp_path: Path, toy_registered: str):
    target = load_target(_target_file(tmp_path))
    assert "onnxruntime" in stage_packages()
    summary = build(target, out_root=tmp_path / "build", progress=False)
    root = summary.context.root
    artifact = json.loads((root / "compile" / "artifact.json").read_text())
    assert (artifact["backend"], artifact["kind"], Path(artifact["path"]).suffix) == ("toy", "toy", ".toy")

    report = json.loads((root / "validate" / "report.json").read_text())
    rows = {row["name"]: row for row in report["artifacts"]}
    assert report["primary"] == "toy-fp32" and rows["toy-fp32"]["status"] == "ok", list(rows)
    assert rows["toy-fp32"]["info"]["runtime"]["flavour"] == "fancy"  # the toy's own precision report
    assert rows["toy-fp32"]["agreement"] == 1.0  # the FP32 ONNX, run by another name
    assert runtime_label("toy", "fp32") == "Toy Runtime FP32"  # how a speed-up names it

    again = _cli("validate", "--target", str(target.source), "--build", str(tmp_path / "build"), "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr
    revalidated = json.loads((tmp_path / "report.json").read_text())
    toy_rows = [row for row in revalidated["artifacts"] if row["backend"] == "toy"]
    assert toy_rows and toy_rows[0]["status"] == "ok" and toy_rows[0]["agreement"] == 1.0

    bundle = root / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["backend"]["name"] == "toy" and manifest["artifacts"][0]["kind"] == "toy"
    verified = _cli("bundle", "verify", str(bundle))
    assert verified.returncode == 0, verified.stderr

    images = np.zeros((2, 28, 28), dtype=np.uint8)
    with load_bundle(bundle) as classifier:
        assert classifier.backend == "toy" and classifier.runner.options.flavour == "fancy"
        assert len(classifier.predict(list(images))) == 2


def test_a_compile_where_the_runtime_is_missing_is_refused_before_the_backend_runs(
    tmp_path: Path, toy_registered: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Base.compile asks available() once for every backend (TensorRT alone writes its kit instead): the toy's
    _compile_impl never runs, and nothing is written."""
    import onnx
    from onnx import TensorProto, helper

    from edgeresnext.backends import get_backend
    from edgeresnext.backends.tensorrt import TensorRTBackend
    from edgeresnext.errors import BackendUnavailable

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "model.onnx")
    backend = get_backend(toy_registered)
    monkeypatch.setattr(type(backend), "available", lambda self: "the toy runtime is not installed")
    ran = []
    monkeypatch.setattr(type(backend), "_compile_impl", lambda *args: ran.append(args))
    target = load_target(_target_file(tmp_path))
    with pytest.raises(BackendUnavailable, match=r"^the toy runtime is not installed$"):
        backend.compile(tmp_path / "model.onnx", target, tmp_path / "out")
    assert ran == [] and not (tmp_path / "out").exists()
    assert TensorRTBackend.compiles_without_runtime and not type(backend).compiles_without_runtime
