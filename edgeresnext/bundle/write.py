"""Writing a bundle: the artifacts' files, ``labels.txt`` and ``manifest.json``, assembled under a temporary
name and renamed into place. What the manifest says about an artifact (runtime package, device, input and
output names) comes from its backend."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeresnext.atomic import replace_folder, sha256_file, temp_folder
from edgeresnext.backends import get_backend, list_backends
from edgeresnext.bundle.manifest import LABELS, MANIFEST, SIGNATURE, check_schema, manifest_schema
from edgeresnext.bundle.model import (
    FORMAT,
    SCHEMA_VERSION,
    ArtifactEntry,
    BackendSection,
    BatchRange,
    DeviceSection,
    Exports,
    FileEntry,
    InputSection,
    Manifest,
    ModelSection,
    OutputSection,
    PreprocessSection,
    TargetSection,
)
from edgeresnext.environment import cpu_model
from edgeresnext.errors import ConfigError

if TYPE_CHECKING:
    from edgeresnext.backends.base import Artifact
    from edgeresnext.config import Target
    from edgeresnext.models.checkpoints import ModelMeta

logger = logging.getLogger(__name__)

SCORES = "softmax over the class axis; class i is line i of labels.txt"  # what a device app makes of the logits


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _edgeresnext_version() -> str:
    from edgeresnext import __version__

    return __version__


def _jsonable(value: Any) -> Any:
    """Validation summaries come from numpy code: turn numpy scalars/arrays and paths into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ConfigError(f"bundle: validation summary value {value!r} ({type(value).__name__}) is not JSON data")


def _artifact_files(artifact: Artifact) -> list[Path]:
    """Every file the artifact needs (a folder artifact, an on-device build kit, contributes its files)."""
    files = [Path(p) for p in artifact.files] or [Path(artifact.path)]
    if Path(artifact.path) not in files:
        files.insert(0, Path(artifact.path))
    return files


def _io_signature(artifact: Artifact, meta: ModelMeta) -> dict[str, Any]:
    """Input/output names and shapes: what the artifact's backend reads from it (the ONNX or IR file, or names
    the backend recorded), else what the model's metadata implies (``input``/``logits``)."""
    size = meta.preprocess.crop or meta.preprocess.resize or meta.input_size
    sig: dict[str, Any] = {
        "input_name": "input",
        "input_shape": [-1, meta.in_channels, size, size],
        "output_name": "logits",
        "output_shape": [-1, meta.num_classes],
    }
    path = Path(artifact.path)
    try:
        sig.update(get_backend(artifact.backend).io_signature(artifact))
    except ImportError as err:
        logger.warning(
            "cannot read the input/output names of %s (%s); using %s/%s",
            path,
            err,
            sig["input_name"],
            sig["output_name"],
        )
    except Exception as err:  # onnx/openvino raise their own types (DecodeError, RuntimeError) for a bad file
        raise ConfigError(f"{path}: cannot read the {artifact.backend} {artifact.kind} artifact ({err})") from err
    return sig


def _tensor(sig: dict[str, Any], which: str) -> dict[str, Any]:
    """The name, shape and dtype of the model's input or output (``which``), as the manifest records them."""
    return {"name": sig[f"{which}_name"], "shape": [int(d) for d in sig[f"{which}_shape"]], "dtype": "float32"}


def _batch_range(sig: dict[str, Any], target: Target | None) -> BatchRange:
    """The batch sizes the bundle runs: the target's range, or the model's static batch dimension when it has one."""
    if sig["input_shape"][0] > 0:  # a static batch dimension overrides the target's range
        return BatchRange(min=sig["input_shape"][0], opt=sig["input_shape"][0], max=sig["input_shape"][0])
    if target is not None:
        return BatchRange(**target.input.batch.model_dump())
    return BatchRange(min=1, opt=1, max=1)


def _model_section(meta: ModelMeta) -> ModelSection:
    return ModelSection(
        arch=meta.arch,
        num_classes=meta.num_classes,
        dataset=meta.dataset,
        recipe=meta.recipe,
        metrics=_jsonable(meta.metrics),
        provenance=dict(meta.provenance) if meta.provenance else None,
    )


def _preprocess_section(meta: ModelMeta) -> PreprocessSection:
    """The preprocessing keys plus, in words, what a device app must do with them."""
    pre = meta.preprocess
    return PreprocessSection(
        **pre.to_dict(),
        channel_order=pre.channels,
        resize_mode="shorter side to `resize`, bilinear (Pillow, antialiased)",
        crop_mode="center",
        scale=1.0 / 255.0,
        order="convert to `channels`, resize, crop, x * scale, (x - mean) / std, HWC to CHW",
    )


def _device_section(target_device: str, built_on: dict[str, Any]) -> DeviceSection:
    """The device the bundle is for and the machine that built it (``built_on``: what the backend adds, e.g. the
    GPU and TensorRT version an engine was built with)."""
    return DeviceSection(
        target_device=target_device,
        built_on={"machine": platform.machine(), "system": platform.system(), "cpu": cpu_model(), **built_on},
    )


def _artifact_entries(artifacts: Sequence[Artifact], names: dict[Path, str]) -> list[ArtifactEntry]:
    return [
        ArtifactEntry(
            backend=a.backend,
            precision=a.precision,
            kind=a.kind,
            path=names[Path(a.path)],
            files=[names[p] for p in _artifact_files(a)],
            info=_jsonable(a.info.to_dict()),
        )
        for a in artifacts
    ]


def build_manifest(
    artifacts: Sequence[Artifact],
    names: dict[Path, str],
    meta: ModelMeta,
    validation_summary: dict[str, Any] | None,
    target: Target | None,
) -> Manifest:
    """The manifest (``files`` still empty) for artifacts whose files are known in the bundle as ``names``."""
    primary = artifacts[0]
    sig = _io_signature(primary, meta)
    backend = get_backend(primary.backend)
    backend_version = str(backend.runtime_version(primary) or _package_version(backend.package))
    target_device = str(backend.target_device(target))
    return Manifest(
        format=FORMAT,
        schema_version=SCHEMA_VERSION,
        created_by=f"edgeresnext {_edgeresnext_version()}",
        model=_model_section(meta),
        input=InputSection(**_tensor(sig, "input"), layout="NCHW", batch=_batch_range(sig, target)),
        preprocess=_preprocess_section(meta),
        output=OutputSection(**_tensor(sig, "output"), meaning="logits", scores=SCORES),
        labels=LABELS,
        precision=primary.precision,
        backend=BackendSection(name=primary.backend, version=backend_version),
        device=_device_section(target_device, backend.built_on(primary)),
        validation=_jsonable(validation_summary) if validation_summary is not None else None,
        artifacts=_artifact_entries(artifacts, names),
        target=(
            None
            if target is None
            else TargetSection(name=target.name, description=target.description, config=target.resolved())
        ),
        files=[],
    )


def _check_artifacts(out_dir: Path, artifacts: list[Artifact]) -> None:
    """At least one artifact, each of a registered backend."""
    if not artifacts:
        raise ConfigError(f"{out_dir}: a bundle needs at least one artifact")
    for artifact in artifacts:
        if artifact.backend not in list_backends():
            raise ConfigError(
                f"{artifact.path}: unknown backend {artifact.backend!r}; expected one of {', '.join(list_backends())}"
            )


def _labels(meta: ModelMeta) -> list[str]:
    """The lines of ``labels.txt``: one class name each, as many as the model has classes."""
    if meta.class_names and len(meta.class_names) != meta.num_classes:
        raise ConfigError(f"model metadata has {len(meta.class_names)} class names for {meta.num_classes} classes")
    class_names = meta.class_names or [f"class_{i}" for i in range(meta.num_classes)]
    for name in class_names:
        if "\n" in name or "\r" in name:
            raise ConfigError(f"class name {name!r} contains a line break; labels.txt holds one name per line")
    return class_names


def _bundle_names(artifacts: list[Artifact]) -> tuple[dict[Path, str], dict[str, Path]]:
    """Bundle-relative names of the artifacts' files (source -> name) and the files to copy (name -> source).

    Files keep their base names; a folder (an on-device build kit) keeps its own tree under the name its backend gives
    it (TensorRT: kit/, as the device command and the kit's README say, whatever the build called it).
    """
    names: dict[Path, str] = {}
    sources: dict[str, Path] = {}
    for artifact in artifacts:
        folder = Path(artifact.path) if Path(artifact.path).is_dir() else None
        named = get_backend(artifact.backend).bundle_folder(artifact)
        prefix = named if named is not None else folder.name if folder is not None else ""
        for source in _artifact_files(artifact):
            if not source.exists():
                raise ConfigError(f"{source}: file of the {artifact.backend} artifact not found")
            if source == folder:
                names[source] = prefix  # only the files the artifact lists are copied, not the folder
                continue
            name = source.name
            if folder is not None and source.is_relative_to(folder):
                name = f"{prefix}/{source.relative_to(folder).as_posix()}"
            elif source.is_dir():
                raise ConfigError(f"{source}: a folder inside the artifact's file list; list its files instead")
            if name in (MANIFEST, LABELS, SIGNATURE):
                raise ConfigError(f"{source}: the name {name!r} is reserved in a bundle")
            if name in sources and sources[name].resolve() != source.resolve():
                raise ConfigError(
                    f"{source}: two different artifact files are both named {name!r} (the other is {sources[name]})"
                )
            names[source] = name
            sources[name] = source
    return names, sources


def _fill_bundle(folder: Path, sources: dict[str, Path], class_names: list[str], manifest: Manifest) -> None:
    """The files, ``labels.txt`` and the checked ``manifest.json`` (with every file's hash) in ``folder``, synced."""
    for name, source in sources.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, folder / name)  # keeps the mode: the kit's build_engine.sh stays executable
    (folder / LABELS).write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
    manifest.files = _file_entries(folder)
    data = manifest.to_json()
    check_schema(data, manifest_schema(), "manifest")
    (folder / MANIFEST).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def bundle_from_artifacts(
    out_dir: str | os.PathLike[str],
    artifacts: Artifact | Sequence[Artifact],
    meta: ModelMeta,
    validation_summary: dict[str, Any] | None = None,
    target: Target | None = None,
    exports: dict[str, tuple[dict[str, Any], dict[str, Path]]] | None = None,
) -> Path:
    """Write a bundle folder: the artifacts' files, ``labels.txt`` and ``manifest.json``; returns ``out_dir``.

    ``exports``: what the bundle carries for a serving engine, by name (``deepstream``): the manifest's record of it
    and its files (bundle name -> source); the files are listed with their sha256 like every other.

    The first artifact is the primary one (its backend, precision and input/output describe the bundle);
    others (the Q/DQ ONNX next to a TensorRT engine, say) travel along. The folder is assembled under a
    temporary name and renamed into place, so a failed run never leaves a bundle that looks finished, and an
    existing bundle is replaced whole.
    """
    out_dir = Path(out_dir)
    artifacts = [artifacts] if not isinstance(artifacts, Sequence) else list(artifacts)
    _check_artifacts(out_dir, artifacts)
    class_names = _labels(meta)
    names, sources = _bundle_names(artifacts)
    manifest = build_manifest(artifacts, names, meta, validation_summary, target)
    records = {}
    for name, (record, files) in (exports or {}).items():
        for bundle_name, source in files.items():
            if bundle_name in sources or bundle_name in (MANIFEST, LABELS):
                raise ConfigError(f"{source}: the {name} export's {bundle_name!r} clashes with another bundle file")
            sources[bundle_name] = Path(source)
        records[name] = {**_jsonable(record), "files": sorted(files)}
    manifest.exports = Exports.from_json(records) if records else None
    with temp_folder(out_dir) as tmp:
        _fill_bundle(tmp, sources, class_names, manifest)
        replace_folder(tmp, out_dir)
    logger.info(
        "bundle %s: %s %s, %d files",
        out_dir,
        manifest.backend.name,
        manifest.precision,
        len(manifest.files),
    )
    return out_dir


def _file_entries(root: Path) -> list[FileEntry]:
    return [
        FileEntry(path=path.relative_to(root).as_posix(), sha256=sha256_file(path), bytes=path.stat().st_size)
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    ]
