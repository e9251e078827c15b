"""A second backend whose build finishes on the device, living in the test folder alone: ONNX Runtime "built on the
device" by the kit's own script, which copies the ONNX (``devkit/build.py``), then checked there on images the host
put into the bundle with its own outputs for them.

It implements the on-device hooks of :class:`~edgeresnext.backends.Backend` (what the bundle carries for the device,
when the bundle is loadable, the manifest section the device step writes and how it is read back, the report's device
row, what the CLI says) and nothing else of edgeresnext names it: tests/test_device_backend.py registers it (one
registry entry) and carries it through build, the kit, the device step, the seal, ``bundle verify``, ``load_bundle`` and
``edgeresnext report BUNDLE``. A hook that generic code bypassed (a ``kind == "kit"`` test, a TensorRT import) fails
there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnext.backends import Artifact, ArtifactInfo, Backend, Runner, RunOptions, copy_artifact_folder, option
from edgeresnext.backends.base import DeviceStepOutcome, HostOutputs
from edgeresnext.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_UNPROVEN, ConfigError
from edgeresnext.onnx_io import ort_session

if TYPE_CHECKING:
    from edgeresnext.config import Target

NAME = "ortdevice"
SPEC = "device_backend:DeviceBackend"
KIT, BUILT = "devkit", "devonnx"  # the artifact kinds: the kit the host writes, the model the device builds
KIT_FILE = "devkit.json"
BUILD_SCRIPT = "build.py"
SECTION = "ondevice"  # the manifest section the device step writes beside the artifact entry
CHECK = "check"  # the kit's folder of check images and the host's outputs for them
# The device's build: standard library only, run by the device's python3 in the kit folder.
SCRIPT = """import json, shutil
plan = json.load(open("devkit.json"))
shutil.copyfile(plan["onnx"], plan["output"])
print("built", plan["output"])
"""


@dataclass(frozen=True)
class DeviceOptions(RunOptions):
    threads: int | None = option(None, ge=1, recorded=True)
    check_images: int = option(16, ge=0, le=1000, description="images the kit carries for the device check")


class DeviceRunner(Runner):
    def __init__(self, artifact: Artifact, options: DeviceOptions) -> None:
        super().__init__(artifact, options)
        self.session = ort_session(Path(artifact.path), options.threads or 1)
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = tuple(self.session.get_inputs()[0].shape[1:])

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: batch})
        return logits

    def close(self) -> None:
        self.session = None


class DeviceBackend(Backend):
    name = NAME
    display_name = "ONNX Runtime (built on the device)"
    kinds = (KIT, BUILT)
    suffixes = ()
    package = "onnxruntime"
    options_type = DeviceOptions
    kit_file = KIT_FILE

    def compile_input(self, target: Target) -> str:
        return "fp32"

    def io_signature(self, artifact: Artifact) -> dict[str, Any]:
        from edgeresnext.onnx_io import onnx_signature

        path = Path(artifact.path)
        return onnx_signature(path / "model.onnx" if artifact.kind == KIT else path)

    def _compile_impl(
        self, onnx_path: Path, target: Target, out_dir: Path, calibration: np.ndarray | None = None
    ) -> Artifact:
        kit = out_dir / KIT
        kit.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_path, kit / "model.onnx")
        (kit / KIT_FILE).write_text(json.dumps({"onnx": "model.onnx", "output": "model.device.onnx"}) + "\n")
        (kit / BUILD_SCRIPT).write_text(SCRIPT)
        reason = "the model is built on the device (ortdevice): its kit's build.py"
        info = ArtifactInfo(
            source_onnx=str(onnx_path),
            extra={"reason": reason, "commands": [f"cd {kit} && python3 {BUILD_SCRIPT}"], "threads": 1},
        )
        files = [kit / "model.onnx", kit / KIT_FILE, kit / BUILD_SCRIPT]
        return Artifact(NAME, target.precision, KIT, kit, files, info)

    def _load_impl(self, artifact: Artifact, options: RunOptions) -> Runner:
        return DeviceRunner(artifact, options)

    # ---------------------------------------------------------------- the on-device hooks
    def awaits_device(self, artifact: Artifact) -> str | None:
        return artifact.info.extra["reason"] if artifact.kind == KIT else None

    def device_commands(self, artifact: Artifact) -> list[str]:
        return list(artifact.info.extra.get("commands", [])) if artifact.kind == KIT else []

    def host_outputs_needed(
        self, artifact: Artifact, target: Target, input_chw: tuple[int, ...], num_classes: int, available: int
    ) -> int:
        return min(target.backend_options.ortdevice.check_images, available) if artifact.kind == KIT else 0

    def bundle_for_device(
        self, artifact: Artifact, scratch: Path, host: HostOutputs
    ) -> tuple[Artifact, dict[str, Any] | None]:
        from edgeresnext.data.validation import load_validation_data

        count = min(host.target.backend_options.ortdevice.check_images, host.validated_images)
        if artifact.kind != KIT or count == 0:
            return artifact, None
        kit, files = copy_artifact_folder(artifact, scratch)
        data = load_validation_data(host.target.data, host.meta.preprocess, host.meta.class_names)
        inputs, ids = np.ascontiguousarray(data.inputs[:count]), list(data.ids[:count])
        fp32, kept = host.logits(inputs, ids)
        (kit / CHECK).mkdir()
        np.save(kit / CHECK / "inputs.npy", inputs, allow_pickle=False)
        host_record = {"ids": ids, "labels": [int(y) for y in data.labels[:count]], "fp32_top1": _top1(fp32)}
        (kit / CHECK / "host.json").write_text(json.dumps(host_record) + "\n")
        shutil.copyfile(host.report, kit / CHECK / "host_report.json")
        files += [kit / CHECK / name for name in ("inputs.npy", "host.json", "host_report.json")]
        record = {"images": count, "kept_from_validation": kept}
        return Artifact(artifact.backend, artifact.precision, KIT, kit, files, artifact.info), record

    def bundle_folder(self, artifact: Artifact) -> str | None:
        return KIT if artifact.kind == KIT else None

    def device_step_notes(self, artifact: Artifact, bundle: Path | None, record: dict[str, Any] | None) -> list[str]:
        if bundle is None:
            return super().device_step_notes(artifact, bundle, record)
        images = (record or {}).get("images", 0)
        return [f"ortdevice: on the device run `edgeresnext bundle build-engine {bundle}` (checks {images} images)"]

    def not_loadable_yet(self, bundle_dir: Path, entry: Mapping[str, Any]) -> str | None:
        if entry["kind"] != KIT:
            return None
        return f"{bundle_dir}: an ortdevice kit; run `edgeresnext bundle build-engine {bundle_dir}` on the device"

    def device_check(self, entry: Mapping[str, Any]) -> dict[str, Any] | None:
        return dict(entry[SECTION]["device_check"]) if entry["kind"] == BUILT else None

    def bundle_status(self, bundle_dir: Path, entry: Mapping[str, Any]) -> list[str]:
        if entry["kind"] == KIT:
            return [f"ortdevice: not built yet; run `edgeresnext bundle build-engine {bundle_dir}` on the device"]
        check = entry[SECTION]["device_check"]
        return [f"ortdevice: {entry['path']} built on the device; device check: {check['status']}"]

    def device_report(self, bundle_dir: Path, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        kit = next((a for a in manifest["artifacts"] if a["kind"] == KIT), None)
        if kit is None:
            return None
        built = next((a for a in manifest["artifacts"] if a["kind"] == BUILT), None)
        check = self.device_check(built) if built else {"status": "unchecked", "reason": "not built on the device yet"}
        name = f"{built['path']} (ortdevice, on the device)" if built else "ortdevice model (not built)"
        return {"host_report": f"{kit['path']}/{CHECK}/host_report.json", "device_engine": name, "device_check": check}

    def seal_on_device(self, bundle_dir: Path, check: Callable[[Path], None], **options: Any) -> dict[str, Any]:
        from edgeresnext.bundle import read_manifest

        manifest = read_manifest(bundle_dir).to_json()  # the device step writes the manifest as JSON, as seal.py does
        kit = manifest["artifacts"][0]
        if kit["kind"] != KIT:
            raise ConfigError(f"{bundle_dir}: already built on the device")
        work = bundle_dir.with_name(f".{bundle_dir.name}.sealing")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(bundle_dir, work)
        try:
            manifest = _built_into(work, manifest, kit)
            check(work)  # the manifest schema, the signature: the generic part of every device step
            old = bundle_dir.with_name(f".{bundle_dir.name}.old")
            bundle_dir.rename(old)
            work.rename(bundle_dir)
            shutil.rmtree(old)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return manifest

    def device_step_outcome(self, bundle_dir: Path, manifest: Mapping[str, Any]) -> DeviceStepOutcome:
        entry = manifest["artifacts"][0]
        check = entry[SECTION]["device_check"]
        lines = [f"ortdevice: built {entry['path']} on the device", f"device check: {check['status']}"]
        code = {"checked": EXIT_OK, "failed": EXIT_GATE_FAILED}.get(check["status"], EXIT_UNPROVEN)
        return DeviceStepOutcome(lines, code, check["gate"]["message"] if code else "")


def _top1(logits: np.ndarray) -> list[int]:
    return [int(i) for i in np.asarray(logits).argmax(1)]


def _built_into(work: Path, manifest: dict[str, Any], kit: dict[str, Any]) -> dict[str, Any]:
    """Run the kit's own build script in the copy ``work``, check the model it built on the check images, and record
    both in the copy's manifest (the new primary artifact, with its ``ondevice`` section)."""
    from edgeresnext.atomic import sha256_file
    from edgeresnext.bundle.manifest import MANIFEST, SIGNATURE

    folder = work / kit["path"]
    plan = json.loads((folder / KIT_FILE).read_text())
    subprocess.run([sys.executable, BUILD_SCRIPT], cwd=folder, check=True, capture_output=True)
    built = f"{kit['path']}/{plan['output']}"
    entry = {
        "backend": NAME,
        "precision": kit["precision"],
        "kind": BUILT,
        "path": built,
        "files": [built],
        "info": {k: v for k, v in kit.get("info", {}).items() if k == "threads"},
        SECTION: {
            "built_from": f"{kit['path']}/{plan['onnx']}",
            "device_check": _device_check(folder / plan["output"]),
        },
    }
    manifest["artifacts"] = [entry, *manifest["artifacts"]]
    manifest["files"] = [
        {"path": p.relative_to(work).as_posix(), "sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(work.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST, SIGNATURE)
    ]
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _device_check(model: Path) -> dict[str, Any]:
    """The built model on the kit's check images against the host's FP32 top-1s: the figures of the device row."""
    from edgeresnext import stats

    check_dir = model.parent / CHECK
    host = json.loads((check_dir / "host.json").read_text())
    inputs = np.load(check_dir / "inputs.npy", allow_pickle=False)
    session = ort_session(model, 1)
    name = session.get_inputs()[0].name
    start = time.perf_counter()
    logits = np.concatenate([session.run(None, {name: inputs[i : i + 1]})[0] for i in range(len(inputs))])
    per_image_ms = (time.perf_counter() - start) * 1000 / len(inputs)
    device, n = _top1(logits), len(inputs)
    right = sum(d == y for d, y in zip(device, host["labels"], strict=True))
    agree = sum(d == f for d, f in zip(device, host["fp32_top1"], strict=True))

    def interval(count: int) -> dict[str, Any]:
        found = stats.proportion_interval(count, n, 0.95, "exact")
        return {"value": count / n, "count": count, "n": n, "interval": [found.lower, found.upper]}

    status = "checked" if agree == n else "failed"
    message = f"ortdevice: the device agrees with the host's FP32 top-1 on {agree} of {n} images"
    return {
        "status": status,
        "images": n,
        "top1": interval(right),
        "agreement_fp32": interval(agree),
        "agreement_stand_in": interval(agree),
        "max_abs_dlogit_vs_stand_in": None,
        "mean_abs_dlogit_vs_stand_in": 0.0,
        "latency": {"batch_1": {"batch": 1, "p50_ms": per_image_ms, "p99_ms": per_image_ms, "images_per_s": 0.0}},
        "device": {"where": "this host's CPU (ONNX Runtime), as the device"},
        "gate": {"message": message, "provable": True},
    }
