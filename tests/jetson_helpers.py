"""A real Jetson bundle and a stand-in trtexec, for the tests of the device step (TensorRT cannot run here).

:func:`jetson_bundle` runs one real build per test session (the shipped model, ``targets/jetson.yaml`` with 64
validation images and a small calibration subset) and hands out its ``bundle/``; :data:`FAKE_TRTEXEC` prints what
trtexec prints about the TensorRT version, the GPU and its SM (the lines ``build_engine.sh`` reads) and writes a
stand-in engine, so the kit's script, ``seal.py`` and everything that reads the sealed bundle run for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# FAKE_* variables change what it reports (an empty value leaves the line out) or make it fail (FAKE_FAIL=1) or leave
# a file the real trtexec never writes (FAKE_STRAY=<name>), or refuse an earlier build's timing cache
# (FAKE_REFUSE_CACHE=1).
FAKE_TRTEXEC = """#!/usr/bin/env bash
# Stand-in for trtexec: the banner, device and version lines trtexec prints; a stand-in engine and timing cache.
banner="&&&& RUNNING TensorRT.trtexec [TensorRT v${FAKE_BANNER-100300}] [b10] # trtexec $*"
echo "$banner"
if [ "${1:-}" = --help ]; then exit 0; fi
echo "[12/01/2025-10:00:00] [I] === Device Information ==="
if [ -n "${FAKE_GPU-Orin}" ]; then echo "[12/01/2025-10:00:00] [I] Selected Device: ${FAKE_GPU-Orin}"; fi
if [ -n "${FAKE_SM-8.7}" ]; then echo "[12/01/2025-10:00:00] [I] Compute Capability: ${FAKE_SM-8.7}"; fi
if [ -n "${FAKE_TRT_VERSION-10.3.0}" ]; then
  echo "[12/01/2025-10:00:00] [I] TensorRT version: ${FAKE_TRT_VERSION-10.3.0}"
fi
if [ -n "${FAKE_FAIL:-}" ]; then
  echo "[12/01/2025-10:00:01] [E] Error[4]: stand-in build failure"
  exit 1
fi
cache=""
for arg in "$@"; do case "$arg" in --timingCacheFile=*) cache="${arg#--timingCacheFile=}" ;; esac; done
if [ -n "$cache" ] && [ -f "$cache" ]; then  # an earlier build's cache: refused (FAKE_REFUSE_CACHE=1) or reused
  if [ -n "${FAKE_REFUSE_CACHE:-}" ]; then
    echo "[12/01/2025-10:00:01] [E] Error[2]: stand-in refuses the timing cache $cache"
    exit 1
  fi
  echo "[12/01/2025-10:00:01] [I] Loaded timing cache from $cache"
  printf 'reused by a build\\n' >> "$cache"
elif [ -n "$cache" ]; then
  printf 'stand-in timing cache\\n' > "$cache"
fi
for arg in "$@"; do
  case "$arg" in
    --saveEngine=*) printf 'stand-in engine, SM %s: %s\\n' "${FAKE_SM-8.7}" "$*" > "${arg#--saveEngine=}" ;;
  esac
done
if [ -n "${FAKE_STRAY:-}" ]; then echo "not an engine" > "$FAKE_STRAY"; fi
echo "&&&& PASSED TensorRT.trtexec [TensorRT v${FAKE_BANNER-100300}] [b10] # trtexec $*"
"""


def jetson_bundle(tmp_path_factory: pytest.TempPathFactory, calib_dir: Path) -> Path:
    """``bundle/`` of a real build of targets/jetson.yaml (small data), built once per session; do not change it."""
    import yaml

    from edgeresnext.config import load_target
    from edgeresnext.pipeline import build

    root = tmp_path_factory.getbasetemp() / "jetson-build"
    bundle = root / "build" / "jetson-small" / "bundle"
    if not (bundle / "manifest.json").is_file():
        root.mkdir(exist_ok=True)
        target = root / "jetson-small.yaml"
        data = {
            "extends": str(REPO / "targets" / "jetson.yaml"),
            "name": "jetson-small",
            "data": {"limit": 64},
            "quant": {"calib_dir": str(calib_dir), "subset_size": 32},
            "validate": {"latency_runs": 3, "warmup_runs": 1},
            "gates": {"max_top1_drop": 0.5},
        }
        target.write_text(yaml.safe_dump(data))
        summary = build(load_target(target), out_root=root / "build", progress=False)
        assert summary.ok, summary.render()
    return bundle


def fake_trtexec(folder: Path) -> Path:
    """A folder holding the stand-in ``trtexec`` (put it first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "trtexec"
    script.write_text(FAKE_TRTEXEC)
    script.chmod(0o755)
    return folder


def device_env(bin_dir: Path, **fake: str) -> dict[str, str]:
    """The environment of a Jetson shell without edgeresnext: the stand-in trtexec, a python3, no PYTHONPATH."""
    python_dirs = [d for d in ("/usr/bin", str(Path(sys.executable).parent)) if (Path(d) / "python3").exists()]
    env = {"PATH": os.pathsep.join([str(bin_dir), *python_dirs, "/usr/bin", "/bin"])}
    env.update(fake)
    return env


def run_device_command(bundle: Path, bin_dir: Path, **fake: str) -> subprocess.CompletedProcess:
    """``<bundle>/kit/build_engine.sh`` as the kit's README says to run it on the device."""
    return subprocess.run(
        [str(bundle / "kit" / "build_engine.sh")],
        env=device_env(bin_dir, **fake),
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_bundle(bundle: Path, dest: Path) -> Path:
    """A private copy, as `scp -r` puts it on the device (modes kept: build_engine.sh stays executable)."""
    return Path(shutil.copytree(bundle, dest))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry under ``folder`` (and its hidden siblings' names): content and mode, to prove nothing changed."""
    files = {
        path.relative_to(folder).as_posix(): (path.read_bytes() if path.is_file() else b"<dir>", path.stat().st_mode)
        for path in sorted(folder.rglob("*"))
    }
    files["<siblings>"] = (" ".join(sorted(p.name for p in folder.parent.iterdir())).encode(), 0)
    return files
