"""TensorRT backend: FP16 Q/DQ converter (proved on ONNX Runtime), the on-device build kit for jetson.yaml, and,
on a GPU host (`make test-gpu`), real engines built and run with TensorRT 10/11.

trtexec and TensorRT cannot run on the CPU machines; the kit's script is exercised with a stand-in trtexec
that records its arguments and prints what trtexec prints, so the script's own logic (TensorRT 10 vs 11
flags, the engine record) is tested here, and the engine itself on a GPU host.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from backend_helpers import agreement, assert_int8_agrees

from edgeresnext.backends import get_backend
from edgeresnext.backends.tensorrt import (
    FP16_QDQ_FILE,
    KIT_SCRIPT,
    BuildPlan,
    build_plan,
    engine_from_kit,
    engine_mismatch,
    read_kit,
    rebuild_hint,
    trtexec_args,
)
from edgeresnext.config import load_target
from edgeresnext.errors import BackendUnavailable, ConfigError
from edgeresnext.quantize.qdq import fp16_qdq_from_onnx

TARGETS = Path(__file__).resolve().parents[2] / "targets"
GPU_REASON = get_backend("tensorrt").available()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"TensorRT cannot run here: {GPU_REASON}")


def script_args(kit: Path) -> list[str]:
    """The trtexec flags in a kit's build_engine.sh (its ARGS=(...) line)."""
    line = next(line for line in (kit / KIT_SCRIPT).read_text().splitlines() if line.startswith("ARGS=("))
    return shlex.split(line[len("ARGS=(") : -1])


# ------------------------------------------------------------------------------------------ FP16 Q/DQ
def test_fp16_qdq_keeps_int8_and_runs_in_onnxruntime(qdq_onnx, test_images, fp32_logits, qdq_logits, tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper

    out = tmp_path / FP16_QDQ_FILE
    report = fp16_qdq_from_onnx(qdq_onnx, out)
    model, source = onnx.load(str(out)), onnx.load(str(qdq_onnx))
    types = {init.name: init.data_type for init in model.graph.initializer}
    assert TensorProto.FLOAT not in types.values(), "a float32 initializer survived"
    # INT8 weights and zero points are untouched, but for the output channels whose scale was below FP16's smallest
    # normal number (raised to it, those weights requantized); Q/DQ scales keep their values up to FP16 rounding.
    before = {init.name: numpy_helper.to_array(init) for init in source.graph.initializer}
    tiny_channels = {
        node.input[0]: set(np.flatnonzero(np.abs(before[node.input[1]]) < 2**-14).tolist())
        for node in source.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in before
    }
    for init in model.graph.initializer:
        if before[init.name].dtype == np.int8:
            after = numpy_helper.to_array(init)
            assert init.data_type == TensorProto.INT8 and after.shape == before[init.name].shape
            rows = (after != before[init.name]).reshape(after.shape[0] if after.ndim else 1, -1)
            changed = np.flatnonzero(rows.any(axis=1))
            assert set(changed.tolist()) <= tiny_channels.get(init.name, set()), init.name
    assert sum(len(channels) for channels in tiny_channels.values()) == report["raised_scales"] == 2
    # No kernel involved (a float16 cast): 4.7e-4 here, FP16's 4.9e-4 step, more only for scales below its normal range.
    assert report["qdq_scales"] > 0 and report["max_scale_rel_error"] < 0.02
    # The interface stays float32, so runtimes and device apps feed the same images.
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert_int8_agrees(session.run(None, {"input": test_images})[0], qdq_logits, fp32_logits)


def test_fp16_of_an_fp32_model_matches_it(fp32_onnx, test_images, fp32_logits, tmp_path):
    import onnxruntime as ort

    fp16_qdq_from_onnx(fp32_onnx, tmp_path / "fp16.onnx")
    session = ort.InferenceSession(str(tmp_path / "fp16.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": test_images})[0]
    # FP16 rounding (unit roundoff 4.9e-4) instead of float32: measured 0.013 at most; a weight or scale converted
    # wrongly moves logits by far more. Only the 11 images with a top-2 gap < 0.2 could flip.
    assert np.abs(logits - fp32_logits).max() < 0.1
    assert agreement(logits, fp32_logits) >= 0.99


# ------------------------------------------------------------------------------------------ the kit
def test_jetson_target_makes_an_on_device_kit(qdq_onnx, tmp_path):
    target = load_target(TARGETS / "jetson.yaml")
    artifact = get_backend("tensorrt").compile(qdq_onnx, target, tmp_path / "kit")
    kit = tmp_path / "kit"
    assert artifact.kind == "kit" and artifact.path == kit
    assert "on the device" in artifact.info.extra["reason"] or "tensorrt" in artifact.info.extra["reason"].lower()
    for name in ("model.qdq.onnx", FP16_QDQ_FILE, KIT_SCRIPT, "kit.json", "README.md", "seal.py"):
        assert (kit / name).is_file(), name
    assert (kit / KIT_SCRIPT).stat().st_mode & 0o111
    subprocess.run(["bash", "-n", str(kit / KIT_SCRIPT)], check=True)
    options = target.backend_options.tensorrt
    # The script's flags are the target's settings: strongly typed FP16 Q/DQ model, a batch profile 1..8 tuned for 1,
    # workspace, no DLA.
    assert script_args(kit) == [
        f"--onnx={FP16_QDQ_FILE}",
        "--saveEngine=model.engine",
        f"--memPoolSize=workspace:{options.workspace_mb}M",
        "--timingCacheFile=timing.cache",
        "--minShapes=input:1x1x28x28",
        "--optShapes=input:1x1x28x28",
        "--maxShapes=input:8x1x28x28",
    ]
    plan = read_kit(kit)["plan"]
    assert plan.build_mode == "strongly_typed" and plan.dla_core is None
    assert plan.to_dict()["batch"] == {"min": 1, "opt": 1, "max": 8} and plan.device == "jetson-orin"
    assert f"edgeresnext compile --on-device {kit}" in artifact.info.extra["device_commands"]


# kit.json's "plan" as the backend wrote it before the plan was typed (a jetson.yaml kit): kits already on devices.
KIT_V1_PLAN = {
    "batch": {"max": 1, "min": 1, "opt": 1},
    "build_mode": "strongly_typed",
    "device": "jetson-orin",
    "dla_core": None,
    "dynamic_batch": True,
    "engine": "model.engine",
    "fp16_flag": False,
    "gpu_fallback": True,
    "input_chw": [1, 28, 28],
    "input_name": "input",
    "int8_flag": False,
    "onnx": "model.qdq-fp16.onnx",
    "precision": "int8",
    "target": "jetson",
    "timing_cache": "timing.cache",
    "workspace_mb": 1024,
}


def test_build_plan_reads_existing_kits_and_writes_the_same_dict(qdq_onnx, tmp_path):
    plan = build_plan(qdq_onnx, load_target(TARGETS / "jetson.yaml", overrides={"input.batch.max": 1}))
    assert plan == BuildPlan.from_dict(KIT_V1_PLAN) and plan.to_dict() == KIT_V1_PLAN
    (tmp_path / "kit.json").write_text(json.dumps({"kit_version": 1, "plan": KIT_V1_PLAN}))
    assert read_kit(tmp_path)["plan"] == plan
    broken = {k: v for k, v in KIT_V1_PLAN.items() if k != "input_name"}
    (tmp_path / "kit.json").write_text(json.dumps({"kit_version": 1, "plan": broken}))
    with pytest.raises(ConfigError, match=r"not a valid kit file.*input_name"):
        read_kit(tmp_path)


def test_dla_and_batch_range_reach_the_flags(qdq_onnx):
    """jetson-dla is weakly typed: TensorRT 10.3's trtexec sets FP16 and precision-constraint flags with --useDLACore,
    which NVIDIA's DLA documentation calls invalid for strongly typed builds; the FP32 Q/DQ file with --int8 --fp16 is
    the documented DLA build. Static batch 1 (DLA takes static shapes)."""
    target = load_target(TARGETS / "jetson-dla.yaml")
    plan = build_plan(qdq_onnx, target)
    assert plan.build_mode == "weakly_typed" and target.description.startswith("EXPERIMENTAL ")
    assert trtexec_args(plan) == [
        "--onnx=model.qdq.onnx",
        "--saveEngine=model.engine",
        "--memPoolSize=workspace:1024M",
        "--timingCacheFile=timing.cache",
        "--minShapes=input:1x1x28x28",
        "--optShapes=input:1x1x28x28",
        "--maxShapes=input:1x1x28x28",
        "--int8",
        "--fp16",
        "--useDLACore=0",
        "--allowGPUFallback",
    ]
    gpu = trtexec_args(build_plan(qdq_onnx, load_target(TARGETS / "gpu.yaml")))
    assert "--minShapes=input:1x1x28x28" in gpu and "--optShapes=input:8x1x28x28" in gpu
    assert "--maxShapes=input:32x1x28x28" in gpu and "--memPoolSize=workspace:2048M" in gpu
    assert not any(flag.startswith("--useDLACore") for flag in gpu)
    # Strongly typed builds carry no precision flags: precision comes from the graph.
    assert "--int8" not in gpu and "--fp16" not in gpu


def test_weakly_typed_option_uses_the_int8_fp16_flags(qdq_onnx):
    target = load_target(TARGETS / "jetson.yaml", overrides={"backend_options.tensorrt.strongly_typed": False})
    args = trtexec_args(build_plan(qdq_onnx, target))
    assert "--onnx=model.qdq.onnx" in args and "--int8" in args and "--fp16" in args


FAKE_TRTEXEC = """#!/usr/bin/env bash
# Stand-in for trtexec: records its arguments, prints the lines trtexec prints, writes an engine file.
printf '%s\\n' "$@" > trtexec.args
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec $*"
echo "[11/22/2026-10:00:00] [I] === Device Information ==="
echo "[11/22/2026-10:00:00] [I] Selected Device: Orin"
echo "[11/22/2026-10:00:00] [I] Compute Capability: 8.7"
echo "[11/22/2026-10:00:00] [I] TensorRT version: 10.3.0"
for arg in "$@"; do case "$arg" in --saveEngine=*) echo engine > "${arg#--saveEngine=}";; esac; done
"""


@pytest.mark.parametrize(("major", "strongly_typed_flag"), [(10, True), (11, False)])
def test_build_script_adapts_to_tensorrt_10_and_11(qdq_onnx, tmp_path, major, strongly_typed_flag):
    kit = tmp_path / "kit"
    get_backend("tensorrt").compile(qdq_onnx, load_target(TARGETS / "jetson.yaml"), kit)
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "TRTEXEC": str(fake), "TRT_MAJOR": str(major)}
    subprocess.run([str(kit / KIT_SCRIPT)], env=env, check=True, capture_output=True)
    passed = (kit / "trtexec.args").read_text().split()
    assert passed[: len(script_args(kit))] == script_args(kit)
    assert ("--stronglyTyped" in passed) is strongly_typed_flag
    record = json.loads((kit / "model.engine.json").read_text())
    assert record["tensorrt_version"] == "10.3.0" and record["gpu_name"] == "Orin" and record["gpu_sm"] == "8.7"
    assert record["build_mode"] == "strongly_typed" and record["tensorrt_major"] == major
    assert (kit / "model.engine").is_file()


def test_the_dla_kit_builds_weakly_typed_on_tensorrt_10(qdq_onnx, tmp_path):
    kit = tmp_path / "kit"
    get_backend("tensorrt").compile(qdq_onnx, load_target(TARGETS / "jetson-dla.yaml"), kit)
    assert not (kit / FP16_QDQ_FILE).exists()
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "TRTEXEC": str(fake)}  # TensorRT 10.3 from the banner
    subprocess.run([str(kit / KIT_SCRIPT)], env=env, check=True, capture_output=True)
    passed = (kit / "trtexec.args").read_text().split()
    assert "--stronglyTyped" not in passed and {"--onnx=model.qdq.onnx", "--int8", "--fp16", "--useDLACore=0"} <= set(
        passed
    )
    record = json.loads((kit / "model.engine.json").read_text())
    assert record["build_mode"] == "weakly_typed" and record["dla_core"] == 0


def test_build_script_refuses_weak_typing_on_tensorrt_11(qdq_onnx, tmp_path):
    kit = tmp_path / "kit"
    target = load_target(TARGETS / "jetson.yaml", overrides={"backend_options.tensorrt.strongly_typed": False})
    get_backend("tensorrt").compile(qdq_onnx, target, kit)
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    result = subprocess.run(
        [str(kit / KIT_SCRIPT)],
        env={"PATH": "/usr/bin:/bin", "TRTEXEC": str(fake), "TRT_MAJOR": "11"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "TensorRT 11 removed" in result.stderr
    assert not (kit / "model.engine").exists()


@pytest.mark.parametrize(
    ("here", "differs"),
    [
        ({"tensorrt_version": "10.3.0.30", "gpu_sm": "8.7", "gpu_name": "Jetson AGX Orin"}, None),  # one release
        ({"tensorrt_version": "10.3", "gpu_sm": "8.7"}, None),
        ({"tensorrt_version": "10.4.0", "gpu_sm": "8.7"}, "the TensorRT version differs"),
        ({"tensorrt_version": "10.3.0", "gpu_sm": "8.6"}, "the GPU's SM differs"),
        ({"tensorrt_version": "11.0.0", "gpu_sm": "9.0"}, "the TensorRT version and the GPU's SM differ"),
    ],
)
def test_engine_mismatch_compares_the_release_and_the_sm(here, differs):
    recorded = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "gpu_sm": "8.7"}
    said = engine_mismatch(recorded, here)
    assert (said is None) if differs is None else said.endswith(f": {differs}")
    assert engine_mismatch({}, here) is None  # an engine that recorded nothing is left to TensorRT


def test_rebuild_hint_names_the_device_command_where_the_engine_is(tmp_path):
    kit = tmp_path / "bundle" / "kit"
    kit.mkdir(parents=True)
    assert "from its Q/DQ ONNX" in rebuild_hint(kit / "model.engine")
    (kit / KIT_SCRIPT).write_text("")
    assert rebuild_hint(kit / "model.engine").endswith(
        f"`{kit / KIT_SCRIPT}` or `edgeresnext compile --on-device {kit}`"
    )
    (kit.parent / "manifest.json").write_text("{}")
    assert f"`edgeresnext bundle build-engine {kit.parent}`" in rebuild_hint(kit / "model.engine")


def test_the_kit_outside_a_bundle_never_hands_over_to_seal_py(qdq_onnx, tmp_path):
    """A kit on its own (the build folder's compile/, a copied kit) builds in place, as before: no manifest above."""
    kit = tmp_path / "kit"
    get_backend("tensorrt").compile(qdq_onnx, load_target(TARGETS / "jetson.yaml"), kit)
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    done = subprocess.run(
        [str(kit / KIT_SCRIPT)], env={"PATH": "/usr/bin:/bin", "TRTEXEC": str(fake)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"engine: {kit}/model.engine  (TensorRT 10.3.0, Orin, SM 8.7)"


def test_static_batch_onnx_must_match_the_target(tmp_path, shipped_model):
    from edgeresnext.export import onnx_from_torch

    static = onnx_from_torch(shipped_model, tmp_path / "static.onnx", dynamic_batch=False)
    with pytest.raises(ConfigError, match="fixed batch of 1"):
        build_plan(static, load_target(TARGETS / "gpu.yaml"))
    assert not any(
        flag.endswith("Shapes") for flag in trtexec_args(build_plan(static, load_target(TARGETS / "jetson-dla.yaml")))
    )


def test_not_a_kit(tmp_path):
    with pytest.raises(ConfigError, match="not a TensorRT build kit"):
        read_kit(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_without_tensorrt_the_module_still_works_and_says_why(qdq_onnx, tmp_path):
    backend = get_backend("tensorrt")
    assert "tensorrt" in backend.available()
    # gpu.yaml builds here when it can; without TensorRT it falls back to the kit and says why.
    artifact = backend.compile(qdq_onnx, load_target(TARGETS / "gpu.yaml"), tmp_path / "gpu")
    assert artifact.kind == "kit" and "tensorrt" in artifact.info.extra["reason"]
    with pytest.raises(BackendUnavailable, match="on-device build kit"):
        backend.load(artifact)
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        engine_from_kit(tmp_path / "gpu")


# ------------------------------------------------------------------------------------------ GPU host
@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu
def test_engine_builds_runs_and_records_its_device(qdq_onnx, test_images, fp32_logits, qdq_logits, tmp_path):
    backend = get_backend("tensorrt")
    target = load_target(
        TARGETS / "gpu.yaml", overrides={"backend_options.tensorrt.timing_cache": str(tmp_path / "timing.cache")}
    )
    artifact = backend.compile(qdq_onnx, target, tmp_path / "engine")
    assert artifact.kind == "engine"
    record = json.loads(Path(f"{artifact.path}.json").read_text())
    assert record["build_mode"] == "strongly_typed" and record["gpu_sm"] and record["tensorrt_version"]
    assert (tmp_path / "timing.cache").stat().st_size > 0
    runner = backend.load(artifact, target)
    # 512 images in chunks of the profile's max batch (32). TensorRT's INT8 kernels and FP16 float layers round
    # differently from ONNX Runtime's reference: an agreement guard, not the CPU backends' logit tolerance (not yet
    # run on a GPU; tighten once measured there).
    logits = runner(test_images)
    assert agreement(logits, qdq_logits) >= 0.97 and agreement(logits, fp32_logits) >= 0.90
    assert runner.precision_report().extra["layers"] > 0
    runner.close()


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu
def test_kit_builds_on_the_device(qdq_onnx, test_images, qdq_logits, tmp_path):
    """What `edgeresnext compile --on-device <kit>` does on the Jetson, here on whatever GPU runs the tests."""
    get_backend("tensorrt").compile(qdq_onnx, load_target(TARGETS / "jetson.yaml"), tmp_path / "kit")
    artifact = engine_from_kit(tmp_path / "kit")
    runner = get_backend("tensorrt").load(artifact)
    assert agreement(runner(test_images), qdq_logits) >= 0.97
    assert (tmp_path / "kit" / "timing.cache").is_file()


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu
def test_the_runtime_runs_an_engine_bundle(qdq_onnx, shipped_model, test_images, qdq_logits, tmp_path):
    """A device app on the GPU: load_bundle runs the engine through the backend's own TensorRTRunner, which keeps
    its device buffers between calls and frees them on close."""
    from edgeresnext.backends.tensorrt import TensorRTRunner
    from edgeresnext.bundle import bundle_from_artifacts
    from edgeresnext.runtime import load_bundle

    target = load_target(
        TARGETS / "gpu.yaml", overrides={"backend_options.tensorrt.timing_cache": str(tmp_path / "timing.cache")}
    )
    artifact = get_backend("tensorrt").compile(qdq_onnx, target, tmp_path / "engine")
    bundle = bundle_from_artifacts(tmp_path / "bundle", artifact, shipped_model.meta, None, target)
    with load_bundle(bundle) as clf:
        runner = clf.runner
        assert isinstance(runner, TensorRTRunner) and runner.batch_range == (1, 32)
        logits = clf.logits(test_images)  # 16 chunks of the profile's max batch
        buffers = dict(runner._buffers)
        assert len(buffers) == 2
        np.testing.assert_allclose(clf.logits(test_images[:40]), logits[:40], atol=1e-3)  # 32 + 8: no padding
        assert runner._buffers == buffers  # kept between calls, never allocated per call
        assert agreement(logits, qdq_logits) >= 0.97
    assert runner._buffers == {} and runner.stream is None and runner.engine is None


# ------------------------------------------------------------------------------------------ C++ sample's CMake
CPP_SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpp" / "tensorrt"
HEADERS = Path(__file__).resolve().parents[1] / "fixtures" / "tensorrt"
needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


@needs_cmake
@pytest.mark.parametrize("version", ["8.6.2", "10.3.0", "10.16.1", "11.1.0"])
def test_cmake_reads_the_version_of_every_nvinferversion_form(version):
    """8.6 and 10.3: numbers with trailing //!< comments; 10.16 and 11.x: NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE."""
    header = HEADERS / f"NvInferVersion-{version}.h"
    done = subprocess.run(
        ["cmake", f"-DHEADER={header}", "-P", str(CPP_SAMPLE / "TensorRTVersion.cmake")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == version


def _fake_tensorrt_root(root: Path, version: str) -> Path:
    (root / "include").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "include" / "NvInfer.h").write_text("#pragma once\n")
    shutil.copy(HEADERS / f"NvInferVersion-{version}.h", root / "include" / "NvInferVersion.h")
    (root / "lib" / "libnvinfer.so").write_bytes(b"")
    return root


@needs_cmake
@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_cmake_skips_tensorrt_8_and_names_the_version(tmp_path, version):
    root = _fake_tensorrt_root(tmp_path / "TensorRT", version)
    done = subprocess.run(
        ["cmake", "-S", str(CPP_SAMPLE), "-B", str(tmp_path / "build"), f"-DTENSORRT_ROOT={root}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    if version.startswith("8."):
        assert "build skipped: TensorRT 8.6.2 found; this sample uses the TensorRT 10 API" in said
        assert "needs TensorRT 10 or later (JetPack 6.1 and later)" in said
    else:  # TensorRT 10 passes the version gate; this host then lacks CUDA, or builds against the fake and says so
        assert "TensorRT 10.3.0 found" not in said and "names no TensorRT version" not in said
        assert "CUDA toolkit" in said or "TensorRT 10.3.0:" in done.stdout


# ------------------------------------------------------------------------------------------ FP16 Q/DQ scales
def _scales(path: Path) -> dict[str, np.ndarray]:
    """Every Q/DQ scale initializer of an ONNX file (a Q/DQ pair shares one), by name, as stored."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return {
        node.input[1]: inits[node.input[1]]
        for node in model.graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] in inits
    }


def _fp16_scale_violations(path: Path) -> list:
    from edgeresnext.lint import lint_onnx

    return [v for v in lint_onnx(path) if v.rule == "fp16-scale"]


def test_every_fp16_scale_of_the_shipped_model_is_a_normal_number(qdq_onnx, test_images, qdq_logits, tmp_path):
    """The shipped model has 2 weight scales below 2**-14: raised to it, their INT8 weights requantized."""
    import onnxruntime as ort

    fp32_scales = _scales(qdq_onnx)
    assert sum(int((abs(s) < 2**-14).sum()) for s in fp32_scales.values()) == 2
    out = tmp_path / FP16_QDQ_FILE
    report = fp16_qdq_from_onnx(qdq_onnx, out)
    assert report["raised_scales"] == 2 and report["subnormal_scales"] == 0
    scales = _scales(out)
    assert all(s.dtype == np.float16 for s in scales.values())
    assert min(float(np.abs(s).min()) for s in scales.values()) >= 2**-14
    assert _fp16_scale_violations(out) == []
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": test_images})[0]
    assert agreement(logits, qdq_logits) >= 0.99


def test_the_fp16_scale_rule_flags_a_subnormal_or_zero_scale(qdq_onnx, tmp_path):
    """What the FP16 variant held before: the two tiny scales cast as they were (subnormal in FP16), and a zero."""
    import onnx
    from onnx import numpy_helper

    out = tmp_path / FP16_QDQ_FILE
    fp16_qdq_from_onnx(qdq_onnx, out)
    model = onnx.load(str(out))
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.attribute)  # a weight's DQ
    scale = next(init for init in model.graph.initializer if init.name == dq.input[1])
    values = numpy_helper.to_array(scale).copy()
    values[:2] = [np.float16(5.2e-5), np.float16(0.0)]
    scale.CopyFrom(numpy_helper.from_array(values, scale.name))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    (violation,) = _fp16_scale_violations(tmp_path / "broken.onnx")
    assert violation.node == dq.name and violation.severity == "error"
    assert f"2 of {values.size} FP16 scales are zero or subnormal (smallest 0;" in violation.message


def test_fp16_variant_of_an_untrained_resnext_with_tiny_weights(calib_images, test_images, tmp_path):
    """An untrained small ResNeXt whose stem and one grouped convolution have tiny weights (a bring-your-own model's
    dead channels): many scales below 2**-14, all raised; the FP16 variant still computes what the Q/DQ file does."""
    import onnxruntime as ort
    import torch

    from edgeresnext.config import QuantSpec
    from edgeresnext.models.resnext import ResNeXt, ResNeXtConfig
    from edgeresnext.quantize.ptq import quantize_ptq

    torch.manual_seed(0)
    config = ResNeXtConfig(layers=(1, 1), groups=4, width_per_group=16, stem="cifar", planes=(8, 16), stem_width=16)
    model = ResNeXt(config, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        model.conv1.weight[:4].mul_(1e-4)  # 4 of 16 stem channels
        model.layer1[0].conv2.weight.mul_(1e-4)  # a whole grouped convolution
    qdq = quantize_ptq(model, calib_images[:32], QuantSpec(subset_size=32), tmp_path / "tiny.qdq.onnx", lint=False)
    tiny = sum(int((abs(s) < 2**-14).sum()) for s in _scales(qdq).values())
    assert tiny >= 20
    out = tmp_path / FP16_QDQ_FILE
    report = fp16_qdq_from_onnx(qdq, out)
    assert report["raised_scales"] == tiny and _fp16_scale_violations(out) == []
    assert min(float(np.abs(s).min()) for s in _scales(out).values()) >= 2**-14
    run = {}
    for name, path in (("qdq", qdq), ("fp16", out)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        run[name] = session.run(None, {"input": test_images[:256]})[0]
    assert np.isfinite(run["fp16"]).all()
    assert agreement(run["fp16"], run["qdq"]) >= 0.95
