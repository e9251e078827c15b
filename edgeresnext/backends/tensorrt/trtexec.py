"""Building a kit's engine with the device's trtexec, in edgeresnext's own code: what the kit's ``build_engine.sh``
does for a device without edgeresnext.

``edgeresnext bundle build-engine`` runs this module, never a script that came inside the bundle: a bundle's files are
data to edgeresnext. The kit's build plan (``kit.json``) is read as a :class:`BuildPlan` (every field typed and
checked), the trtexec flags come from :func:`~edgeresnext.backends.tensorrt.kit.trtexec_args`, the same function that
wrote the kit's script, and trtexec is the device's (``--trtexec``, ``$TRTEXEC``, ``PATH`` or JetPack's), found as the
script finds it. The build record (``model.engine.json``) has the script's fields and values; the tests build the
same bundle both ways and compare the sealed manifests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeresnext.backends.tensorrt.device_check import JETPACK_TRTEXEC, find_trtexec
from edgeresnext.backends.tensorrt.kit import trtexec_args
from edgeresnext.backends.tensorrt.plan import BuildPlan
from edgeresnext.backends.tensorrt.seal import BUILD_LOG, SealError
from edgeresnext.errors import BackendUnavailable

_BANNER = re.compile(r"\[TensorRT v(\d+)\]")


def _banner_version(text: str) -> str | None:
    """TensorRT 10 and later print ``[TensorRT v100300]`` for 10.3.0; TensorRT 8 printed ``[TensorRT v8602]``."""
    found = _BANNER.search(text)
    if found is None:
        return None
    number = int(found.group(1))
    if number >= 100000:
        return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    return f"{number // 1000}.{number // 100 % 10}.{number % 100}"


def tensorrt_found(trtexec: str) -> str:
    """The TensorRT version the build runs with, looked up as build_engine.sh does: ``$TRT_MAJOR``, the tensorrt
    Python package, then trtexec's banner. Refuses TensorRT before 10 and a trtexec whose version cannot be told."""
    found = os.environ.get("TRT_MAJOR") or None
    if found is None:
        try:
            from edgeresnext.backends.tensorrt.engine import import_tensorrt

            found = str(import_tensorrt().__version__)
        except BackendUnavailable:
            found = None
    if found is None:
        try:
            done = subprocess.run([trtexec, "--help"], capture_output=True, text=True, timeout=60, check=False)
            found = _banner_version(done.stdout + done.stderr)
        except (OSError, subprocess.SubprocessError):
            found = None
    major = (found or "").split(".")[0]
    if not major.isdigit():
        raise SealError(
            f"cannot tell which TensorRT {trtexec} belongs to (no [TensorRT vNNNN] banner in its --help, no tensorrt "
            "Python package); set TRT_MAJOR=10 (or 11) if it is TensorRT 10 or later"
        )
    if int(major) < 10:
        raise SealError(f"TensorRT {found} found; needs TensorRT 10 or later (JetPack 6.1 and later)")
    return str(found)


def _flags(plan: BuildPlan, major: int) -> list[str]:
    args = trtexec_args(plan)
    if plan.build_mode == "strongly_typed":
        if major < 11:  # TensorRT 10 opts in to strong typing; TensorRT 11 is always strongly typed
            args.append("--stronglyTyped")
    elif major >= 11:
        raise SealError(
            "this kit asks for a weakly typed --int8/--fp16 build, which TensorRT 11 removed; set "
            "backend_options.tensorrt.strongly_typed: true and regenerate the kit"
        )
    return args


def _run_logged(command: list[str], kit_dir: Path) -> int:
    """Run trtexec in the kit, its output (stdout and stderr) shown as it comes and written to the build log."""
    with open(kit_dir / BUILD_LOG, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=kit_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            sys.stdout.write(line)
        return process.wait()


def _field(log: str, name: str) -> str | None:
    """The text after ``name:`` on the first log line naming it (build_engine.sh's sed), quotes and CRs dropped."""
    for line in log.split("\n"):
        found = re.match(r".*" + re.escape(name) + r": *(.*)", line)
        if found is not None:
            return found.group(1).replace("\r", "").replace('"', "")
    return None


def build_record(plan: BuildPlan, log: str, found: str) -> dict[str, Any]:
    """What built the engine (it is valid only for this TensorRT version and GPU), read from trtexec's log."""
    return {
        "engine": plan.engine,
        "onnx": plan.onnx,
        "tensorrt_version": _field(log, "TensorRT version") or _banner_version(log) or "unknown",
        "tensorrt_major": int(found.split(".")[0]),
        "build_mode": plan.build_mode,
        "gpu_name": _field(log, "Selected Device") or "unknown",
        "gpu_sm": _field(log, "Compute Capability") or "unknown",
        "dla_core": plan.dla_core,
        "built_with": "trtexec",
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def engine_with_trtexec(
    kit_dir: str | os.PathLike[str], plan: dict[str, Any], trtexec: str | None = None, extra_args: Sequence[str] = ()
) -> dict[str, Any]:
    """Build ``plan``'s engine in ``kit_dir`` with trtexec (``extra_args`` appended) and write its build record beside
    it; returns the record. Raises :class:`SealError` (or ``ConfigError`` for a plan that is not one)."""
    kit_dir = Path(kit_dir)
    typed = BuildPlan.from_dict(plan)
    if trtexec and (not os.access(trtexec, os.X_OK) or os.path.isdir(trtexec)):
        raise SealError(f"--trtexec {trtexec}: not an executable file")
    found_trtexec = find_trtexec(trtexec)
    if found_trtexec is None:
        raise SealError(f"trtexec not found (JetPack: {JETPACK_TRTEXEC}); set TRTEXEC= or pass --trtexec")
    found = tensorrt_found(found_trtexec)
    command = [found_trtexec, *_flags(typed, int(found.split(".")[0])), *extra_args]
    print("+ " + " ".join(command), flush=True)
    status = _run_logged(command, kit_dir)
    if status != 0:
        raise SealError(f"trtexec failed (exit {status}; its output is above)")
    record = build_record(typed, (kit_dir / BUILD_LOG).read_text(encoding="utf-8"), found)
    tmp = kit_dir / f"{typed.engine}.json.tmp"
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(tmp, kit_dir / f"{typed.engine}.json")
    return record
