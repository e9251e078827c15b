"""The stage cache: each stage of a build has its own folder and a ``stage.json`` recording the hash of its inputs
(files, config section, package versions) and the sha256 of each output. A rerun skips a stage whose input hash
matches and whose outputs are intact; any change reruns it and names what changed. Outputs are written through
:mod:`edgeresnext.atomic` and ``stage.json`` last, so a killed build never leaves a stage that looks finished.
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
from typing import Any

from edgeresnext.atomic import sha256_file, write_json_atomic
from edgeresnext.environment import package_versions

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
LOCK_FILE = ".lock"


def inputs_hash(config: Any, files: list[Path], packages: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(str(path.name).encode())
        digest.update(sha256_file(path).encode())
    digest.update(json.dumps(packages, sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class StageResult:
    name: str
    folder: Path
    outputs: dict[str, str]
    skipped: bool
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def run_stage(
    folder: Path,
    name: str,
    config: Any,
    input_files: list[Path],
    produce: Callable[[Path], dict[str, Any]],
    upstream_changed: bool = False,
    record_path: Path | None = None,
) -> StageResult:
    """Run ``produce(folder)`` unless ``folder/stage.json`` proves the same inputs already made intact outputs.

    ``produce`` writes its files into ``folder`` (atomically) and returns an ``info`` dict; every regular
    file it leaves (besides stage.json) is recorded with its sha256.
    """
    packages = package_versions()
    key = inputs_hash(config, input_files, packages)
    record_path = record_path or folder / STAGE_FILE
    if not upstream_changed and record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError):
            record = {}
        if record.get("inputs_hash") == key and _outputs_intact(folder, record.get("outputs", {})):
            logger.info("stage %s: inputs unchanged, skipped", name)
            return StageResult(name, folder, record["outputs"], True, 0.0, record.get("info", {}))
        logger.info("stage %s: inputs changed or outputs damaged, rerunning", name)
    record_path.unlink(missing_ok=True)
    _clear_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    info = produce(folder)
    outputs = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != record_path and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }
    seconds = round(time.perf_counter() - began, 2)
    write_json_atomic(
        record_path,
        {
            "stage": name,
            "inputs_hash": key,
            "config": config,
            "packages": packages,
            "inputs": [str(p) for p in input_files],
            "outputs": outputs,
            "info": info,
            "seconds": seconds,
        },
    )
    return StageResult(name, folder, outputs, False, seconds, info)


def _outputs_intact(folder: Path, outputs: dict[str, str]) -> bool:
    return bool(outputs) and all((folder / n).is_file() and sha256_file(folder / n) == h for n, h in outputs.items())


def _clear_folder(folder: Path) -> None:
    """Remove what a previous (finished, stale or killed) run of the stage left, so outputs are only new files."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE:
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
