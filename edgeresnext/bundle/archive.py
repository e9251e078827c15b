"""Unpacking a bundle archive safely: every member checked before anything is written, then verified."""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any

from edgeresnext.atomic import temp_folder
from edgeresnext.bundle.manifest import MANIFEST, BundleError, verify_bundle
from edgeresnext.bundle.model import Manifest

logger = logging.getLogger(__name__)

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


def _unreadable_errors() -> tuple[type[BaseException], ...]:
    """What tarfile, zipfile and zlib raise for a damaged archive (and a full disk while writing it out)."""
    import tarfile
    import zipfile
    import zlib

    return (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)


Member = tuple[str, PurePosixPath, str, int]  # name in the archive, its relative path, kind, mode


def _checked_members(
    archive: Path, dest: Path, entries: list[tuple[str, str, int, int]], max_files: int, max_bytes: int
) -> list[Member]:
    """The members to write, each refused before anything is written when it breaks a rule of
    :func:`extract_bundle` (too many or too large, a link or device, a name leaving ``dest``)."""
    if len(entries) > max_files:
        raise BundleError(f"{archive}: {len(entries)} members, more than the limit of {max_files}")
    total = sum(size for _name, kind, size, _mode in entries if kind == "file")
    if total > max_bytes:
        raise BundleError(f"{archive}: {total} bytes uncompressed, more than the limit of {max_bytes}")
    members: list[Member] = []
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
            raise BundleError(f"{archive}: member {name!r} would be written outside {dest} (absolute or '..'); refused")
        if relative.parts and relative.parts != (".",):
            members.append((name, PurePosixPath(*[p for p in relative.parts if p != "."]), kind, mode))
    return members


def _write_members(archive: Path, tmp: Path, members: list[Member], open_member: Any, max_bytes: int) -> None:
    """The members' files and folders under ``tmp``, a single top-level folder stripped, at most ``max_bytes`` in
    all as really read (a zip header can lie)."""
    tops = {relative.parts[0] for _name, relative, _kind, _mode in members}
    strip = len(tops) == 1 and not any(r.as_posix() == MANIFEST for _n, r, _k, _m in members)
    written = 0
    for name, relative, kind, mode in members:
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


def _verified_move(archive: Path, tmp: Path, dest: Path) -> Manifest:
    """:func:`verify_bundle` on the unpacked ``tmp``, then ``tmp`` renamed to ``dest``; returns the manifest."""
    try:
        manifest = verify_bundle(tmp)
    except BundleError as err:  # name the archive, not our temporary folder
        said = str(err).replace(f"{tmp}: ", "").replace(str(tmp), str(dest))
        raise BundleError(f"{archive}: {said}") from err
    if dest.exists():
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return manifest


def _extraction_error(archive: Path, dest: Path, err: BaseException) -> Exception:
    """A damaged member as a BundleError naming the archive; a full disk as the storage error naming ``dest``."""
    import tarfile
    import zipfile

    if isinstance(err, OSError) and not isinstance(err, (zipfile.BadZipFile, tarfile.TarError)):
        from edgeresnext.atomic import storage_error

        full = storage_error(dest, err)
        if full is not None:
            return full
    return BundleError(f"{archive}: cannot extract ({err})")


def extract_bundle(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    max_bytes: int = MAX_ARCHIVE_BYTES,
    max_files: int = MAX_ARCHIVE_FILES,
) -> Manifest:
    """Unpack a bundle archive (``.tar[.gz|.bz2|.xz]``/``.tgz``/``.zip``) into ``dest`` and verify it.

    Every member is checked before anything is written: names must stay inside ``dest`` (relative, no ``..``,
    no backslashes), only regular files and folders are accepted (no symlinks, hard links, devices), and the
    archive may hold at most ``max_files`` members and ``max_bytes`` uncompressed (also enforced while reading,
    since a zip header can lie). A single top-level folder (``tar czf b.tgz bundle/``) is stripped. The files
    land in a temporary sibling folder, :func:`verify_bundle` checks them, and only then is it renamed to
    ``dest``; on any error nothing is left. Returns the manifest.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise BundleError(f"{archive}: no such archive file")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(f"{dest}: already exists and is not an empty folder; extract into a new folder")
    unreadable = _unreadable_errors()
    try:
        entries, (handle, open_member) = _archive_entries(archive)
    except unreadable as err:
        raise BundleError(
            f"{archive}: not a readable tar or zip archive ({err}); accepted: {', '.join(ARCHIVE_SUFFIXES)}"
        ) from err
    with handle:
        members = _checked_members(archive, dest, entries, max_files, max_bytes)
        with temp_folder(dest) as tmp:
            try:
                _write_members(archive, tmp, members, open_member, max_bytes)
                manifest = _verified_move(archive, tmp, dest)
            except unreadable as err:
                raise _extraction_error(archive, dest, err) from err
    logger.info("extracted %s into %s (%d files)", archive, dest, len(manifest.files))
    return manifest
