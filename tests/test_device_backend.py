"""A second backend whose build finishes on the device (tests/device_backend.py and one registry entry) goes through
build, the kit, the device step, the seal, ``bundle verify``, ``load_bundle`` and ``edgeresnext report BUNDLE`` with its
own device row.

Nothing outside tests/ names it: what the bundle carries for the device, whether the bundle loads yet, the manifest
section the device step writes and the report's device row all come from its hooks on
:class:`~edgeresnext.backends.Backend`. Generic code that still compared a kind with ``"kit"`` or reached into
``backends.tensorrt`` would take the TensorRT path here and fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import device_backend
import numpy as np
import pytest
import yaml

from edgeresnext.backends import BACKENDS, register_backend
from edgeresnext.config import load_target
from edgeresnext.errors import BackendUnavailable
from edgeresnext.pipeline import build
from edgeresnext.registry import PLUGIN_ENV
from edgeresnext.runtime import load_bundle

REPO = Path(__file__).resolve().parents[1]
IMAGES = 64
CHECKED = 16  # backend_options.ortdevice.check_images


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """A build of a target of the test backend (registered for the module), and its summary."""
    register_backend(device_backend.NAME, device_backend.SPEC)
    try:
        root = tmp_path_factory.mktemp("device-backend")
        target = root / "ortdevice-small.yaml"
        target.write_text(
            yaml.safe_dump(
                {
                    "name": "ortdevice-small",
                    "backend": device_backend.NAME,
                    "precision": "fp32",
                    "quant": {"method": "none"},
                    "data": {"limit": IMAGES},
                    "validate": {"latency_runs": 3, "warmup_runs": 1},
                    "backend_options": {device_backend.NAME: {"check_images": CHECKED}},
                }
            )
        )
        summary = build(load_target(target), out_root=root / "build", progress=False)
        yield summary, root
    finally:
        BACKENDS.pop(device_backend.NAME, None)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The command in another process, the backend registered as such a process registers it (the environment)."""
    path = os.pathsep.join([str(Path(__file__).parent), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path, PYTHONWARNINGS="ignore", **{PLUGIN_ENV: "ortdevice=" + device_backend.SPEC})
    command = [sys.executable, "-m", "edgeresnext.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.promise("docs/architecture.md", "a second such backend is one module and one registry entry")
def test_a_backend_built_on_the_device_goes_from_build_to_a_sealed_bundle_and_its_report(built, tmp_path):
    summary, _root = built
    root = summary.context.root
    # The build: the kit is what compile made; the host cannot run it, and says what is left to do.
    assert summary.not_done == ["the model is built on the device (ortdevice): its kit's build.py"], summary.not_done
    bundle = root / "bundle"
    assert f"ortdevice: on the device run `edgeresnext bundle build-engine {bundle}` (checks {CHECKED} images)" in (
        summary.notes
    )
    report = json.loads((root / "validate" / "report.json").read_text())
    rows = {row["name"]: row for row in report["artifacts"]}
    assert rows["ortdevice-fp32"]["status"] == "skipped", list(rows)
    # The bundle carries the kit under the backend's folder name, with the check set the backend put in: the host's
    # outputs kept by the validate stage for the very images (not computed twice).
    stage = json.loads((root / "bundle.stage.json").read_text())
    assert stage["info"]["device_check_set"] == {"images": CHECKED, "kept_from_validation": True}
    manifest = json.loads((bundle / "manifest.json").read_text())
    kit = manifest["artifacts"][0]
    assert (kit["backend"], kit["kind"], kit["path"]) == ("ortdevice", "devkit", "devkit")
    assert {"devkit/build.py", "devkit/check/inputs.npy", "devkit/check/host_report.json"} <= {
        f["path"] for f in manifest["files"]
    }
    # Not loadable yet, and every command says why.
    verified = _cli("bundle", "verify", str(bundle))
    assert verified.returncode == 0, verified.stderr
    assert f"ortdevice: not built yet; run `edgeresnext bundle build-engine {bundle}` on the device" in verified.stdout
    with pytest.raises(BackendUnavailable, match="an ortdevice kit; run `edgeresnext bundle build-engine"):
        load_bundle(bundle)
    early = _cli("report", str(bundle), "--out", str(tmp_path / "early"))
    assert early.returncode == 3, early.stderr
    assert "device check: unchecked: not built on the device yet" in early.stdout

    # On the device: the kit's own script builds the model, the backend checks it and seals it into the manifest.
    device = Path(shutil.copytree(bundle, tmp_path / "on-device" / "bundle"))
    sealed = _cli("bundle", "build-engine", str(device))
    assert sealed.returncode == 0, sealed.stderr
    assert "ortdevice: built devkit/model.device.onnx on the device" in sealed.stdout
    assert (device / "devkit" / "model.device.onnx").read_bytes() == (device / "devkit" / "model.onnx").read_bytes()
    verified = _cli("bundle", "verify", str(device))
    assert verified.returncode == 0, verified.stderr
    assert "ortdevice: devkit/model.device.onnx built on the device; device check: checked" in verified.stdout

    entry = json.loads((device / "manifest.json").read_text())["artifacts"][0]
    assert entry["kind"] == "devonnx" and entry["ondevice"]["device_check"]["images"] == CHECKED
    with load_bundle(device) as classifier:
        assert classifier.device_check == "checked" and classifier.backend == "ortdevice"
        inputs = np.load(device / "devkit" / "check" / "inputs.npy")
        host = json.loads((device / "devkit" / "check" / "host.json").read_text())
        logits = classifier.runner(inputs)
        assert [int(i) for i in logits.argmax(1)] == host["fp32_top1"]
        # Why the device check may ask for exact agreement with the host's PyTorch FP32 on every CPU kind: this
        # model's ONNX Runtime and PyTorch FP32 logits differ by about 2e-5 at most (the validation's max_abs_error
        # over the 10,000 test images), so a top-1 can differ only where the two largest logits lie closer than
        # that; on these 16 images every gap is above 1e-3.
        top2 = np.sort(logits, axis=1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > 1e-3

    # The report of the bundle back from the device: the host's rows and the device's own row.
    out = tmp_path / "device-report"
    reported = _cli("report", str(device), "--out", str(out))
    assert reported.returncode == 0, reported.stderr + reported.stdout
    assert "device check: checked: ortdevice: the device agrees with the host's FP32 top-1 on 16 of 16" in (
        reported.stdout
    )
    markdown = (out / "report.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| devkit/model.device.onnx"))
    assert "(ortdevice, on the device) | this host's CPU (ONNX Runtime), as the device | 16 | " in row
    assert row.endswith("| CHECKED |")
