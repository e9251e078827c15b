"""A real Jetson bundle and a stand-in trtexec, for the tests of the device step (TensorRT cannot run here).

:func:`jetson_bundle` runs one real build per test session (the shipped model, ``targets/jetson.yaml`` with 64
validation images and a small calibration subset) and hands out its ``bundle/``; :data:`FAKE_TRTEXEC` prints what
trtexec prints about the TensorRT version, the GPU and its SM (the lines ``build_engine.sh`` reads) and writes a
stand-in engine, so the kit's script, ``seal.py`` and everything that reads the sealed bundle run for real.
"""

from __future__ import annotations

import json
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
# Only the options TensorRT 10.3's trtexec documents (samples/trtexec/README.md, sampleOptions.cpp's help).
for arg in "$@"; do
  case "${arg%%=*}" in
    --onnx|--saveEngine|--loadEngine|--timingCacheFile|--memPoolSize|--minShapes|--optShapes|--maxShapes|--shapes\
    |--int8|--fp16|--bf16|--fp8|--best|--stronglyTyped|--useDLACore|--allowGPUFallback|--precisionConstraints\
    |--layerPrecisions|--loadInputs|--exportOutput|--exportTimes|--exportProfile|--exportLayerInfo|--iterations\
    |--warmUp|--duration|--avgRuns|--percentile|--verbose|--noDataTransfers|--useCudaGraph|--useSpinWait\
    |--separateProfileRun|--dumpOutput|--dumpProfile|--skipInference|--builderOptimizationLevel|--device|--streams\
    |--infStreams|--sleepTime|--idleTime|--profilingVerbosity|--inputIOFormats|--outputIOFormats|--calib\
    |--versionCompatible|--excludeLeanRuntime|--noTF32|--sparsity|--maxAuxStreams|--tacticSources) ;;
    *) echo "[12/01/2025-10:00:00] [E] Unknown option: $arg"; echo "&&&& FAILED TensorRT.trtexec [TensorRT v100300]"
       exit 1 ;;
  esac
done
echo "[12/01/2025-10:00:00] [I] === Device Information ==="
if [ -n "${FAKE_GPU-Orin}" ]; then echo "[12/01/2025-10:00:00] [I] Selected Device: ${FAKE_GPU-Orin}"; fi
if [ -n "${FAKE_SM-8.7}" ]; then echo "[12/01/2025-10:00:00] [I] Compute Capability: ${FAKE_SM-8.7}"; fi
if [ -n "${FAKE_TRT_VERSION-10.3.0}" ]; then
  echo "[12/01/2025-10:00:00] [I] TensorRT version: ${FAKE_TRT_VERSION-10.3.0}"
fi
for arg in "$@"; do  # running an engine: the stand-in computes with ONNX Runtime on the ONNX it was "built" from
  case "$arg" in --loadEngine=*) exec "__PYTHON__" "__RUNNER__" "$@" ;; esac
done
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


DEVICE_CHECK_KEYS = ("device_check_images", "device_check_megabytes", "max_device_disagreement")


def jetson_bundle(tmp_path_factory: pytest.TempPathFactory, calib_dir: Path, **validate) -> Path:
    """``bundle/`` of a real build of targets/jetson.yaml (small data), built once per session; do not change it.

    ``validate`` keys on top (e.g. ``stand_in_images=40``; the device check's keys, e.g. ``device_check_images=32``, go
    to ``backend_options.tensorrt``) build a variant in its own folder, starting from a copy of the plain build so that
    only the stages they change run again."""
    import yaml

    from edgeresnext.config import load_target
    from edgeresnext.pipeline import build

    plain = tmp_path_factory.getbasetemp() / "jetson-build"
    suffix = "-".join(f"{key}-{value}" for key, value in sorted(validate.items()))
    root = plain.with_name(f"jetson-build-{suffix}") if validate else plain
    bundle = root / "build" / "jetson-small" / "bundle"
    if not (bundle / "manifest.json").is_file():
        if validate:
            shutil.copytree(jetson_bundle(tmp_path_factory, calib_dir).parent, root / "build" / "jetson-small")
        root.mkdir(exist_ok=True)
        target = root / "jetson-small.yaml"
        device = {k: v for k, v in validate.items() if k in DEVICE_CHECK_KEYS}
        spec = {k: v for k, v in validate.items() if k not in device}
        data = {
            "extends": str(REPO / "targets" / "jetson.yaml"),
            "name": "jetson-small",
            # 64 of the 10,000 test images, a class-stratified sample: the device check set takes all 64 (its default,
            # 124, derived from the gate, is more than the set holds), enough to prove 5 % when none disagrees.
            "data": {"limit": 64},
            # An app that batches: the check set is 8 files of 8 images, trtexec at 1 and 8.
            "input": {"batch": {"min": 1, "opt": 1, "max": 8}},
            "quant": {"calib_dir": str(calib_dir), "subset_size": 32},
            # The host stand-in on 40 of the 64 images only (validate.stand_in_images): the first 40 of the set's
            # class-stratified order, as the check set's are its first 64.
            "validate": {"latency_runs": 3, "warmup_runs": 1, "stand_in_images": 40, **spec},
            "gates": {"max_top1_drop": 0.5},
        }
        if device:
            data["backend_options"] = {"tensorrt": device}
        target.write_text(yaml.safe_dump(data))
        summary = build(load_target(target), out_root=root / "build", progress=False)
        assert summary.ok, summary.render()
    return bundle


# The stand-in's inference: what trtexec --loadEngine does with --shapes, --loadInputs and --exportOutput, computed
# with ONNX Runtime on the ONNX the stand-in engine was built from. FAKE_FLIP=0.05 changes the top-1 of every 20th
# image of the check set (5 %: the file names, inputs-NNN.bin, number its batches), as a broken engine would.
FAKE_RUNNER = """
import re, sys, time
import numpy as np
import onnxruntime as ort

args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
engine = args["--loadEngine"]
print("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] [b10] # trtexec " + " ".join(sys.argv[1:]))
text = open(engine).read()
onnx = re.search(r"--onnx=(\\S+)", text).group(1)
import os
session = ort.InferenceSession(os.path.join(os.path.dirname(engine), onnx), providers=["CPUExecutionProvider"])
name, dims = args["--shapes"].rsplit(":", 1)
shape = [int(d) for d in dims.split("x")]
if "--loadInputs" in args:
    tensor, path = args["--loadInputs"].split(":", 1)
    assert tensor == name, (tensor, name)
    batch = np.fromfile(path, dtype=np.float32).reshape(shape)
    first = int(re.search(r"inputs-(\\d+)", path).group(1)) * shape[0]
else:
    batch, first = np.random.default_rng(0).standard_normal(shape).astype(np.float32), 0
times = []
for _ in range(3):
    start = time.perf_counter()
    (logits,) = session.run(None, {name: batch})
    times.append((time.perf_counter() - start) * 1000)
flip = float(os.environ.get("FAKE_FLIP") or 0)
if flip:
    every = round(1 / flip)
    for i in range(len(logits)):
        if (first + i) % every == 0:
            order = np.argsort(logits[i])
            logits[i, order[-1]], logits[i, order[-2]] = logits[i, order[-2]], logits[i, order[-1]]
if "--exportOutput" in args:
    out = session.get_outputs()[0].name
    with open(args["--exportOutput"], "w") as handle:
        dims = "x".join(map(str, logits.shape))
        handle.write("[\\n  { \\"name\\" : \\"%s\\"\\n  , \\"dimensions\\" : \\"%s\\"\\n" % (out, dims))
        handle.write("  , \\"values\\" : [ " + ", ".join("%g" % v for v in logits.ravel()) + " ]\\n  }\\n]\\n")
median, p99 = float(np.median(times)), float(np.percentile(times, 99))
perf = "min = %g ms, max = %g ms, mean = %g ms, median = %g ms, percentile(90%%) = %g ms, percentile(95%%) = %g ms, " \\
    "percentile(99%%) = %g ms" % (min(times), max(times), np.mean(times), median, p99, p99, p99)
print("[12/01/2025-10:00:02] [I] === Performance summary ===")
print("[12/01/2025-10:00:02] [I] Throughput: %g qps" % (1000 / median))
print("[12/01/2025-10:00:02] [I] Latency: " + perf)
print("[12/01/2025-10:00:02] [I] GPU Compute Time: " + perf)
print("&&&& PASSED TensorRT.trtexec [TensorRT v100300] [b10] # trtexec " + " ".join(sys.argv[1:]))
"""


def fake_trtexec(folder: Path) -> Path:
    """A folder holding the stand-in ``trtexec`` (put it first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    runner = folder / "fake_trtexec_run.py"
    runner.write_text(FAKE_RUNNER)
    script = folder / "trtexec"
    script.write_text(FAKE_TRTEXEC.replace("__PYTHON__", sys.executable).replace("__RUNNER__", str(runner)))
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


def sealed_copy(built: Path, bin_dir: Path, folder: Path) -> Path:
    """A copy of ``built`` in ``folder`` after the device step ran on it with the stand-in trtexec and passed."""
    bundle = copy_bundle(built, folder / "bundle")
    done = run_device_command(bundle, bin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    return bundle


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry under ``folder`` (and its hidden siblings' names): content and mode, to prove nothing changed."""
    files = {
        path.relative_to(folder).as_posix(): (path.read_bytes() if path.is_file() else b"<dir>", path.stat().st_mode)
        for path in sorted(folder.rglob("*"))
    }
    files["<siblings>"] = (" ".join(sorted(p.name for p in folder.parent.iterdir())).encode(), 0)
    return files


def jetson_fixtures(bundle: str = "built"):
    """The two module-scoped fixtures of a test module of the device step, to bind at module level
    (``built, bin_dir = jetson_fixtures()``): ``bundle`` (its name; default ``built``), the bundle of
    :func:`jetson_bundle` (never changed by a test), and ``bin_dir``, a folder holding the stand-in trtexec."""

    @pytest.fixture(scope="module", name=bundle)
    def built(tmp_path_factory: pytest.TempPathFactory, calib_dir: Path) -> Path:
        return jetson_bundle(tmp_path_factory, calib_dir)

    @pytest.fixture(scope="module")
    def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return fake_trtexec(tmp_path_factory.mktemp("trtexec"))

    return built, bin_dir


def stand_in_python_api_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace TensorRT's Python API build, where the device step calls it, by a stand-in that writes what the real one
    writes: an engine (naming its ONNX, which the stand-in trtexec runs) and its build record."""
    import edgeresnext.backends.tensorrt.engine as tensorrt

    def engine_from_onnx(onnx_path, engine_path, plan, timing_cache=None):
        Path(engine_path).write_text(f"stand-in engine: --onnx={Path(onnx_path).name}")
        info = {"onnx": Path(onnx_path).name, "tensorrt_version": "10.3.0", "gpu_name": "Orin", "gpu_sm": "8.7"}
        Path(f"{engine_path}.json").write_text(json.dumps({**info, "build_mode": plan.build_mode}))
        return info

    monkeypatch.setattr(tensorrt, "engine_from_onnx", engine_from_onnx)
