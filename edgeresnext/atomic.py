"""Atomic file writes: every artifact is written under a temporary name in its own folder, flushed to
disk, then renamed, so an interrupted run never leaves a file that looks finished.

(A module of its own rather than part of pipeline.py: checkpoints, calibration sets, reports and bundles
all write through it, and none of them should import the pipeline.)
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeresnext.errors import EdgeResNeXtError, StorageError

logger = logging.getLogger(__name__)

TMP_MARK = ".tmp-"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (stage records, bundle manifests and engine metadata use it)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# replace_folder moves the previous folder (a bundle, a Triton repository) aside under this mark during the swap.
OLD_MARK = ".old-"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# Writers that wrap the OSError in their own exception (torch's stream writer, OpenVINO's serializer, protobuf)
# lose errno; a write that failed on a disk with less than this left is taken as "disk full".
LOW_SPACE_BYTES = 1 << 20


def temp_name(path: Path) -> Path:
    """The temporary sibling of ``path`` (hidden, marked, unique per process)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def free_bytes(folder: str | os.PathLike[str]) -> int | None:
    """Bytes the current user may still write on the filesystem holding ``folder`` (None if unknown)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


# What writers that drop errno still say: Rust's io::Error (safetensors: "No space left on device (os error 28)"),
# C's strerror text inside C++ exceptions, and the quota variant.
_DISK_FULL_WORDS = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")


def _says_disk_full(err: BaseException) -> bool:
    """Whether ``err`` or an exception it was raised from is a full disk (by errno, else by its text)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL:
            return True
        if any(words in str(current).lower() for words in _DISK_FULL_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


def storage_error(path: str | os.PathLike[str], err: BaseException, needed: int | None = None) -> StorageError | None:
    """Our error for a failed write of ``path`` when the disk (or quota) is full, else None.

    Full means: ENOSPC/EDQUOT (errno, or its text in a writer's own exception, e.g. safetensors'), or less free
    space left than ``needed`` bytes (the size of what was being written, when the caller knows it) or than
    :data:`LOW_SPACE_BYTES`. The last two catch writers that lose errno and clean up their partial file first
    (OpenVINO's serializer says only ``basic_ios::clear``). Only a write that fails is examined, so a nearly full
    disk that still takes the file is no error.
    """
    path = Path(path)
    if isinstance(err, StorageError):
        return err
    folder = _existing_parent(path)
    left = free_bytes(folder)
    space = f"{left:,} bytes free on {folder}" if left is not None else f"on {folder}"
    if needed is not None:
        space += f", about {needed:,} needed"
    if isinstance(err, OSError) and err.errno in _DISK_FULL:
        return StorageError(
            f"{path}: no space left on device ({os.strerror(err.errno)}; {space}); free space and rerun "
            "(nothing partial was kept)"
        )
    if isinstance(err, EdgeResNeXtError):
        return None
    short = left is not None and (left < LOW_SPACE_BYTES or (needed is not None and left < needed))
    if _says_disk_full(err) or short:
        said = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return StorageError(
            f"{path}: no space left on device ({space}; the writer said: {said}); free space and rerun "
            "(nothing partial was kept)"
        )
    return None


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate if candidate.is_dir() else candidate.parent
    return Path(".")


@contextmanager
def disk_full_as_storage_error(path: str | os.PathLike[str], needed: int | None = None) -> Iterator[None]:
    """Turn a failed write of ``path`` (about ``needed`` bytes, if known) caused by a full disk into
    :class:`StorageError` (other errors pass)."""
    try:
        yield
    except Exception as err:
        converted = storage_error(path, err, needed)
        if converted is None or converted is err:
            raise
        raise converted from err


def _umask() -> int:
    """The process umask, read from /proc on Linux; elsewhere set and restored (racy with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def _widen_to_umask(path: Path) -> None:
    """Give a finished file the permissions a plain ``open(path, "w")`` would have.

    Some writers (safetensors, tempfile) create files 0600; an artifact that only its builder can read is a
    surprise for the service account that loads it. Executable bits a writer set are kept.
    """
    mode = path.stat().st_mode & 0o7777
    wanted = mode | (0o666 & ~_umask())
    if wanted != mode:
        os.chmod(path, wanted)


@contextmanager
def atomic_path(path: str | os.PathLike[str], needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to ``path``, on error removed.

    A full disk (ENOSPC/EDQUOT, or a writer's own error on a disk with less space left than ``needed`` bytes or
    than :data:`LOW_SPACE_BYTES`) becomes :class:`~edgeresnext.errors.StorageError` naming ``path``.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        with disk_full_as_storage_error(path, needed):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            if tmp.is_file():
                _widen_to_umask(tmp)
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.is_file() or tmp.is_symlink():
            tmp.unlink()
        elif tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def temp_folder(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh, empty temporary sibling folder of ``dest`` to assemble a folder in (the caller moves it into place);
    whatever is left of it is removed on exit, success or not."""
    tmp = temp_name(Path(dest))
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def replace_folder(tmp: Path, dest: Path) -> None:
    """Swap the assembled folder ``tmp`` in as ``dest``: the old one is moved aside (under :data:`OLD_MARK`) first and
    deleted only once the new one is in place, so ``dest`` is never half old, half new."""
    old = dest.with_name(f".{dest.name}{OLD_MARK}{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old.exists():
        shutil.rmtree(old)


def remove_stale_temporaries(root: str | os.PathLike[str]) -> list[Path]:
    """Delete what killed writers left under ``root`` (hidden ``.*.tmp-<pid>``/``.*.old-<pid>`` entries).

    Call it only while holding the lock that keeps other writers out of ``root`` (the build lock).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for entry in sorted(root.rglob(".*"), key=lambda p: len(p.parts), reverse=True):
        if not (TMP_MARK in entry.name or OLD_MARK in entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.exists() or entry.is_symlink():
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        logger.warning("removed %d temporary file(s) left by an interrupted run under %s", len(removed), root)
    return removed


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
