"""Headless Chromium for the tests that render a page in a real browser (the docs site, the HTML report): found on
PATH (``.ci/run`` installs it; the tests skip without it), started with a fresh profile and without its background
services, sync or first-run screens."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Chromium, headless, with the user data folder ``profile`` and ``args`` (more flags, then the page's URL)."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
