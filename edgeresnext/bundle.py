"""Bundles: what a device app embeds. ``build/<target>/bundle/`` holds the compiled artifact(s), ``labels.txt``
and ``manifest.json`` (input, preprocessing, output meaning, precision, backend version, device, validation
summary, and the sha256 of every file).

The manifest's shape is ``edgeresnext/schemas/manifest.schema.json`` (JSON Schema). :func:`verify_bundle`
checks a bundle against it with the small validator below, so device runtimes need no ``jsonschema``.

This module imports only the standard library at import time: :mod:`edgeresnext.runtime` uses
:func:`verify_bundle` on devices without torch, pydantic or nncf.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from edgeresnext.atomic import sha256_file
from edgeresnext.environment import cpu_model
from edgeresnext.errors import ConfigError, EdgeResNeXtError

if TYPE_CHECKING:
    from edgeresnext.backends.base import Artifact
    from edgeresnext.config import Target
    from edgeresnext.models.checkpoints import ModelMeta

logger = logging.getLogger(__name__)

FORMAT = "edgeresnext-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
LABELS = "labels.txt"
SCHEMA_PATH = Path(__file__).parent / "schemas" / "manifest.schema.json"
# The Python package whose version is the backend's runtime version.
BACKEND_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}
DEFAULT_DEVICE = {"openvino": "CPU", "onnxruntime": "CPU", "tensorrt": "GPU"}


class BundleError(EdgeResNeXtError):
    """A bundle is missing, malformed, or does not match its manifest (tampered or incomplete)."""


# --------------------------------------------------------------------------------------------- writing


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
    """Every file the artifact needs (a folder artifact — the TensorRT on-device kit — contributes its files)."""
    files = [Path(p) for p in artifact.files] or [Path(artifact.path)]
    if Path(artifact.path) not in files:
        files.insert(0, Path(artifact.path))
    return files


def _io_signature(artifact: Artifact, meta: ModelMeta) -> dict[str, Any]:
    """Input/output names and shapes: from ``artifact.info`` if the backend recorded them, else read from the
    ONNX/IR file, else what the model's metadata implies (``input``/``logits``)."""
    size = meta.preprocess.crop or meta.preprocess.resize or meta.input_size
    sig: dict[str, Any] = {
        "input_name": "input",
        "input_shape": [-1, meta.in_channels, size, size],
        "output_name": "logits",
        "output_shape": [-1, meta.num_classes],
    }
    path = Path(artifact.path)
    try:
        if artifact.kind == "onnx":
            import onnx

            graph = onnx.load(str(path), load_external_data=False).graph
            initializers = {init.name for init in graph.initializer}
            inputs = [i for i in graph.input if i.name not in initializers]

            def dims(value_info) -> list[int]:
                return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]

            sig.update(
                input_name=inputs[0].name,
                input_shape=dims(inputs[0]),
                output_name=graph.output[0].name,
                output_shape=dims(graph.output[0]),
            )
        elif artifact.kind == "ir":
            import openvino as ov

            model = ov.Core().read_model(str(path))

            def dims(port) -> list[int]:
                return [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]

            sig.update(
                input_name=model.inputs[0].get_any_name(),
                input_shape=dims(model.inputs[0]),
                output_name=model.outputs[0].get_any_name(),
                output_shape=dims(model.outputs[0]),
            )
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
    # Engines cannot be opened here: the backend may have recorded the names (shapes come from the metadata).
    for key in ("input_name", "output_name"):
        if artifact.kind not in ("onnx", "ir") and isinstance(artifact.info.get(key), str):
            sig[key] = artifact.info[key]
    return sig


def build_manifest(
    artifacts: Sequence[Artifact],
    names: dict[Path, str],
    meta: ModelMeta,
    validation_summary: dict[str, Any] | None,
    target: Target | None,
) -> dict[str, Any]:
    """The manifest (without ``files``) for artifacts whose files are known in the bundle as ``names``."""
    primary = artifacts[0]
    sig = _io_signature(primary, meta)
    info = dict(primary.info)
    backend_version = str(
        info.get("backend_version")
        or info.get("tensorrt_version")
        or _package_version(BACKEND_PACKAGES[primary.backend])
    )
    target_device = DEFAULT_DEVICE[primary.backend]
    if target is not None and primary.backend == "tensorrt":
        target_device = target.backend_options.tensorrt.device
    target_device = str(info.get("device", target_device))
    batch = {"min": 1, "opt": 1, "max": 1}
    if target is not None:
        batch = target.input.batch.model_dump()
    if sig["input_shape"][0] > 0:  # a static batch dimension overrides the target's range
        batch = {"min": sig["input_shape"][0], "opt": sig["input_shape"][0], "max": sig["input_shape"][0]}
    pre = meta.preprocess
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "created_by": f"edgeresnext {_edgeresnext_version()}",
        "model": {
            "arch": meta.arch,
            "num_classes": meta.num_classes,
            "dataset": meta.dataset,
            "recipe": meta.recipe,
            "metrics": _jsonable(meta.metrics),
        },
        "input": {
            "name": sig["input_name"],
            "shape": [int(d) for d in sig["input_shape"]],
            "dtype": str(info.get("input_dtype", "float32")),
            "layout": "NCHW",
            "batch": batch,
        },
        "preprocess": {
            **pre.to_dict(),
            "channel_order": pre.channels,
            "resize_mode": "shorter side to `resize`, bilinear (Pillow, antialiased)",
            "crop_mode": "center",
            "scale": 1.0 / 255.0,
            "order": "convert to `channels`, resize, crop, x * scale, (x - mean) / std, HWC to CHW",
        },
        "output": {
            "name": sig["output_name"],
            "shape": [int(d) for d in sig["output_shape"]],
            "dtype": str(info.get("output_dtype", "float32")),
            "meaning": "logits",
            "scores": "softmax over the class axis; class i is line i of labels.txt",
        },
        "labels": LABELS,
        "precision": primary.precision,
        "backend": {"name": primary.backend, "version": backend_version},
        "device": {
            "target_device": target_device,
            "built_on": {
                "machine": platform.machine(),
                "system": platform.system(),
                "cpu": cpu_model(),
                **{k: info[k] for k in ("gpu_name", "gpu_sm", "tensorrt_version", "build_mode") if k in info},
            },
        },
        "validation": _jsonable(validation_summary) if validation_summary is not None else None,
        "artifacts": [
            {
                "backend": a.backend,
                "precision": a.precision,
                "kind": a.kind,
                "path": names[Path(a.path)],
                "files": [names[p] for p in _artifact_files(a)],
                "info": _jsonable(a.info),
            }
            for a in artifacts
        ],
    }
    if target is not None:
        manifest["target"] = {"name": target.name, "description": target.description, "config": target.resolved()}
    return manifest


def bundle_from_artifacts(
    out_dir: str | os.PathLike[str],
    artifacts: Artifact | Sequence[Artifact],
    meta: ModelMeta,
    validation_summary: dict[str, Any] | None = None,
    target: Target | None = None,
) -> Path:
    """Write a bundle folder: the artifacts' files, ``labels.txt`` and ``manifest.json``; returns ``out_dir``.

    The first artifact is the primary one (its backend, precision and input/output describe the bundle);
    others (the Q/DQ ONNX next to a TensorRT engine, say) travel along. The folder is assembled under a
    temporary name and renamed into place, so a failed run never leaves a bundle that looks finished, and an
    existing bundle is replaced whole.
    """
    out_dir = Path(out_dir)
    artifacts = [artifacts] if not isinstance(artifacts, Sequence) else list(artifacts)
    if not artifacts:
        raise ConfigError(f"{out_dir}: a bundle needs at least one artifact")
    for artifact in artifacts:
        if artifact.backend not in BACKEND_PACKAGES:
            raise ConfigError(
                f"{artifact.path}: unknown backend {artifact.backend!r}; expected one of "
                f"{', '.join(sorted(BACKEND_PACKAGES))}"
            )
    if meta.class_names and len(meta.class_names) != meta.num_classes:
        raise ConfigError(f"model metadata has {len(meta.class_names)} class names for {meta.num_classes} classes")
    class_names = meta.class_names or [f"class_{i}" for i in range(meta.num_classes)]
    for name in class_names:
        if "\n" in name or "\r" in name:
            raise ConfigError(f"class name {name!r} contains a line break; labels.txt holds one name per line")

    # Bundle-relative names: files keep their base names; a folder (kit) keeps its own tree under its name.
    names: dict[Path, str] = {}
    sources: dict[str, Path] = {}
    for artifact in artifacts:
        folder = Path(artifact.path) if Path(artifact.path).is_dir() else None
        for source in _artifact_files(artifact):
            if not source.exists():
                raise ConfigError(f"{source}: file of the {artifact.backend} artifact not found")
            if source == folder:
                names[source] = folder.name  # only the files the artifact lists are copied, not the folder
                continue
            name = source.name
            if folder is not None and source.is_relative_to(folder):
                name = f"{folder.name}/{source.relative_to(folder).as_posix()}"
            elif source.is_dir():
                raise ConfigError(f"{source}: a folder inside the artifact's file list; list its files instead")
            if name in (MANIFEST, LABELS):
                raise ConfigError(f"{source}: the name {name!r} is reserved in a bundle")
            if name in sources and sources[name].resolve() != source.resolve():
                raise ConfigError(
                    f"{source}: two different artifact files are both named {name!r} (the other is {sources[name]})"
                )
            names[source] = name
            sources[name] = source

    manifest = build_manifest(artifacts, names, meta, validation_summary, target)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for name, source in sources.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tmp / name)  # keeps the mode: the kit's build_engine.sh stays executable
        (tmp / LABELS).write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
        manifest["files"] = _file_entries(tmp)
        _validate(manifest, _schema(), "manifest")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info(
        "bundle %s: %s %s, %d files",
        out_dir,
        manifest["backend"]["name"],
        manifest["precision"],
        len(manifest["files"]),
    )
    return out_dir


def _file_entries(root: Path) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        entries.append(
            {"path": path.relative_to(root).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}
        )
    return entries


# --------------------------------------------------------------------------------------------- checking
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _validate(value: Any, schema: dict[str, Any], where: str) -> None:
    """The part of JSON Schema the manifest schema uses (type, enum, required, properties,
    additionalProperties: false, items, min/maxItems, minimum, pattern); raises on the first violation."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_TYPES[kind](value) for kind in kinds):
            raise BundleError(f"{where}: expected {' or '.join(kinds)}, got {json.dumps(value)[:60]}")
    if "enum" in schema and value not in schema["enum"]:
        raise BundleError(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                raise BundleError(f"{where}: missing required key {key!r}")
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            extra = sorted(set(value) - set(properties))
            if extra:
                raise BundleError(f"{where}: unknown key {extra[0]!r}; accepted: {', '.join(sorted(properties))}")
        for key, sub in properties.items():
            if key in value:
                _validate(value[key], sub, f"{where}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise BundleError(f"{where}: needs at least {schema['minItems']} items, has {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise BundleError(f"{where}: allows at most {schema['maxItems']} items, has {len(value)}")
        if "items" in schema:
            for index, item in enumerate(value):
                _validate(item, schema["items"], f"{where}[{index}]")
    if _TYPES["number"](value) and "minimum" in schema and value < schema["minimum"]:
        raise BundleError(f"{where}: {value} is below the minimum {schema['minimum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        raise BundleError(f"{where}: {value!r} does not match {schema['pattern']}")


def read_manifest(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``manifest.json`` of a bundle, parsed and checked against the schema (files are not hashed here)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: no such bundle folder")
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: not a bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: not valid JSON ({err})") from err
    except RecursionError as err:  # json recurses once per nesting level
        raise BundleError(f"{path}: nested too deeply to be a manifest") from err
    if (
        isinstance(manifest, dict)
        and isinstance(manifest.get("schema_version"), int)
        and manifest["schema_version"] > SCHEMA_VERSION
    ):
        raise BundleError(
            f"{path}: schema_version {manifest['schema_version']} was written by a newer edgeresnext; "
            f"this one reads version {SCHEMA_VERSION}"
        )
    _validate(manifest, _schema(), str(path))
    return manifest


def _safe_relative(name: str, where: str) -> PurePosixPath:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise BundleError(f"{where}: file path {name!r} must stay inside the bundle (relative, no '..')")
    return relative


def verify_bundle(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a bundle: manifest schema, every listed file present with its size and sha256, no unlisted files,
    artifacts and labels consistent. Returns the manifest; raises :class:`BundleError` naming every problem."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    where = str(bundle_dir / MANIFEST)
    problems: list[str] = []
    listed: set[str] = set()
    for entry in manifest["files"]:
        name = _safe_relative(entry["path"], where).as_posix()
        listed.add(name)
        path = bundle_dir / name
        if any(
            (bundle_dir / parent).is_symlink() for parent in (*PurePosixPath(name).parents, name) if str(parent) != "."
        ):
            problems.append(f"{name}: a symlink; bundles hold regular files only (a link can point anywhere)")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest (modified or corrupt)")
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        name = path.relative_to(bundle_dir).as_posix()
        if name != MANIFEST and name not in listed:
            problems.append(f"{name}: not listed in the manifest")
    for artifact in manifest["artifacts"]:
        for name in [artifact["path"], *artifact["files"]]:
            relative = _safe_relative(name, where).as_posix()
            if relative not in listed and not any(item.startswith(relative + "/") for item in listed):
                problems.append(f"artifact file {name}: not in the manifest's file list")
    if manifest["labels"] not in listed:
        problems.append(f"{manifest['labels']}: labels file not in the manifest's file list")
    elif not problems:
        labels = read_labels(bundle_dir, manifest)
        num_classes = manifest["model"]["num_classes"]
        if len(labels) != num_classes:
            problems.append(f"{manifest['labels']}: {len(labels)} labels for {num_classes} classes")
    if problems:
        raise BundleError(f"{bundle_dir}: bundle does not match its manifest: " + "; ".join(problems))
    return manifest


def read_labels(bundle_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> list[str]:
    text = (Path(bundle_dir) / manifest["labels"]).read_text(encoding="utf-8")
    return text.splitlines()


# --------------------------------------------------------------------------------------------- archives
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
MAX_ARCHIVE_BYTES = 4 << 30  # uncompressed; a bundle for an edge device is far smaller
MAX_ARCHIVE_FILES = 10_000
_COPY_CHUNK = 1 << 20


def _archive_entries(archive: Path) -> tuple[list[tuple[str, str, int, int]], Any]:
    """(name, kind 'file'|'dir', size, mode) of every member, and a function reading one member's stream."""
    import tarfile
    import zipfile

    entries: list[tuple[str, str, int, int]] = []
    if zipfile.is_zipfile(archive):
        handle = zipfile.ZipFile(archive)
        for info in handle.infolist():
            mode = (info.external_attr >> 16) & 0o177777
            kind = "dir" if info.is_dir() else "file"
            if mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):
                kind = "link" if (mode & 0o170000) == 0o120000 else "special"
            entries.append((info.filename, kind, info.file_size, mode & 0o777))
        return entries, (handle, lambda name: handle.open(name))
    handle = tarfile.open(archive, "r:*")
    members = {}
    for member in handle.getmembers():
        kind = (
            "file"
            if member.isreg()
            else "dir"
            if member.isdir()
            else ("link" if member.issym() or member.islnk() else "special")
        )
        entries.append((member.name, kind, member.size, member.mode & 0o777))
        members[member.name] = member
    return entries, (handle, lambda name: handle.extractfile(members[name]))


def extract_bundle(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    max_bytes: int = MAX_ARCHIVE_BYTES,
    max_files: int = MAX_ARCHIVE_FILES,
) -> dict[str, Any]:
    """Unpack a bundle archive (``.tar[.gz|.bz2|.xz]``/``.tgz``/``.zip``) into ``dest`` and verify it.

    Every member is checked before anything is written: names must stay inside ``dest`` (relative, no ``..``,
    no backslashes), only regular files and folders are accepted (no symlinks, hard links, devices), and the
    archive may hold at most ``max_files`` members and ``max_bytes`` uncompressed (also enforced while reading,
    since a zip header can lie). A single top-level folder (``tar czf b.tgz bundle/``) is stripped. The files
    land in a temporary sibling folder, :func:`verify_bundle` checks them, and only then is it renamed to
    ``dest``; on any error nothing is left. Returns the manifest.
    """
    import tarfile
    import zipfile
    import zlib

    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise BundleError(f"{archive}: no such archive file")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(f"{dest}: already exists and is not an empty folder; extract into a new folder")
    unreadable = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)
    try:
        entries, (handle, open_member) = _archive_entries(archive)
    except unreadable as err:
        raise BundleError(
            f"{archive}: not a readable tar or zip archive ({err}); accepted: {', '.join(ARCHIVE_SUFFIXES)}"
        ) from err
    with handle:
        if len(entries) > max_files:
            raise BundleError(f"{archive}: {len(entries)} members, more than the limit of {max_files}")
        total = sum(size for _name, kind, size, _mode in entries if kind == "file")
        if total > max_bytes:
            raise BundleError(f"{archive}: {total} bytes uncompressed, more than the limit of {max_bytes}")
        names: list[tuple[str, PurePosixPath, str, int]] = []
        for name, kind, _size, mode in entries:
            if kind in ("link", "special"):
                raise BundleError(
                    f"{archive}: member {name!r} is a {'link' if kind == 'link' else 'device or fifo'}"
                    "; bundle archives may hold only regular files and folders"
                )
            if "\\" in name or "\0" in name:
                raise BundleError(f"{archive}: member {name!r} has a backslash or NUL in its name; refused")
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise BundleError(
                    f"{archive}: member {name!r} would be written outside {dest} (absolute or '..'); refused"
                )
            if relative.parts and relative.parts != (".",):
                names.append((name, PurePosixPath(*[p for p in relative.parts if p != "."]), kind, mode))
        tops = {relative.parts[0] for _name, relative, _kind, _mode in names}
        strip = len(tops) == 1 and not any(r.as_posix() == MANIFEST for _n, r, _k, _m in names)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            written = 0
            for name, relative, kind, mode in names:
                parts = relative.parts[1:] if strip else relative.parts
                if not parts:
                    continue
                target = tmp.joinpath(*parts)
                if kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with open_member(name) as source, open(target, "xb") as out:
                    while block := source.read(_COPY_CHUNK):
                        written += len(block)
                        if written > max_bytes:
                            raise BundleError(f"{archive}: more than {max_bytes} bytes once uncompressed; refused")
                        out.write(block)
                os.chmod(target, (mode & 0o755) or 0o644)  # keep executables, never setuid/world-writable
            try:
                manifest = verify_bundle(tmp)
            except BundleError as err:  # name the archive, not our temporary folder
                said = str(err).replace(f"{tmp}: ", "").replace(str(tmp), str(dest))
                raise BundleError(f"{archive}: {said}") from err
            if dest.exists():
                dest.rmdir()
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        except unreadable as err:
            if isinstance(err, OSError) and not isinstance(err, (zipfile.BadZipFile, tarfile.TarError)):
                from edgeresnext.atomic import storage_error

                full = storage_error(dest, err)
                if full is not None:
                    raise full from err
            raise BundleError(f"{archive}: cannot extract ({err})") from err
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    logger.info("extracted %s into %s (%d files)", archive, dest, len(manifest["files"]))
    return manifest
