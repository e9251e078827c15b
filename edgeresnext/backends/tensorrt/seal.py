"""Build a bundle's TensorRT engine on the device and record it in the bundle's manifest, all or nothing.

This file is also the kit's ``seal.py``: :func:`~edgeresnext.backends.tensorrt.kit.kit_from_onnx` copies it into
every kit unchanged, so a Jetson with JetPack (``trtexec`` and ``python3``) but without edgeresnext completes a
bundle with ``<bundle>/kit/build_engine.sh`` alone, which runs ``python3 -I -S seal.py``. Hence: the Python 3
standard library only, no edgeresnext import (edgeresnext itself runs it through
:func:`edgeresnext.backends.tensorrt.device_step.engine_into_bundle`, adding its manifest schema check and TensorRT's
Python API).

The step (:func:`engine_into_bundle`):

1. check the bundle as ``edgeresnext bundle verify`` does, with the same messages, as far as the standard library
   allows (:func:`check_bundle`; ``tests/test_parity.py`` plants the same faults for both): the manifest's structure
   (:func:`check_manifest`; not :data:`NOT_CHECKED`), every listed file has its size and sha256, nothing unlisted;
   the outputs of an earlier engine build in the kit are exempt (they are rebuilt, never carried over);
2. copy the bundle's files, less any earlier engine build's outputs, into a hidden sibling folder; the earlier
   build's timing cache is the exception: it goes into the copy, so a rebuild reuses TensorRT's tactic timings;
3. build the engine in the copy's kit (``build_engine.sh`` = trtexec, or TensorRT's Python API), with the kit's
   build plan; if that fails with the earlier timing cache (TensorRT may refuse one from another version or GPU),
   say so and build again without it;
4. refuse any file the build left that is not one of its outputs; read the build record (``model.engine.json``),
   which must name the TensorRT version and the GPU's SM;
5. write the new manifest: the engine is the primary artifact, with its build record under ``"engine"``; the kit
   stays listed, so the bundle can be rebuilt on another device;
6. check the copy again, then move the new files into the bundle's kit and rename the new manifest over the old
   one: that rename is the commit.

Any failure before the commit removes the copy: the bundle, its manifest included, is exactly as it was. (Killed
during the renames, the bundle keeps its old manifest beside new files it does not list: verify refuses it, and
running the command again rebuilds.)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.json"
# A signed bundle's signature (edgeresnext's bundle.signature: OpenSSF model-signing over every file, manifest.json
# included). It cannot be listed in the manifest it signs; this module cannot check it (standard library only).
SIGNATURE = "bundle.sig"
KIT_FILE = "kit.json"
KIT_SCRIPT = "build_engine.sh"
BUILD_LOG = "build_engine.log"
SEAL_SCRIPT = "seal.py"
DEVICE_CHECK_SCRIPT = "device_check.py"
# build_engine.sh: "0" builds in the kit without sealing (a kit on its own, or opting out); "staged" is how this
# module runs it in the staged copy; unset ("auto"): inside a bundle, hand over to seal.py.
SEAL_ENV = "EDGERESNEXT_SEAL"
_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
_SM = re.compile(r"^\d+\.\d+$")

# The manifest as this file reads it (edgeresnext.bundle.manifest: FORMAT, SCHEMA_VERSION, and the schema's required
# keys, top-level keys, precisions and patterns; tests/test_parity.py feeds both checks the same broken manifests).
FORMAT = "edgeresnext-bundle"
SCHEMA_VERSION = 1
_REQUIRED = ("format", "schema_version", "created_by", "model", "input", "preprocess", "output", "labels")
_REQUIRED += ("precision", "backend", "device", "artifacts", "files")
_KEYS = (*_REQUIRED, "target", "validation", "exports")
_PRECISIONS = ["int8", "fp16", "fp32"]
_FILE_PATH = r"^[^/\\][^\\]*$"
_SHA256 = r"^[0-9a-f]{64}$"
_ENGINE = ("tensorrt_version", "gpu_name", "gpu_sm", "build_mode", "onnx", "record")
# What check_manifest leaves to edgeresnext (`edgeresnext bundle verify`): this file has no JSON Schema validator, no
# registry of backends and no signature library.
NOT_CHECKED = (
    "the rest of the manifest's JSON Schema (the contents of its model, input, preprocess, output, device and "
    "validation sections, the names of backends and artifact kinds), the labels file's lines, and a signature"
)


class SealError(Exception):
    """The engine cannot be built into the bundle, or sealed; the bundle is unchanged."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def release(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a TensorRT version string ("10.3.0", "10.3.0.30", "10.3"), None if it is none."""
    match = _RELEASE.match(str(version))
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def engine_outputs(plan: dict) -> list[str]:
    """The files an engine build writes into the kit (engine, build record, trtexec log, timing cache, and the engine
    of each variant ONNX the plan lists: DeepStream's, with the normalization inside)."""
    engines = [str(v)[: -len(".onnx")] + ".engine" for v in plan.get("variants", []) if str(v).endswith(".onnx")]
    variants = [
        name for engine in engines for name in (engine, engine + ".json")
    ]  # TensorRT's Python API writes a record
    return [plan["engine"], plan["engine"] + ".json", BUILD_LOG, plan["timing_cache"], *variants]


def _json(value) -> str:
    return json.dumps(value)[:60]


def _typed(value, kind: str, where: str):
    """``value`` if it is of JSON type ``kind`` (object, array, string, integer), else a SealError naming ``where``."""
    python = {"object": dict, "array": list, "string": str, "integer": int}[kind]
    if not isinstance(value, python) or isinstance(value, bool):
        raise SealError(f"{where}: expected {kind}, got {_json(value)}")
    return value


def _section(value, where: str, required, accepted=None) -> dict:
    """An object with its required keys (and, given ``accepted``, no others)."""
    _typed(value, "object", where)
    missing = [key for key in required if key not in value]
    if missing:
        raise SealError(f"{where}: missing required key {missing[0]!r}")
    unknown = sorted(set(value) - set(accepted)) if accepted is not None else []
    if unknown:
        raise SealError(f"{where}: unknown key {unknown[0]!r}; accepted: {', '.join(sorted(accepted))}")
    return value


def _matching(value, pattern: str, where: str) -> None:
    if not re.search(pattern, _typed(value, "string", where)):
        raise SealError(f"{where}: {value!r} does not match {pattern}")


def _strings(value, where: str) -> list:
    items = _typed(value, "array", where)
    if not items:
        raise SealError(f"{where}: needs at least 1 items, has 0")
    for index, item in enumerate(items):
        _typed(item, "string", f"{where}[{index}]")
    return items


def _posix(name: str) -> str:
    """A manifest path as a bundle's files are named (``kit//a`` and ``kit/./a`` are ``kit/a``)."""
    return PurePosixPath(name).as_posix()


def inside(name: str, where: str) -> str:
    """``name`` if it is a path inside the bundle (relative, no ``..``), else a SealError naming it."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise SealError(f"{where}: file path {name!r} must stay inside the bundle (relative, no '..')")
    return relative.as_posix()


def _check_artifact(artifact, where: str, manifest_path: str) -> None:
    _section(artifact, where, ("backend", "precision", "kind", "path", "files"))
    for key in ("backend", "precision", "kind", "path"):
        _typed(artifact[key], "string", f"{where}.{key}")
        if key == "precision" and artifact[key] not in _PRECISIONS:
            raise SealError(f"{where}.precision: {artifact[key]!r} is not one of {_PRECISIONS}")
    for name in [artifact["path"], *_strings(artifact["files"], f"{where}.files")]:
        inside(name, manifest_path)
    if "engine" in artifact:
        engine = _section(artifact["engine"], f"{where}.engine", _ENGINE)
        onnx = _section(engine["onnx"], f"{where}.engine.onnx", ("path", "sha256"), ("path", "sha256"))
        _typed(onnx["path"], "string", f"{where}.engine.onnx.path")
        _matching(onnx["sha256"], _SHA256, f"{where}.engine.onnx.sha256")
        _typed(engine["record"], "string", f"{where}.engine.record")
        for name in (onnx["path"], engine["record"]):
            inside(name, manifest_path)


def check_manifest(manifest, where: str) -> None:
    """The manifest's structure, as far as this file checks it without edgeresnext (not :data:`NOT_CHECKED`): the
    format and version, every required key and no unknown one, the types of what this file reads and writes, each
    ``files`` entry (a path inside the bundle, its sha256 as 64 hex digits, its size a non-negative integer, nothing
    else), each artifact's backend, precision, kind, path and files (all inside the bundle) and its engine record's
    ONNX and build record. Worded as edgeresnext's schema check words the same fault (the key, then what is wrong)."""
    _section(manifest, where, _REQUIRED, _KEYS)
    if _typed(manifest["format"], "string", f"{where}.format") != FORMAT:
        raise SealError(f"{where}.format: {manifest['format']!r} is not one of {[FORMAT]}")
    version = _typed(manifest["schema_version"], "integer", f"{where}.schema_version")
    if version > SCHEMA_VERSION:
        raise SealError(
            f"{where}: schema_version {version} was written by a newer edgeresnext; this one reads version "
            f"{SCHEMA_VERSION}"
        )
    if version < 1:
        raise SealError(f"{where}.schema_version: {version} is below the minimum 1")
    for key in ("model", "input", "preprocess", "output", "device"):
        _typed(manifest[key], "object", f"{where}.{key}")
    _typed(manifest["labels"], "string", f"{where}.labels")
    if _typed(manifest["precision"], "string", f"{where}.precision") not in _PRECISIONS:
        raise SealError(f"{where}.precision: {manifest['precision']!r} is not one of {_PRECISIONS}")
    backend = _section(manifest["backend"], f"{where}.backend", ("name", "version"))
    for key in ("name", "version"):
        _typed(backend[key], "string", f"{where}.backend.{key}")
    for name, export in _typed(manifest.get("exports", {}), "object", f"{where}.exports").items():
        for item in _strings(_section(export, f"{where}.exports.{name}", ("files",))["files"], f"{where}.exports"):
            inside(item, where)
    artifacts = _typed(manifest["artifacts"], "array", f"{where}.artifacts")
    if not artifacts:
        raise SealError(f"{where}.artifacts: needs at least 1 items, has 0")
    files = _typed(manifest["files"], "array", f"{where}.files")
    if not files:
        raise SealError(f"{where}.files: needs at least 1 items, has 0")
    for index, entry in enumerate(files):
        at = f"{where}.files[{index}]"
        _section(entry, at, ("path", "sha256", "bytes"), ("path", "sha256", "bytes"))
        _matching(entry["path"], _FILE_PATH, f"{at}.path")
        _matching(entry["sha256"], _SHA256, f"{at}.sha256")
        if _typed(entry["bytes"], "integer", f"{at}.bytes") < 0:
            raise SealError(f"{at}.bytes: {entry['bytes']} is below the minimum 0")
        inside(entry["path"], where)
    for index, artifact in enumerate(artifacts):
        _check_artifact(artifact, f"{where}.artifacts[{index}]", where)


def read_manifest(bundle: Path) -> dict:
    """The bundle's manifest, parsed and its structure checked (:func:`check_manifest`)."""
    path = bundle / MANIFEST
    if not path.is_file():
        hint = (
            "; give the bundle folder (the one holding manifest.json and kit/)" if (bundle / KIT_FILE).is_file() else ""
        )
        raise SealError(f"{bundle}: not a bundle (no {MANIFEST}){hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SealError(f"{path}: not valid JSON ({err})") from err
    except (OSError, ValueError, RecursionError) as err:
        raise SealError(f"{path}: not a readable bundle manifest ({err!r})") from err
    check_manifest(manifest, str(path))
    return manifest


def _kit_folder(bundle: Path, manifest: dict) -> str:
    kits = [a for a in manifest["artifacts"] if a["backend"] == "tensorrt" and a["kind"] == "kit"]
    if not kits:
        kinds = ", ".join(f"{a.get('backend')} {a.get('kind')}" for a in manifest["artifacts"])
        raise SealError(f"{bundle}: no TensorRT build kit in this bundle (it has: {kinds}); nothing to build")
    kit = str(kits[0]["path"]).rstrip("/")
    if f"{kit}/{KIT_FILE}" not in {entry["path"] for entry in manifest["files"]}:
        raise SealError(f"{bundle}: the kit's {kit}/{KIT_FILE} is not in the manifest's file list")
    return kit


def read_plan(bundle: Path, kit: str) -> dict:
    """The kit's build plan (``kit.json``), its file names checked."""
    try:
        plan = json.loads((bundle / kit / KIT_FILE).read_text(encoding="utf-8"))["plan"]
        for key in ("engine", "onnx", "timing_cache", "build_mode", "precision"):
            if not isinstance(plan[key], str) or "/" in plan[key] or "\\" in plan[key] or plan[key] in ("", ".", ".."):
                raise ValueError(f"plan {key}={plan[key]!r}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SealError(f"{bundle / kit / KIT_FILE}: not a readable kit file ({err!r})") from err
    return plan


def check_bundle(bundle: Path) -> tuple[dict, str, dict, set[str]]:
    """What this file checks of a bundle before it builds: :func:`read_manifest`, then :func:`check_files` with an
    earlier engine build's outputs tolerated (before the kit's plan is trusted: a changed ``kit.json`` is named as a
    changed file). Returns ``(manifest, kit folder, plan, the earlier build's outputs)``."""
    manifest = read_manifest(bundle)
    kit = _kit_folder(bundle, manifest)
    try:
        plan = read_plan(bundle, kit)
    except SealError:
        plan = None  # check_files names the changed kit.json; read_plan below says what is wrong with it otherwise
    previous = _previous_outputs(manifest, kit, plan)
    check_files(bundle, manifest, tolerated=previous)
    return manifest, kit, plan if plan is not None else read_plan(bundle, kit), previous


def check_files(bundle: Path, manifest: dict, tolerated: set[str] = frozenset()) -> None:
    """Every listed file present once with its size and sha256, no links, no unlisted file, and every file an artifact,
    an engine record, an export or the labels name listed; ``tolerated`` files (an earlier engine build's outputs,
    which the build replaces) may be missing, changed or unlisted. Worded as ``edgeresnext bundle verify`` words it."""
    problems = []
    listed = set()
    for entry in manifest["files"]:
        name = _posix(entry["path"])
        if name in listed:
            problems.append(f"{name}: listed twice in the manifest's files")
            continue
        listed.add(name)
        path = bundle / name
        if name in tolerated and (path.is_file() or not path.exists()) and not path.is_symlink():
            continue
        problem = _file_problem(bundle, name, entry)
        if problem is not None:
            problems.append(f"{name}: {problem}")
    for path in sorted(bundle.rglob("*")):
        name = path.relative_to(bundle).as_posix()
        if path.is_symlink() or not path.is_dir():
            if name not in (MANIFEST, SIGNATURE) and name not in listed and name not in tolerated:
                problems.append(f"{name}: not listed in the manifest")
    problems += _unlisted_references(manifest, listed)
    if problems:
        raise SealError(f"{bundle}: bundle does not match its manifest: " + "; ".join(problems))


def _file_problem(bundle: Path, name: str, entry: dict) -> str | None:
    """What is wrong with the listed file ``name`` (None: nothing), in ``bundle verify``'s words."""
    path = bundle / name
    if any((bundle / p).is_symlink() for p in (*PurePosixPath(name).parents, PurePosixPath(name)) if p.parts):
        return "a symlink; bundles hold regular files only (a link can point anywhere)"
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"{size} bytes, the manifest says {entry['bytes']}"
    return None if sha256_file(path) == entry["sha256"] else "sha256 differs from the manifest (modified or corrupt)"


def _unlisted_references(manifest: dict, listed: set[str]) -> list[str]:
    """Files the manifest names (artifacts, engine records, exports, labels) that its file list lacks, and an engine
    record whose ONNX is not the listed one; in ``bundle verify``'s order and words."""

    def unlisted(name: str, folder: bool = False) -> bool:  # an artifact may name a folder of listed files
        name = _posix(name)
        return name not in listed and not (folder and any(item.startswith(name + "/") for item in listed))

    artifacts = manifest["artifacts"]
    said = "is not in the manifest's file list"
    problems = [
        f"artifact file {name}: not in the manifest's file list"
        for artifact in artifacts
        for name in [artifact["path"], *artifact["files"]]
        if unlisted(name, folder=True)
    ]
    sha256 = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    for path, engine in ((a["path"], a["engine"]) for a in artifacts if "engine" in a):
        onnx = engine["onnx"]
        made = (("the ONNX it is built from", onnx["path"]), ("its build record", engine["record"]))
        problems += [f"{path}: {what}, {name}, {said}" for what, name in made if unlisted(name)]
        if sha256.get(onnx["path"], onnx["sha256"]) != onnx["sha256"]:
            recorded, has = onnx["sha256"][:16], sha256[onnx["path"]][:16]
            problems.append(
                f"{path}: built from {onnx['path']} with sha256 {recorded}..., but the bundle's file has {has}..."
            )
    exports = (manifest.get("exports") or {}).items()
    problems += [
        f"exports.{name}: {item} {said}" for name, export in exports for item in export["files"] if unlisted(item)
    ]
    if manifest["labels"] not in listed:
        problems.append(f"{manifest['labels']}: labels file not in the manifest's file list")
    return problems


def _previous_outputs(manifest: dict, kit: str, plan: dict | None) -> set[str]:
    """Files of an earlier engine build in the kit (listed or not): never copied, the build makes them anew. Without
    a plan (an unreadable kit.json), those of the manifest's engines in the kit."""
    if plan is None:
        engines = [a for a in manifest["artifacts"] if a["backend"] == "tensorrt" and a["kind"] == "engine"]
        return {name for a in engines if a["path"].startswith(f"{kit}/") for name in a["files"]}
    engine = f"{kit}/{plan['engine']}"
    names = {f"{kit}/{name}" for name in engine_outputs(plan)} | {f"{kit}/{plan['engine']}.json.tmp"}
    for artifact in manifest["artifacts"]:
        if artifact["backend"] == "tensorrt" and artifact["kind"] == "engine" and artifact["path"] == engine:
            names.update(artifact["files"])
    return names


def trtexec_build(trtexec: str | None = None, extra_args: tuple[str, ...] = ()):
    """A build step running the kit's build_engine.sh (trtexec) in the kit it is given; extra trtexec flags follow."""

    def build(kit_dir: Path, plan: dict) -> None:
        env = dict(os.environ)
        env[SEAL_ENV] = "staged"
        if trtexec:
            env["TRTEXEC"] = str(trtexec)
        sys.stdout.flush()
        done = subprocess.run(["bash", str(kit_dir / KIT_SCRIPT), *extra_args], env=env, check=False)
        if done.returncode != 0:
            raise SealError(f"{KIT_SCRIPT} failed (exit {done.returncode}; its output is above)")

    return build


def _load_kit_module(path: Path, name: str):
    """A module of the kit, loaded by path (``python3 -I`` puts no script folder on sys.path); no bytecode is written,
    so the staged bundle gains no file."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SealError(f"{path.name}: cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    writing, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writing
    return module


def kit_device_check(trtexec: str | None = None):
    """A check step running the kit's own ``device_check.py`` on the engine just built (None: the kit has none)."""

    def check(kit_dir: Path, plan: dict, record: dict) -> dict | None:
        script = kit_dir / DEVICE_CHECK_SCRIPT
        if not script.is_file():
            return None
        module = _load_kit_module(script, "edgeresnext_kit_device_check")
        writing, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        try:
            return module.run_check(kit_dir, kit_dir / plan["engine"], record, trtexec)
        finally:
            sys.dont_write_bytecode = writing

    return check


def read_record(kit_dir: Path, kit: str, plan: dict) -> dict:
    """The build record the build wrote beside the engine, checked: it must say what the engine runs on."""
    record_path = kit_dir / f"{plan['engine']}.json"
    if not (kit_dir / plan["engine"]).is_file():
        raise SealError(f"the build wrote no {kit}/{plan['engine']}")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise SealError(f"{kit}/{record_path.name}: no readable build record ({err})") from err
    version, sm = str(record.get("tensorrt_version", "")), str(record.get("gpu_sm", ""))
    missing = [
        what
        for what, ok in (("the TensorRT version", release(version) is not None), ("the GPU's SM", bool(_SM.match(sm))))
        if not ok
    ]
    if missing:
        raise SealError(
            f"{kit}/{record_path.name} does not say {' or '.join(missing)} (tensorrt_version={version!r}, "
            f"gpu_sm={sm!r}; trtexec prints them as 'TensorRT version:' and 'Compute Capability:'); an engine "
            "whose TensorRT version and SM are unknown cannot be checked before it is loaded, so it is not sealed"
        )
    if record.get("build_mode", plan["build_mode"]) != plan["build_mode"]:
        raise SealError(
            f"{kit}/{record_path.name}: build mode {record.get('build_mode')!r}, the kit's plan says "
            f"{plan['build_mode']!r}"
        )
    if record.get("onnx", plan["onnx"]) != plan["onnx"]:
        said = f"built from {record.get('onnx')!r}, the kit's plan says {plan['onnx']!r}"
        raise SealError(f"{kit}/{record_path.name}: {said}")
    return record


def sealed_manifest(
    manifest: dict, stage: Path, kit: str, plan: dict, record: dict, sealed_by: str, device_check: dict | None = None
) -> dict:
    """The manifest with the staged build's engine as the primary artifact (the kit stays, listed), and the device
    check's result in its engine record."""
    new = copy.deepcopy(manifest)
    previous = _previous_outputs(manifest, kit, plan)
    engine = f"{kit}/{plan['engine']}"
    onnx = f"{kit}/{plan['onnx']}"
    built = [f"{kit}/{name}" for name in engine_outputs(plan) if (stage / kit / name).is_file()]
    entries = [entry for entry in new["files"] if entry["path"] not in previous]
    for name in built:
        path = stage / name
        entries.append({"path": name, "sha256": sha256_file(path), "bytes": path.stat().st_size})
    new["files"] = sorted(entries, key=lambda entry: entry["path"])
    onnx_sha = next((entry["sha256"] for entry in entries if entry["path"] == onnx), None)
    if onnx_sha is None:
        raise SealError(f"{onnx}: the ONNX the engine is built from is not in the manifest's file list")
    section = {
        "tensorrt_version": str(record["tensorrt_version"]),
        "gpu_name": str(record.get("gpu_name") or "unknown"),
        "gpu_sm": str(record["gpu_sm"]),
        "build_mode": plan["build_mode"],
        "onnx": {"path": onnx, "sha256": onnx_sha},
        "record": f"{engine}.json",
        "built_with": str(record.get("built_with") or "unknown"),
        "sealed_by": sealed_by,
    }
    if record.get("built_at"):
        section["built_at"] = str(record["built_at"])
    if record.get("dla_core") is not None:
        section["dla_core"] = record["dla_core"]
    if device_check is not None:
        section["device_check"] = device_check
    artifact = {
        "backend": "tensorrt",
        "precision": plan["precision"],
        "kind": "engine",
        "path": engine,
        "files": built,
        "info": record,
        "engine": section,
    }
    earlier = [
        a for a in new["artifacts"] if a["backend"] == "tensorrt" and a["kind"] == "engine" and a["path"] == engine
    ]
    others = [a for a in new["artifacts"] if not any(a is e for e in earlier)]
    new["artifacts"] = [artifact, *others]
    new["backend"] = {**new["backend"], "name": "tensorrt", "version": section["tensorrt_version"]}
    new["precision"] = plan["precision"]
    return new


def _copy_bundle(bundle: Path, stage: Path, manifest: dict, skip: set[str]) -> None:
    stage.mkdir()
    os.chmod(stage, bundle.stat().st_mode & 0o7777)
    for name in [MANIFEST, *(entry["path"] for entry in manifest["files"])]:
        if name in skip:
            continue
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bundle / name, stage / name)  # keeps build_engine.sh executable


def _carry_timing_cache(bundle: Path, stage: Path, kit: str, plan: dict) -> str | None:
    """Put the earlier build's timing cache into the staged kit, so a rebuild reuses TensorRT's tactic timings
    (the cache is rewritten by the build and sealed anew). Returns its name, or None when there is none."""
    name = f"{kit}/{plan['timing_cache']}"
    source = bundle / name
    if source.is_symlink() or not source.is_file():
        return None
    shutil.copy2(source, stage / name)
    return name


def _clear_outputs(kit_dir: Path, plan: dict) -> None:
    for name in [*engine_outputs(plan), plan["engine"] + ".json.tmp"]:
        path = kit_dir / name
        if path.is_file() or path.is_symlink():
            path.unlink()


def _write_manifest(stage: Path, manifest: dict) -> None:
    tmp = stage / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, stage / MANIFEST)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # not every system opens folders
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _commit(bundle: Path, stage: Path, kit: str, built: list[str], previous: set[str]) -> None:
    """Move the staged build's files into the bundle's kit, then replace the manifest: that rename is the commit.

    The bundle folder itself stays (a shell or an app inside it keeps a valid folder). Interrupted before the
    manifest's rename, the bundle holds the old manifest and new files it does not list: verify refuses it and the
    device command, run again, rebuilds (earlier outputs are never trusted)."""
    for name in built:
        os.replace(stage / name, bundle / name)
    _fsync_dir(bundle / kit)
    if (stage / SIGNATURE).is_file():  # signed in the stage (edgeresnext, given a key on the device)
        os.replace(stage / SIGNATURE, bundle / SIGNATURE)
    os.replace(stage / MANIFEST, bundle / MANIFEST)
    _fsync_dir(bundle)
    for name in sorted(previous - set(built)):  # an earlier build's file this one did not make (trtexec's log)
        path = bundle / name
        if path.is_file() or path.is_symlink():
            path.unlink()


def engine_into_bundle(bundle, build, sealed_by: str = SEAL_SCRIPT, check=None, device_check=None) -> dict:
    """Build the engine of ``bundle``'s TensorRT kit with ``build(kit_dir, plan)`` and seal it (module docstring).

    ``device_check(kit_dir, plan, record)`` runs the engine on the bundle's check set (default: the kit's
    ``device_check.py`` via :func:`kit_device_check`); its result is sealed into the engine record, whatever its
    status (a failed check is recorded, not hidden: device apps refuse it). ``check(folder)`` is an extra check of
    the sealed copy before it replaces the bundle (edgeresnext passes its manifest schema check). Returns the new
    manifest; raises :class:`SealError` with the bundle unchanged.
    """
    device_check = device_check if device_check is not None else kit_device_check()
    bundle = Path(bundle).resolve()
    manifest, kit, plan, previous = check_bundle(bundle)
    stage = bundle.with_name(f".{bundle.name}.tmp-{os.getpid()}")
    if stage.exists():
        shutil.rmtree(stage)
    try:
        _copy_bundle(bundle, stage, manifest, skip=previous)
        cache = _carry_timing_cache(bundle, stage, kit, plan)
        try:
            build(stage / kit, plan)
        except SealError as err:
            if cache is None:
                raise
            # A cache from another TensorRT version or GPU: TensorRT may refuse it. Never let it block the build.
            print(
                f"seal.py: the build failed with the earlier build's timing cache {cache} ({err}); building again "
                "without it",
                file=sys.stderr,
            )
            _clear_outputs(stage / kit, plan)
            build(stage / kit, plan)
        outputs = {f"{kit}/{name}" for name in engine_outputs(plan)}
        listed = {entry["path"] for entry in manifest["files"]} - previous
        strays = sorted(
            path.relative_to(stage).as_posix()
            for path in stage.rglob("*")
            if (path.is_symlink() or not path.is_dir())
            and path.relative_to(stage).as_posix() not in listed | outputs | {MANIFEST}
        )
        if strays:
            raise SealError(
                f"the engine build left files it is not known to make: {', '.join(strays)}; only "
                f"{', '.join(sorted(outputs))} are sealed"
            )
        record = read_record(stage / kit, kit, plan)
        checked = device_check(stage / kit, plan, record)
        new = sealed_manifest(manifest, stage, kit, plan, record, sealed_by, checked)
        _write_manifest(stage, new)
        check_manifest(new, str(stage / MANIFEST))
        check_files(stage, new)
        if check is not None:
            check(stage)
        _fsync_tree(stage)
        _commit(bundle, stage, kit, new["artifacts"][0]["files"], previous)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return new


def check_status(manifest: dict) -> str:
    """The primary engine's device check: checked, failed or unchecked (none recorded)."""
    check = manifest["artifacts"][0].get("engine", {}).get("device_check") or {}
    return str(check.get("status") or "unchecked")


# Exit codes as edgeresnext's commands use them (edgeresnext.errors.EXIT_*; this file imports nothing of edgeresnext).
EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_UNPROVEN = 0, 1, 2, 3


def check_exit_code(manifest: dict) -> int:
    """The device step's exit code for the sealed engine: 1 when its check failed; 3 when it passed NOT PROVEN (the
    check set cannot prove the gate) or did not run at all (unchecked); 0 when the gate is proven."""
    status = check_status(manifest)
    if status == "failed":
        return EXIT_GATE_FAILED
    if status != "checked":
        return EXIT_UNPROVEN
    gate = manifest["artifacts"][0]["engine"]["device_check"].get("gate") or {}
    return EXIT_UNPROVEN if gate.get("provable") is False else EXIT_OK


def unproven_check_message(manifest: dict) -> str:
    """Why the device step exits 3: the engine is sealed, but its device gate is not proven."""
    check = manifest["artifacts"][0].get("engine", {}).get("device_check") or {}
    said = check.get("reason") or (check.get("gate") or {}).get("message") or "no device check recorded"
    return (
        f"the device check is {'NOT PROVEN' if check.get('status') == 'checked' else 'UNCHECKED'}: {said}; the engine "
        "is sealed (exit code 3: built, but its gate is not proven; a script that accepts it adds `|| [ $? -eq 3 ]`)"
    )


def failed_check_message(manifest: dict) -> str:
    check = manifest["artifacts"][0]["engine"]["device_check"]
    return (
        f"the device check FAILED: {check['gate']['message']}; the engine is sealed as failed (load_bundle and the C++ "
        "samples refuse it); compare the build's Q/DQ scales and the engine's precision, then rebuild"
    )


def summary_lines(bundle, manifest: dict, describe_check=None) -> list[str]:
    """What the device command prints once the engine is sealed (``describe_check``: the device check's
    ``summary_lines``; default: the kit's ``device_check.py`` this module ran)."""
    artifact = manifest["artifacts"][0]
    engine = artifact["engine"]
    check = engine.get("device_check")
    check_lines = []
    describe_check = describe_check or getattr(sys.modules.get("edgeresnext_kit_device_check"), "summary_lines", None)
    if check is not None:
        if describe_check is not None:
            check_lines = describe_check(check)
        else:
            check_lines = [f"device check: {check['status'].upper()}"]
    return [
        *check_lines,
        f"engine: {Path(bundle) / artifact['path']}  ({engine['build_mode'].replace('_', ' ')}, TensorRT "
        f"{engine['tensorrt_version']}, {engine['gpu_name']} SM {engine['gpu_sm']}, built with {engine['built_with']})",
        f"from: {engine['onnx']['path']}  (sha256 {engine['onnx']['sha256'][:16]}...)",
        f"OK {bundle}: sealed, {len(manifest['files'])} files, sha256 verified; the engine is the primary artifact, "
        "the kit stays listed for rebuilding on another device",
    ]


def unchecked_signature_note(bundle: Path) -> str:
    """What this module says of a signed bundle: it cannot check the signature, and what it did check."""
    return (
        f"seal.py: NOT CHECKED: {bundle / SIGNATURE}: this bundle is signed, but seal.py (Python's standard library "
        "only) cannot check signatures: it checked each file's sha256 against manifest.json, which catches accidents "
        "and incomplete copies, not someone who edits a file and its hash; check the signature where edgeresnext is "
        f"installed (`edgeresnext bundle verify {bundle} --verify-key KEY.pub`). The engine sealed now is not covered "
        "by that signature"
    )


def unchecked_structure_note() -> str:
    """What this module says after sealing: what it checked of the bundle, and what it left to edgeresnext."""
    return (
        "seal.py: checked manifest.json's structure (required keys and types, the file list, paths inside the "
        f"bundle, 64-digit sha256s, non-negative sizes, every file an artifact names listed) and every file; NOT "
        f"CHECKED: {NOT_CHECKED} (`edgeresnext bundle verify` checks them where edgeresnext is installed)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seal.py",
        description="Build this kit's TensorRT engine with trtexec and record it in the bundle's manifest "
        "(what build_engine.sh runs inside a bundle; Python 3 standard library only).",
    )
    here = Path(__file__).resolve().parent
    parser.add_argument("--bundle", default=str(here.parent), help="the bundle folder (default: the kit's parent)")
    parser.add_argument("--trtexec", default=None, help="trtexec to run (default: $TRTEXEC, PATH, JetPack's)")
    parser.add_argument("trtexec_args", nargs="*", help="extra trtexec flags (after --)")
    args = parser.parse_args(argv)
    bundle = Path(args.bundle).resolve()
    if (bundle / SIGNATURE).is_file():
        print(unchecked_signature_note(bundle), file=sys.stderr)
    try:
        manifest = engine_into_bundle(
            bundle,
            trtexec_build(args.trtexec, tuple(args.trtexec_args)),
            device_check=kit_device_check(args.trtexec),
        )
    except SealError as err:
        print(f"seal.py: error: {err}; the bundle is unchanged", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(unchecked_structure_note())
    for line in summary_lines(bundle, manifest):
        print(line)
    code = check_exit_code(manifest)
    if code == EXIT_GATE_FAILED:
        print(f"seal.py: error: {failed_check_message(manifest)}", file=sys.stderr)
    elif code == EXIT_UNPROVEN:
        print(f"seal.py: {unproven_check_message(manifest)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
