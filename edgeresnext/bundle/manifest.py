"""Reading and checking a bundle: ``manifest.json`` against its schema, and every file against its sha256.

The manifest's type is :class:`~edgeresnext.bundle.model.Manifest`; its JSON Schema
(``edgeresnext/schemas/manifest.schema.json``) is generated from that type. :func:`read_manifest` checks a manifest
against the schema with the small validator below (device runtimes need no ``jsonschema``) and returns the typed
manifest; :func:`verify_bundle` then checks the files. Only the standard library at import time:
:mod:`edgeresnext.runtime` uses it on devices without torch, pydantic or nncf.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgeresnext.atomic import sha256_file
from edgeresnext.bundle.model import FORMAT, SCHEMA_PATH, SCHEMA_VERSION, Manifest, schema_for
from edgeresnext.errors import BundleError
from edgeresnext.registry import backend_class, registry_key

__all__ = ["FORMAT", "SCHEMA_PATH", "SCHEMA_VERSION", "BundleError", "Manifest"]  # defined elsewhere, read here

MANIFEST = "manifest.json"
LABELS = "labels.txt"
SIGNATURE = "bundle.sig"  # a signed bundle's signature (bundle/signature.py); it cannot be listed in what it signs


def manifest_schema() -> dict[str, Any]:
    """The manifest schema, generated from :class:`~edgeresnext.bundle.model.Manifest` for the registered backends
    (their device sections composed in), with each ``"x-enum"`` filled in from the registry (the one list of
    backends): the registered backends' names (``"backends"``) and the artifact kinds they make (``"kinds"``)."""
    return json.loads(_schema_text(registry_key()))


@functools.lru_cache(maxsize=8)
def _schema_text(registered: tuple[tuple[str, str], ...]) -> str:
    names = [name for name, _ in registered]
    kinds = sorted({kind for name in names for kind in backend_class(name).kinds})
    return json.dumps(_fill_enums(schema_for(names), {"backends": names, "kinds": kinds}))


def _fill_enums(node: Any, enums: dict[str, list[str]]) -> Any:
    if isinstance(node, dict):
        if node.get("x-enum") in enums:
            node["enum"] = list(enums[node["x-enum"]])
        for value in node.values():
            _fill_enums(value, enums)
    elif isinstance(node, list):
        for value in node:
            _fill_enums(value, enums)
    return node


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def check_schema(value: Any, schema: dict[str, Any], where: str) -> None:
    """The part of JSON Schema the manifest schema uses (type, enum, required, properties,
    additionalProperties: false, items, min/maxItems, minimum, pattern, anyOf); raises on the first violation."""
    if "anyOf" in schema:  # device sections of several backends: one must hold (the first one's error is shown)
        errors = []
        for option in schema["anyOf"]:
            try:
                check_schema(value, option, where)
                break
            except BundleError as err:
                errors.append(err)
        else:
            if errors:
                raise errors[0]
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
                check_schema(value[key], sub, f"{where}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise BundleError(f"{where}: needs at least {schema['minItems']} items, has {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise BundleError(f"{where}: allows at most {schema['maxItems']} items, has {len(value)}")
        if "items" in schema:
            for index, item in enumerate(value):
                check_schema(item, schema["items"], f"{where}[{index}]")
    if _TYPES["number"](value) and "minimum" in schema and value < schema["minimum"]:
        raise BundleError(f"{where}: {value} is below the minimum {schema['minimum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        raise BundleError(f"{where}: {value!r} does not match {schema['pattern']}")


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """``manifest.json`` of a bundle, parsed, checked against the schema and typed (files are not hashed here)."""
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
    except ValueError as err:  # an integer of more digits than Python converts (4,300 by default)
        raise BundleError(f"{path}: not a manifest ({str(err).split(';')[0]})") from err
    except OSError as err:
        raise BundleError(f"{path}: cannot read the manifest ({err.strerror or err})") from err
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
    check_schema(manifest, manifest_schema(), str(path))
    typed = Manifest.from_json(manifest)
    for name in _named_paths(typed):  # even a bundle loaded unverified is never read outside its folder
        _safe_relative(name, str(path))
    return typed


def _named_paths(manifest: Manifest) -> list[str]:
    """Every path the manifest names: its files, the artifacts' paths and files, what a device record names, the
    exports' files, the labels file."""
    names = [entry.path for entry in manifest.files]
    for artifact in manifest.artifacts:
        names += [artifact.path, *artifact.files]
        names += [name for _, name, _ in (artifact.engine.sources() if artifact.engine is not None else [])]
    for files in (manifest.exports.files() if manifest.exports is not None else {}).values():
        names += files
    return [*names, manifest.labels]


def _safe_relative(name: str, where: str) -> PurePosixPath:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise BundleError(f"{where}: file path {name!r} must stay inside the bundle (relative, no '..')")
    return relative


def verify_bundle(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """Check a bundle: manifest schema, every listed file present once with its size and sha256, no unlisted files
    (nor links, FIFOs), artifacts and labels consistent. Returns the typed manifest; raises :class:`BundleError` naming
    every problem. The kit's ``seal.py`` checks the same, worded the same, as far as the standard library allows
    (tests/test_parity.py)."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    where = str(bundle_dir / MANIFEST)
    problems: list[str] = []
    listed: set[str] = set()
    for entry in manifest.files:
        name = _safe_relative(entry.path, where).as_posix()
        if name in listed:
            problems.append(f"{name}: listed twice in the manifest's files")
            continue
        listed.add(name)
        path = bundle_dir / name
        if any(
            (bundle_dir / parent).is_symlink() for parent in (*PurePosixPath(name).parents, name) if str(parent) != "."
        ):
            problems.append(f"{name}: a symlink; bundles hold regular files only (a link can point anywhere)")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry.bytes:
            problems.append(f"{name}: {path.stat().st_size} bytes, the manifest says {entry.bytes}")
        elif sha256_file(path) != entry.sha256:
            problems.append(f"{name}: sha256 differs from the manifest (modified or corrupt)")
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_symlink() or not p.is_dir()):  # links, FIFOs too
        name = path.relative_to(bundle_dir).as_posix()
        if name not in (MANIFEST, SIGNATURE) and name not in listed:
            problems.append(f"{name}: not listed in the manifest")
    for artifact in manifest.artifacts:
        for name in [artifact.path, *artifact.files]:
            relative = _safe_relative(name, where).as_posix()
            if relative not in listed and not any(item.startswith(relative + "/") for item in listed):
                problems.append(f"artifact file {name}: not in the manifest's file list")
    problems += _device_record_problems(manifest, listed, where)
    for name, files in (manifest.exports.files() if manifest.exports is not None else {}).items():
        for item in files:
            if _safe_relative(item, where).as_posix() not in listed:
                problems.append(f"exports.{name}: {item} is not in the manifest's file list")
    if manifest.labels not in listed:
        problems.append(f"{manifest.labels}: labels file not in the manifest's file list")
    if problems:
        raise BundleError(f"{bundle_dir}: bundle does not match its manifest: " + "; ".join(problems))
    bundle_inputs(bundle_dir, manifest)  # what load_bundle and predict read, checked as they check it
    return manifest


def _device_record_problems(manifest: Manifest, listed: set[str], where: str) -> list[str]:
    """What an artifact built on the device names (a TensorRT engine: its source ONNX and build record) is listed,
    and with the sha256 it was built from."""
    problems = []
    sha256 = manifest.sha256()
    for artifact in manifest.artifacts:
        sources = artifact.engine.sources() if artifact.engine is not None else []
        for what, name, _ in sources:
            if _safe_relative(name, where).as_posix() not in listed:
                problems.append(f"{artifact.path}: {what}, {name}, is not in the manifest's file list")
        for _, name, recorded in sources:
            if recorded is not None and sha256.get(name, recorded) != recorded:
                problems.append(
                    f"{artifact.path}: built from {name} with sha256 {recorded[:16]}..., but the "
                    f"bundle's file has {sha256[name][:16]}..."
                )
    return problems


@dataclass(frozen=True)
class BundleInputs:
    """What a device runtime reads from a bundle besides its artifact, checked: the class names in output order, the
    preprocessing (:class:`~edgeresnext.data.preprocess.Preprocess`), one input's (C, H, W), the batch range."""

    labels: list[str]
    preprocess: Any
    input_shape: tuple[int, int, int]
    batch_range: tuple[int, int]


def bundle_inputs(bundle_dir: str | os.PathLike[str], manifest: Manifest) -> BundleInputs:
    """The labels, preprocessing, input shape and batch range of a bundle whose manifest passed the schema, each
    checked as :func:`edgeresnext.runtime.load_bundle` and ``predict`` use it; the one function both they and
    :func:`verify_bundle` call, so ``bundle verify`` passes exactly the bundles a device app can load. Raises
    :class:`BundleError` naming the manifest key or the labels file's line."""
    from edgeresnext.data.preprocess import MAX_SIZE, Preprocess
    from edgeresnext.errors import MAX_BATCH, ConfigError

    where = f"{Path(bundle_dir) / MANIFEST}"
    fields = set(Preprocess.__dataclass_fields__)
    try:
        preprocess = Preprocess.from_dict(
            {k: v for k, v in manifest.preprocess.to_json().items() if k in fields}, f"{where}: preprocess"
        )
    except (ConfigError, TypeError, ValueError) as err:
        raise BundleError(str(err) if where in str(err) else f"{where}: preprocess: {err}") from err
    batch, channels, height, width = manifest.input.shape
    if channels != preprocess.num_channels or not 0 < height <= MAX_SIZE or not 0 < width <= MAX_SIZE:
        raise BundleError(
            f"{where}: input.shape {manifest.input.shape} does not take the preprocessing's images "
            f"({preprocess.num_channels} channel(s) for {preprocess.channels}, height and width from 1 to {MAX_SIZE})"
        )
    if preprocess.crop is not None and (height, width) != (preprocess.crop, preprocess.crop):
        raise BundleError(
            f"{where}: preprocess.crop={preprocess.crop} makes {preprocess.crop}x{preprocess.crop} images, but "
            f"input.shape takes {width}x{height}"
        )
    low, high = (batch, batch) if batch > 0 else _batch_range(manifest, where)
    if not 1 <= low <= high <= MAX_BATCH:
        raise BundleError(f"{where}: input batch range {low}..{high}; expected 1 <= min <= max <= {MAX_BATCH}")
    labels = read_labels(bundle_dir, manifest)
    if len(labels) != manifest.model.num_classes:
        raise BundleError(
            f"{Path(bundle_dir) / manifest.labels}: {len(labels)} labels for {manifest.model.num_classes} "
            "classes (one name per line, in output order)"
        )
    return BundleInputs(labels, preprocess, (channels, height, width), (low, high))


def _batch_range(manifest: Manifest, where: str) -> tuple[int, int]:
    batch = manifest.input.batch
    return (1, 1) if batch is None else (int(batch.min), int(batch.max))


# A label is one line of labels.txt: what a class name may be in a build (edgeresnext.pipeline.preflight).
LABEL_MAX = 200


def read_labels(bundle_dir: str | os.PathLike[str], manifest: Manifest) -> list[str]:
    """The class names of a bundle, one per line of its labels file, in output order. A blank line (every later name
    would shift by one), a name over :data:`LABEL_MAX` characters or one holding a control character (a terminal
    escape sequence) is a :class:`BundleError` naming the line; a line break at the end of the file is fine."""
    path = Path(bundle_dir) / manifest.labels
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: cannot read the labels file ({err})") from err
    labels = text.splitlines()
    for number, label in enumerate(labels, start=1):
        if not label.strip():
            raise BundleError(f"{path}: line {number} is blank; a labels file has one class name per line")
        if len(label) > LABEL_MAX or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in label):
            raise BundleError(
                f"{path}: line {number} is over {LABEL_MAX} characters or holds a control character (a terminal "
                "escape sequence, say); a label is one short line of text"
            )
    return labels
