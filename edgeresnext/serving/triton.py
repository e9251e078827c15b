"""A Triton Inference Server model repository for a bundle: ``edgeresnext bundle triton BUNDLE OUT``.

Two entries (Triton's layout, ``<model>/config.pbtxt`` and ``<model>/1/``; server ``docs/user_guide``):

- ``<name>``, the **native** entry: the bundle's artifact as Triton's own backend runs it (``onnxruntime_onnx``,
  ``openvino``, ``tensorrt_plan``; the backend says which, :meth:`~edgeresnext.backends.Backend.triton_entry`). Its
  input and output names, dims, data types, ``max_batch_size`` and the dynamic batcher are the manifest's; its output
  carries ``label_filename`` (the manifest's labels): preprocessed float32 NCHW in, logits out.
- ``<name>_images``, the **end-to-end** entry: Triton's Python backend running
  :mod:`edgeresnext.serving.triton_model` on a verified copy of the bundle: image bytes in, softmax scores out
  (top-k labels through the classification extension), the bundle's own preprocessing and Runner.

A command, not the bundle stage, writes it: a Jetson bundle's plan exists only after the device step, the repository
copies the artifact (and the whole bundle for the end-to-end entry), and a repository can be made from any bundle,
also one built before this command existed. ``edgeresnext-triton.json`` at the top records which bundle (its
manifest's sha256) and every file's sha256; Triton reads only the model folders.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeresnext.atomic import replace_folder, sha256_file, temp_folder
from edgeresnext.backends import TritonEntry, get_backend
from edgeresnext.bundle import LABELS, MANIFEST, BundleError, verify_bundle
from edgeresnext.bundle.model import ArtifactEntry, Manifest
from edgeresnext.errors import ConfigError

logger = logging.getLogger(__name__)

RECORD = "edgeresnext-triton.json"
RECORD_FORMAT = "edgeresnext-triton-repository"
MODEL_PY = Path(__file__).with_name("triton_model.py")
IMAGES_SUFFIX = "_images"
IMAGE_INPUT, SCORES_OUTPUT = "IMAGE", "SCORES"  # the names triton_model.py reads and writes
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class TritonRepository:
    """What :func:`triton_repository` wrote: the folder, the two model names, and the record."""

    path: Path
    native: str
    images: str
    record: dict[str, Any]


def _quoted(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid protobuf text-format string (quotes and backslashes escaped)


def _dims(values: list[int]) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def _parameters(values: dict[str, str]) -> list[str]:
    return [
        f"parameters {{ key: {_quoted(key)} value {{ string_value: {_quoted(str(value))} }} }}"
        for key, value in sorted(values.items())
    ]


def _batching(manifest: Manifest) -> tuple[int, list[int]]:
    """(max_batch_size, the input dims Triton sees): a dynamic batch dimension becomes ``max_batch_size`` (the
    bundle's largest validated batch) and leaves the dims; a static one is ``max_batch_size: 0`` and full dims."""
    shape = manifest.input.shape
    if shape[0] > 0:
        return 0, list(shape)
    return _max_batch(manifest), list(shape[1:])


def _max_batch(manifest: Manifest) -> int:
    return int(manifest.input.batch.max) if manifest.input.batch is not None else 1


def native_config(name: str, manifest: Manifest, entry: TritonEntry) -> str:
    """config.pbtxt of the native entry: the manifest's tensors, batch and labels, the backend's platform."""
    max_batch, dims = _batching(manifest)
    types = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
    inp, out = manifest.input, manifest.output
    out_dims = out.shape[1:] if max_batch else out.shape
    lines = [f"name: {_quoted(name)}"]
    lines.append(f"platform: {_quoted(entry.platform)}" if entry.platform else f"backend: {_quoted(entry.backend)}")
    lines += [
        f"max_batch_size: {max_batch}",
        f"input [ {{ name: {_quoted(inp.name)} data_type: {types[inp.dtype]} format: FORMAT_NCHW "
        f"dims: {_dims(dims)} }} ]",
        f"output [ {{ name: {_quoted(out.name)} data_type: {types[out.dtype]} dims: {_dims(out_dims)} "
        f"label_filename: {_quoted(LABELS)} }} ]",
    ]
    if max_batch:
        lines.append("dynamic_batching { }")
    lines.append(f"instance_group [ {{ kind: {entry.kind} count: 1 }} ]")
    for capability, filename in sorted(entry.cc_model_filenames.items()):
        lines.append(f"cc_model_filenames {{ key: {_quoted(capability)} value: {_quoted(filename)} }}")
    lines += _parameters(entry.parameters)
    return "\n".join(lines) + "\n"


def images_config(name: str, manifest: Manifest, parameters: dict[str, str]) -> str:
    """config.pbtxt of the end-to-end entry (Python backend): UINT8 image bytes in, FP32 scores with labels out.

    ``allow_ragged_batch`` lets the dynamic batcher hand requests of different byte lengths to one ``execute`` call
    (the Python backend keeps each request's tensor apart)."""
    max_batch = max(1, _max_batch(manifest))
    lines = [
        f"name: {_quoted(name)}",
        'backend: "python"',
        f"max_batch_size: {max_batch}",
        f"input [ {{ name: {_quoted(IMAGE_INPUT)} data_type: TYPE_UINT8 dims: [ -1 ] allow_ragged_batch: true }} ]",
        f"output [ {{ name: {_quoted(SCORES_OUTPUT)} data_type: TYPE_FP32 "
        f"dims: [ {int(manifest.model.num_classes)} ] label_filename: {_quoted(LABELS)} }} ]",
        "dynamic_batching { }",
        "instance_group [ { kind: KIND_CPU count: 1 } ]",
        *_parameters(parameters),
    ]
    return "\n".join(lines) + "\n"


def _chosen(bundle: Path, manifest: Manifest, backend: str | None) -> ArtifactEntry:
    artifacts = manifest.artifacts
    chosen = next((a for a in artifacts if backend is None or a.backend == backend), None)
    if chosen is None:
        have = ", ".join(sorted({a.backend for a in artifacts}))
        raise ConfigError(f"{bundle}: --backend {backend}: the bundle has no such artifact; it has: {have}")
    return chosen


def _model_name(name: str | None, manifest: Manifest) -> str:
    if name is None:
        target = manifest.target.name if manifest.target is not None else None
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(target or manifest.model.arch))
    if not _NAME.match(name):
        raise ConfigError(f"--name {name!r}: a model name is 1-64 letters, digits, '_', '.', '-' (not first)")
    return name


def _check_out(out: Path, bundle: Path) -> None:
    """OUT is new, empty, or a repository this command wrote (replaced whole); never the bundle or inside it."""
    if out.resolve() == bundle.resolve() or out.resolve().is_relative_to(bundle.resolve()):
        raise ConfigError(f"{out}: the repository cannot be written inside the bundle {bundle}; give another folder")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"{out}: exists and is not a folder; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD).is_file():
        raise ConfigError(
            f"{out}: a folder with files that `edgeresnext bundle triton` did not write (no {RECORD}); give a new or "
            "empty folder"
        )


def _write_native(folder: Path, name: str, manifest: Manifest, entry: TritonEntry, bundle: Path) -> None:
    (folder / "1").mkdir(parents=True)
    for filename, source in entry.files.items():
        shutil.copyfile(source, folder / "1" / filename)
    shutil.copyfile(bundle / manifest.labels, folder / LABELS)
    (folder / "config.pbtxt").write_text(native_config(name, manifest, entry), encoding="utf-8")


def _write_images(folder: Path, name: str, manifest: Manifest, bundle: Path, params: dict[str, str]) -> None:
    copy = folder / "1" / "bundle"
    for relative in [MANIFEST, *(item.path for item in manifest.files)]:
        (copy / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bundle / relative, copy / relative)
    shutil.copyfile(MODEL_PY, folder / "1" / "model.py")
    shutil.copyfile(bundle / manifest.labels, folder / LABELS)
    (folder / "config.pbtxt").write_text(images_config(name, manifest, params), encoding="utf-8")


def _record(root: Path, bundle: Path, manifest: Manifest, names: dict[str, str], stand_in: bool) -> dict:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {
        "format": RECORD_FORMAT,
        "bundle": {
            "name": bundle.resolve().name,
            "manifest_sha256": sha256_file(bundle / MANIFEST),
            "target": manifest.target.name if manifest.target is not None else None,
            "backend": manifest.backend.to_json(),
            "precision": manifest.precision,
        },
        "models": names,
        "stand_in": stand_in,
        "files": [
            {"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files
        ],
    }


def triton_repository(
    bundle_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    name: str | None = None,
    backend: str | None = None,
    stand_in: bool = False,
) -> TritonRepository:
    """Write the Triton model repository of a bundle into ``out_dir`` (see the module docstring); returns it.

    ``backend`` picks the artifact (default: the primary one). ``stand_in``: the end-to-end entry runs the artifact's
    host stand-in (``load_bundle(..., stand_in=True)``: a Jetson engine's FP16 Q/DQ ONNX in ONNX Runtime), to try the
    repository of a Jetson bundle on a workstation; the native entry is the artifact either way. The bundle is
    verified first; the folder is assembled under a temporary name and renamed into place.
    """
    bundle, out = Path(bundle_dir), Path(out_dir)
    manifest = verify_bundle(bundle)
    chosen = _chosen(bundle, manifest, backend)
    runtime = get_backend(chosen.backend)
    entry = runtime.triton_entry(runtime.artifact_from_manifest(bundle, chosen.to_json()))
    if entry is None:
        raise BundleError(
            f"{bundle}: the {chosen.backend} {chosen.kind} artifact is nothing Triton runs yet; build it on the "
            f"device first: `edgeresnext bundle build-engine {bundle}`"
        )
    _check_out(out, bundle)
    native = _model_name(name, manifest)
    names = {"native": native, "images": native + IMAGES_SUFFIX}
    params = {"bundle": "bundle", "backend": chosen.backend, **({"stand_in": "true"} if stand_in else {})}
    with temp_folder(out) as tmp:
        _write_native(tmp / native, native, manifest, entry, bundle)
        _write_images(tmp / names["images"], names["images"], manifest, bundle, params)
        record = _record(tmp, bundle, manifest, names, stand_in)
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        replace_folder(tmp, out)
    logger.info("triton repository %s: %s (native %s) and %s (images)", out, native, chosen.backend, names["images"])
    return TritonRepository(out, native, names["images"], record)
