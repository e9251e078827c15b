"""The stage cache: each stage of a build has its own folder and a ``stage.json`` recording the hash of its inputs
(files, config section, package versions), each of those inputs (every file's sha256, the section, the versions)
and the sha256 of each output. A rerun skips a stage whose input hash matches and whose outputs are intact; any
change reruns it and names what changed (``quant.subset_size 300 -> 200``, ``output model.qdq.onnx damaged``).
Outputs are written through :mod:`edgeresnext.atomic` and ``stage.json`` last, so a killed build never leaves a
stage that looks finished.
Two builds of one target take turns through :class:`BuildLock`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgeresnext.atomic import sha256_file, write_json_atomic
from edgeresnext.environment import package_versions
from edgeresnext.errors import ConfigError

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
LOCK_FILE = ".lock"


def inputs_hash(config: Any, files: list[Path], packages: dict[str, str]) -> str:
    return _hash_inputs(config, [(path, sha256_file(path)) for path in files], packages)


def _hash_inputs(config: Any, file_digests: list[tuple[Path, str]], packages: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for path, file_digest in file_digests:
        digest.update(str(path.name).encode())
        digest.update(file_digest.encode())
    digest.update(json.dumps(packages, sort_keys=True).encode())
    return digest.hexdigest()


class StageInfo(Protocol):
    """A stage's typed record: ``to_dict`` is its JSON form in stage.json, ``from_dict`` reads it back."""

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any: ...


@dataclass
class StageResult:
    name: str
    folder: Path
    outputs: dict[str, str]
    skipped: bool
    seconds: float
    # What the stage recorded about itself: its typed record (:mod:`edgeresnext.pipeline.stage_info`); the plain
    # mapping for a stage run without a record type.
    info: Any = field(default_factory=dict)
    # Why a stage that had run before ran again (``quant.subset_size 300 -> 200``); None when skipped or new.
    reason: str | None = None


# How many changes a rerun message names before it counts the rest.
CHANGES_NAMED = 3


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"quant": {"subset_size": 300}}`` -> ``{"quant.subset_size": 300}`` (lists stay values)."""
    if not isinstance(config, dict):
        return {prefix or "config": config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _display_path(path: str) -> str:
    """A path as the user wrote it or relative to the working directory when under it (calib_data/...)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError):
        return path


def input_changes(record: dict[str, Any], config: Any, files: dict[str, str], packages: dict[str, str]) -> list[str]:
    """What differs between a stage's recorded inputs and the current ones, in words, config keys first:
    ``quant.subset_size 300 -> 200``, ``openvino 2026.4.1 -> 2026.5.0``, ``calib_data/03_dress/00012.png changed``.
    A file whose name and content are recorded under another folder is unchanged (the hash reads names only)."""
    changes: list[str] = []
    old_config = _flatten(record.get("config"))
    new_config = _flatten(json.loads(json.dumps(config, default=str)))
    for key in sorted(old_config.keys() | new_config.keys()):
        if old_config.get(key, ...) != new_config.get(key, ...):
            old = _shown(old_config[key]) if key in old_config else "(unset)"
            new = _shown(new_config[key]) if key in new_config else "(unset)"
            changes.append(f"{key} {old} -> {new}")
    old_packages = record.get("packages") or {}
    for name in sorted(old_packages.keys() | packages.keys()):
        if old_packages.get(name) != packages.get(name):
            changes.append(f"{name} {old_packages.get(name, '(none)')} -> {packages.get(name, '(none)')}")
    old_files = dict(zip(record.get("inputs") or [], record.get("input_sha256") or [], strict=False))
    old_content = {(Path(p).name, h) for p, h in old_files.items()}
    new_content = {(Path(p).name, h) for p, h in files.items()}
    for path, digest in files.items():
        if (Path(path).name, digest) in old_content:
            continue
        changes.append(f"{_display_path(path)} {'changed' if path in old_files else 'added'}")
    for path, digest in old_files.items():
        if path not in files and (Path(path).name, digest) not in new_content:
            changes.append(f"{_display_path(path)} removed")
    return changes


def _summarize(changes: list[str]) -> str:
    named = ", ".join(changes[:CHANGES_NAMED])
    rest = len(changes) - CHANGES_NAMED
    if rest <= 0:
        return named
    return f"{named} and {rest} more change{'s' if rest > 1 else ''}"


def _damaged_outputs(folder: Path, outputs: dict[str, str]) -> list[str]:
    damaged = []
    for name, digest in outputs.items():
        path = folder / name
        if not path.is_file():
            damaged.append(f"output {name} missing")
        elif sha256_file(path) != digest:
            damaged.append(f"output {name} damaged")
    return damaged


def rerun_reason(
    record: dict[str, Any] | None,
    key: str,
    folder: Path,
    config: Any,
    files: dict[str, str],
    packages: dict[str, str],
) -> str | None:
    """None when ``record`` (a stage.json) proves the same inputs made intact outputs; else why the stage reruns."""
    if record is None:
        return "stage.json unreadable"
    if "input_sha256" not in record:
        # Written before stage.json recorded each input: the stage cannot say what changed, so it is redone.
        return "stage.json from an older edgeresnext has no per-input record: treated as changed"
    if record.get("inputs_hash") != key:
        return _summarize(input_changes(record, config, files, packages)) or "inputs changed"
    outputs = record.get("outputs") or {}
    if not outputs:
        return "no outputs recorded"
    damaged = _damaged_outputs(folder, outputs)
    return _summarize(damaged) if damaged else None


def run_stage(
    folder: Path,
    name: str,
    config: Any,
    input_files: list[Path],
    produce: Callable[[Path], Any],
    upstream_changed: bool = False,
    record_path: Path | None = None,
    kept_on_failure: tuple[str, ...] = (),
    info_type: type[StageInfo] | None = None,
) -> StageResult:
    """Run ``produce(folder)`` unless ``folder/stage.json`` proves the same inputs already made intact outputs.

    ``produce`` writes its files into ``folder`` (atomically) and returns the stage's ``info``, an ``info_type``
    record (stage.json holds its ``to_dict``; a skipped stage reads it back with ``from_dict``; without one, a dict).
    Every regular file it leaves (besides stage.json) is recorded with its sha256, and each input (the config
    section, every input file's sha256, package versions), so a rerun names what changed (:attr:`StageResult.reason`).
    A stage that fails keeps nothing it wrote but the files ``kept_on_failure`` names (a report of why it failed)."""
    packages = package_versions()
    file_digests = [(Path(path), sha256_file(path)) for path in input_files]
    files = {str(path): digest for path, digest in file_digests}
    key = _hash_inputs(config, file_digests, packages)
    record_path = record_path or folder / STAGE_FILE
    if folder.is_symlink():  # a rerun empties the stage folder: never through a link to somewhere else
        raise ConfigError(f"{folder}: a symbolic link; a stage folder must be a real folder (remove the link)")
    reason = None
    if upstream_changed:
        reason = "an earlier stage changed"
    elif record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError):
            record = None
        reason = rerun_reason(record if isinstance(record, dict) else None, key, folder, config, files, packages)
        info, reason = _recorded_info(record.get("info", {}), info_type) if reason is None else (None, reason)
        if reason is None:
            logger.info("stage %s: inputs unchanged, skipped", name)
            return StageResult(name, folder, record["outputs"], True, 0.0, info)
        logger.info("stage %s: rerunning: %s", name, reason)
    record_path.unlink(missing_ok=True)
    _clear_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    try:
        info = produce(folder)
        outputs = {
            p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*"))
            if p.is_file()
            and p != record_path
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        }
        seconds = round(time.perf_counter() - began, 2)
        record = {
            "stage": name,
            "inputs_hash": key,
            "config": config,
            "packages": packages,
            "inputs": [str(path) for path, _digest in file_digests],
            "input_sha256": [digest for _path, digest in file_digests],
            "outputs": outputs,
            "info": info.to_dict() if info_type is not None else info,
            "seconds": seconds,
        }
        write_json_atomic(record_path, record)
    except BaseException:
        # A stage that fails (a full disk, a bad input, Ctrl-C) keeps none of what it wrote: a finished-looking
        # model.qdq.onnx without its stage.json would be read as an output by hand, and the next run redoes it anyway.
        _discard(folder, kept_on_failure)
        raise
    return StageResult(name, folder, outputs, False, seconds, info, reason)


def _recorded_info(recorded: Any, info_type: type[StageInfo] | None) -> tuple[Any, str | None]:
    """(the stage's info as stage.json recorded it, None), or (None, why the stage reruns) when the record cannot be
    read as ``info_type`` (a stage.json whose info lacks a field this version reads)."""
    if info_type is None:
        return recorded, None
    try:
        return info_type.from_dict(recorded), None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        return None, f"stage.json's info is not a {info_type.__name__} ({type(err).__name__}: {err}): rerun"


def _discard(folder: Path, kept: tuple[str, ...]) -> None:
    try:
        _clear_folder(folder, kept)
    except OSError as err:  # the stage's own error says what went wrong; this one would hide it
        logger.warning("could not remove the outputs of a failed stage in %s: %s", folder, err)


def _clear_folder(folder: Path, kept: tuple[str, ...] = ()) -> None:
    """Remove what a previous (finished, stale or killed) run of the stage left, so outputs are only new files (the
    lock and the names in ``kept`` stay)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE or entry.name in kept:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class BuildLock:
    """An exclusive lock on ``build/<target>/.lock``: a second build of the same target waits for the first."""

    def __init__(self, root: Path, on_wait: Callable[[str], None] | None = None) -> None:
        self.path = root / LOCK_FILE
        self.on_wait = on_wait
        self.handle = None

    def __enter__(self) -> BuildLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")  # held for the whole build
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"another build of {self.path.parent.name} is running; waiting for {self.path}"
            logger.warning(message)
            if self.on_wait:
                self.on_wait(message)
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
