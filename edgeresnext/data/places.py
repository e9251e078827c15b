"""Where named datasets are looked for, in order: a root given explicitly, ``$EDGERESNEXT_DATA/<name>``, the
system's copy (Debian's ``/usr/share/datasets/<name>`` where a package ships one), the user cache
``~/.cache/edgeresnext/<name>`` (``$XDG_CACHE_HOME`` honoured), where downloads go."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(name: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeresnext" / name


def search_roots(name: str, root: str | os.PathLike[str] | None = None, system: Path | None = None) -> list[Path]:
    roots = [Path(root)] if root is not None else []
    if os.environ.get("EDGERESNEXT_DATA"):
        roots.append(Path(os.environ["EDGERESNEXT_DATA"]) / name)
    if system is not None:
        roots.append(system)
    return [*roots, cache_dir(name)]
