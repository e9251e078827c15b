"""TensorRT (NVIDIA GPUs, Jetson): engines from the Q/DQ ONNX, or an on-device build kit.

INT8 reaches TensorRT only as explicit quantization (the Q/DQ ONNX): TensorRT 11 removed implicit
quantization and the calibrator APIs. The default build is *strongly typed* (TensorRT 10:
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` / ``trtexec --stronglyTyped``; TensorRT 11: always), so
precision comes from the graph: the layers left in float run in FP16 because :func:`fp16_qdq_from_onnx`
casts the float parts of the Q/DQ model to FP16 first. The weakly typed ``--int8 --fp16`` build is kept as an
option for TensorRT 10 only (``backend_options.tensorrt.strongly_typed: false``).

Engines run only with the TensorRT version and GPU (SM) that built them. On a host without TensorRT or
without the target's GPU (a Jetson target built on a workstation) ``compile`` writes an *on-device build
kit* instead: the ONNX, ``build_engine.sh`` calling ``trtexec`` with the target's settings, and
``kit.json`` for ``edgeresnext compile --on-device <kit>`` with JetPack's Python. Every engine gets a JSON
beside it with the TensorRT version, build mode, GPU name and SM.

This module imports without tensorrt or cuda-python installed; they are imported where an engine is built
or run. TensorRT names used here were checked against the TensorRT 10.x/11.x Python API reference.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnext.backends.base import (
    Artifact,
    Backend,
    Runner,
    copy_file_atomic,
    run_in_chunks,
)
from edgeresnext.errors import BackendUnavailable, ConfigError, EdgeResNeXtError
from edgeresnext.onnx_io import check_onnx_precision, onnx_input

if TYPE_CHECKING:
    from edgeresnext.config import Target, TensorRTOptions

logger = logging.getLogger(__name__)

KIT_FILE = "kit.json"
KIT_SCRIPT = "build_engine.sh"
ENGINE_FILE = "model.engine"
QDQ_FILE = "model.qdq.onnx"
FP16_QDQ_FILE = "model.qdq-fp16.onnx"
TIMING_CACHE_FILE = "timing.cache"
# QuantizeLinear/DequantizeLinear take an FP16 scale (matching FP16 activations) from opset 19 on.
FP16_QDQ_MIN_OPSET = 19
FP16_MIN_NORMAL = 6.103515625e-05


# ------------------------------------------------------------------------------------------ FP16 Q/DQ ONNX
def fp16_qdq_from_onnx(onnx_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Write an FP16 variant of an ONNX model (FP32 or Q/DQ INT8): every float tensor becomes FP16, the
    model's inputs and outputs stay FP32 (a ``Cast`` at each end), INT8 weights and zero points are untouched.

    For a strongly typed TensorRT build this is what makes the layers left out of INT8 run in FP16. Q/DQ
    scales are kept (same values, same per-channel axes) but stored as FP16, because ONNX requires a
    QuantizeLinear's scale to have its input's type; the returned dict says how much that rounding moved the
    scales and how many fell below FP16's normal range. The opset is raised to 19 when lower (FP16 scales).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeresnext.atomic import atomic_path

    model = onnx.load(str(onnx_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < FP16_QDQ_MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, FP16_QDQ_MIN_OPSET)
        except Exception as err:  # the converter raises plain RuntimeError/ValueError on unsupported graphs
            raise ConfigError(
                f"{onnx_path}: cannot raise opset {opset} to {FP16_QDQ_MIN_OPSET} for FP16 Q/DQ scales ({err})"
            ) from err
    graph = model.graph
    scale_names = {
        node.input[1]
        for node in graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 1
    }
    cast_count = 0
    scale_rel_error = 0.0
    subnormal_scales = 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if init.name in scale_names:
            nonzero = values != 0
            if nonzero.any():
                rel = np.abs(half[nonzero].astype(np.float32) - values[nonzero]) / np.abs(values[nonzero])
                scale_rel_error = max(scale_rel_error, float(rel.max()))
            subnormal_scales += int(np.count_nonzero(np.abs(values[nonzero]) < FP16_MIN_NORMAL))
        elif np.isfinite(values).all() and np.abs(values).max(initial=0) > 65504:
            raise ConfigError(f"{onnx_path}: initializer {init.name!r} holds values beyond FP16's range (65504)")
        init.CopyFrom(numpy_helper.from_array(half, init.name))
        cast_count += 1
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
    # Keep the model's interface FP32: runtimes and device apps feed float32 images.
    new_nodes = []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            half_name = f"{value.name}_fp16"
            for node in graph.node:
                for i, name in enumerate(node.input):
                    if name == value.name:
                        node.input[i] = half_name
            new_nodes.append(
                helper.make_node(
                    "Cast", [value.name], [half_name], to=TensorProto.FLOAT16, name=f"{value.name}_to_fp16"
                )
            )
    tail_nodes = []
    for value in graph.output:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            half_name = f"{value.name}_fp16"
            for node in graph.node:
                for i, name in enumerate(node.output):
                    if name == value.name:
                        node.output[i] = half_name
            tail_nodes.append(
                helper.make_node("Cast", [half_name], [value.name], to=TensorProto.FLOAT, name=f"{value.name}_to_fp32")
            )
    nodes = new_nodes + list(graph.node) + tail_nodes
    del graph.node[:]
    graph.node.extend(nodes)
    # Intermediate types are stale now; shape inference below recomputes them.
    del graph.value_info[:]
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    except Exception as err:  # onnx raises InferenceError/ValidationError subclasses
        raise ConfigError(f"{onnx_path}: the FP16 variant does not validate ({err})") from err
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    report = {
        "opset": max(opset, FP16_QDQ_MIN_OPSET),
        "float_tensors_cast": cast_count,
        "qdq_scales": len(scale_names),
        "max_scale_rel_error": scale_rel_error,
        "subnormal_scales": subnormal_scales,
    }
    if subnormal_scales:
        logger.warning(
            "%s: %d Q/DQ scales are below FP16's normal range and lose precision in the FP16 variant",
            onnx_path,
            subnormal_scales,
        )
    return report


# ------------------------------------------------------------------------------------------ build settings
def build_plan(onnx_path: str | Path, target: Target) -> dict[str, Any]:
    """Everything an engine build needs, as plain data: the same recipe drives the Python API build,
    ``build_engine.sh`` (trtexec) and ``kit.json``."""
    options = target.backend_options.tensorrt
    name, shape = onnx_input(onnx_path)
    batch = target.input.batch
    dynamic = not isinstance(shape[0], int)
    if not dynamic and not batch.min == batch.max == shape[0]:
        raise ConfigError(
            f"{onnx_path}: the ONNX has a fixed batch of {shape[0]} but target input.batch is "
            f"{batch.min}..{batch.max}; export with a dynamic batch dimension"
        )
    chw = [int(d) for d in shape[1:]] if all(isinstance(d, int) for d in shape[1:]) else None
    if chw is None:
        raise ConfigError(f"{onnx_path}: input {name!r} needs fixed C, H, W (got {shape})")
    quantized = target.precision == "int8"
    if options.strongly_typed:
        mode = "strongly_typed"
        onnx_file = FP16_QDQ_FILE if options.fp16 or target.precision == "fp16" else QDQ_FILE
    else:
        mode = "weakly_typed"
        onnx_file = QDQ_FILE
    return {
        "target": target.name,
        "device": options.device,
        "precision": target.precision,
        "build_mode": mode,
        "onnx": onnx_file,
        "input_name": name,
        "input_chw": chw,
        "dynamic_batch": dynamic,
        "batch": {"min": batch.min, "opt": batch.opt, "max": batch.max},
        "workspace_mb": options.workspace_mb,
        "dla_core": options.dla_core,
        "gpu_fallback": options.gpu_fallback,
        # Weak typing only: which precisions TensorRT may choose.
        "int8_flag": mode == "weakly_typed" and quantized,
        "fp16_flag": mode == "weakly_typed" and (options.fp16 or target.precision == "fp16"),
        "engine": ENGINE_FILE,
        "timing_cache": TIMING_CACHE_FILE,
    }


def trtexec_args(plan: dict[str, Any]) -> list[str]:
    """trtexec flags for a build plan (TensorRT 10 and 11; the version-dependent ``--stronglyTyped`` is
    added by build_engine.sh, which knows the device's TensorRT)."""
    args = [
        f"--onnx={plan['onnx']}",
        f"--saveEngine={plan['engine']}",
        f"--memPoolSize=workspace:{plan['workspace_mb']}M",
        f"--timingCacheFile={plan['timing_cache']}",
    ]
    if plan["dynamic_batch"]:
        chw = "x".join(str(d) for d in plan["input_chw"])
        for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            args.append(f"{flag}={plan['input_name']}:{plan['batch'][key]}x{chw}")
    if plan["int8_flag"]:
        args.append("--int8")
    if plan["fp16_flag"]:
        args.append("--fp16")
    if plan["dla_core"] is not None:
        args.append(f"--useDLACore={plan['dla_core']}")
        if plan["gpu_fallback"]:
            args.append("--allowGPUFallback")
    return args


_SCRIPT = """#!/usr/bin/env bash
# Builds the TensorRT engine for target '{target}' ({device}) ON THE DEVICE that will run it: engines only run
# with the TensorRT version and GPU that built them. Written by edgeresnext {version}; the flags come from the
# target file, so change the target and regenerate the kit rather than editing them here.
#   ./build_engine.sh                 (extra trtexec flags may follow, e.g. --verbose)
#   TRTEXEC=/path/to/trtexec ./build_engine.sh
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "build_engine.sh: trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec); set TRTEXEC=" >&2
  exit 2
fi
# TensorRT major version: from the Python bindings if present, else from trtexec's banner ([TensorRT v100300]).
TRT_MAJOR="${{TRT_MAJOR:-$(python3 -c 'import tensorrt as t; print(t.__version__.split(".")[0])' 2>/dev/null || true)}}"
if [ -z "$TRT_MAJOR" ]; then
  TRT_V="$("$TRTEXEC" --help 2>&1 | sed -n 's/.*\\[TensorRT v\\([0-9]*\\)\\].*/\\1/p' | head -n 1)"
  TRT_MAJOR=$(( ${{TRT_V:-0}} / 10000 ))
fi
if [ "$TRT_MAJOR" -lt 10 ]; then
  echo "build_engine.sh: TensorRT $TRT_MAJOR found; this kit needs TensorRT 10 or 11 (JetPack 6 or later)" >&2
  exit 2
fi
ARGS=({args})
BUILD_MODE={mode}
if [ "$BUILD_MODE" = strongly_typed ]; then
  # TensorRT 10 opts in to strong typing; TensorRT 11 is always strongly typed.
  if [ "$TRT_MAJOR" -lt 11 ]; then ARGS+=(--stronglyTyped); fi
elif [ "$TRT_MAJOR" -ge 11 ]; then
  echo "build_engine.sh: this kit asks for a weakly typed --int8/--fp16 build, which TensorRT 11 removed;" \\
       "set backend_options.tensorrt.strongly_typed: true and regenerate the kit" >&2
  exit 2
fi
echo "+ $TRTEXEC ${{ARGS[*]}} $*"
"$TRTEXEC" "${{ARGS[@]}}" "$@" 2>&1 | tee build_engine.log
# Record what built the engine: it is valid only for this TensorRT version and GPU.
field() {{ sed -n "s/.*$1: *//p" build_engine.log | head -n 1 | tr -d '\\r"'; }}
TRT_VERSION="$(field 'TensorRT version')"
GPU_NAME="$(field 'Selected Device')"
GPU_SM="$(field 'Compute Capability')"
cat > {engine}.json.tmp <<EOF
{{"engine": "{engine}", "onnx": "{onnx}", "tensorrt_version": "${{TRT_VERSION:-unknown}}", \
"tensorrt_major": $TRT_MAJOR, "build_mode": "$BUILD_MODE", "gpu_name": "${{GPU_NAME:-unknown}}", \
"gpu_sm": "${{GPU_SM:-unknown}}", "dla_core": {dla}, "built_with": "trtexec", \
"built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"}}
EOF
mv {engine}.json.tmp {engine}.json
echo "engine: $(pwd)/{engine}  (TensorRT ${{TRT_VERSION:-?}}, ${{GPU_NAME:-?}}, SM ${{GPU_SM:-?}})"
"""


def build_script(plan: dict[str, Any]) -> str:
    from edgeresnext import __version__

    args = " ".join(shlex.quote(arg) for arg in trtexec_args(plan))
    return _SCRIPT.format(
        target=plan["target"],
        device=plan["device"],
        version=__version__,
        args=args,
        mode=plan["build_mode"],
        engine=plan["engine"],
        onnx=plan["onnx"],
        dla="null" if plan["dla_core"] is None else plan["dla_core"],
    )


# ------------------------------------------------------------------------------------------ on-device kit
def kit_from_onnx(onnx_path: str | Path, target: Target, out_dir: str | Path, reason: str) -> Artifact:
    """Write the on-device build kit for ``target`` into ``out_dir`` (see the module docstring)."""
    from edgeresnext.atomic import sha256_file, write_json_atomic, write_text_atomic

    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = build_plan(onnx_path, target)
    files = [copy_file_atomic(onnx_path, out_dir / QDQ_FILE)]
    info: dict[str, Any] = {}
    if plan["onnx"] == FP16_QDQ_FILE:
        info["fp16"] = fp16_qdq_from_onnx(onnx_path, out_dir / FP16_QDQ_FILE)
        files.append(out_dir / FP16_QDQ_FILE)
    script = write_text_atomic(out_dir / KIT_SCRIPT, build_script(plan))
    script.chmod(0o755)
    files.append(script)
    kit = {
        "kit_version": 1,
        "plan": plan,
        "reason": reason,
        "target_config": target.resolved(),
        "sha256": {path.name: sha256_file(path) for path in files if path.suffix == ".onnx"},
        "build_python": f"edgeresnext compile --on-device {out_dir}",
        "build_trtexec": f"{out_dir}/{KIT_SCRIPT}",
    }
    files.append(write_json_atomic(out_dir / KIT_FILE, kit))
    files.append(write_text_atomic(out_dir / "README.md", _kit_readme(plan, out_dir, reason)))
    logger.warning(
        "tensorrt: no engine built here (%s). Wrote the on-device build kit %s; on the %s run "
        "`%s/%s` or `edgeresnext compile --on-device %s`",
        reason,
        out_dir,
        plan["device"],
        out_dir,
        KIT_SCRIPT,
        out_dir,
    )
    commands = [f"{out_dir}/{KIT_SCRIPT}", f"edgeresnext compile --on-device {out_dir}"]
    return Artifact(
        backend="tensorrt",
        precision=target.precision,
        kind="kit",
        path=out_dir,
        files=files,
        info={"reason": reason, "plan": plan, "device_commands": commands, **info},
    )


def _kit_readme(plan: dict[str, Any], out_dir: Path, reason: str) -> str:
    return f"""# TensorRT build kit: {plan["target"]} ({plan["device"]})

No engine was built on the host that made this kit ({reason}). TensorRT engines run only with the
TensorRT version and GPU that built them, so build it on the device itself (JetPack 6 = TensorRT 10.x):

    ./{KIT_SCRIPT}                                  # trtexec, nothing else needed
    edgeresnext compile --on-device {out_dir.name}      # same settings through TensorRT's Python API

Either writes `{plan["engine"]}` and `{plan["engine"]}.json` (TensorRT version, build mode, GPU name, SM).
Model: `{plan["onnx"]}` ({plan["build_mode"].replace("_", " ")}), input `{plan["input_name"]}`
{plan["batch"]["min"]}..{plan["batch"]["max"]} x {"x".join(map(str, plan["input_chw"]))}, workspace \
{plan["workspace_mb"]} MiB, DLA core: {plan["dla_core"] if plan["dla_core"] is not None else "off"}.
Validate a DLA engine on its own: DLA INT8 accuracy can differ from the GPU's.
"""


def read_kit(kit_dir: str | Path) -> dict[str, Any]:
    kit_dir = Path(kit_dir)
    path = kit_dir / KIT_FILE
    if not path.is_file():
        raise ConfigError(
            f"{kit_dir}: not a TensorRT build kit (no {KIT_FILE}); make one with "
            "`edgeresnext compile --target targets/jetson.yaml`"
        )
    try:
        kit = json.loads(path.read_text())
        plan = kit["plan"]
        _ = plan["onnx"], plan["input_name"], plan["batch"], plan["build_mode"]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a valid kit file ({err!r})") from err
    return kit


def engine_from_kit(kit_dir: str | Path) -> Artifact:
    """Build the kit's engine here (on the device) with TensorRT's Python API; writes it into the kit."""
    kit_dir = Path(kit_dir)
    kit = read_kit(kit_dir)
    plan = kit["plan"]
    onnx_path = kit_dir / plan["onnx"]
    if not onnx_path.is_file():
        raise ConfigError(f"{onnx_path}: the kit's ONNX model is missing")
    info = engine_from_onnx(onnx_path, kit_dir / plan["engine"], plan, timing_cache=kit_dir / plan["timing_cache"])
    return Artifact(
        backend="tensorrt",
        precision=plan["precision"],
        kind="engine",
        path=kit_dir / plan["engine"],
        files=[kit_dir / plan["engine"], kit_dir / f"{plan['engine']}.json"],
        info=info,
    )


# ------------------------------------------------------------------------------------------ engine build
def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as err:
        raise BackendUnavailable(
            f"the tensorrt Python package is not installed ({err}); on JetPack it comes "
            "with the OS (python3-libnvinfer), elsewhere pip install 'edgeresnext[tensorrt]'"
        ) from err
    return trt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as err:
            raise BackendUnavailable(f"cuda-python is not installed ({err}); pip install cuda-python") from err
    return cudart


def _cuda_check(result: Any, what: str) -> Any:
    """cuda-python returns (error, value...) tuples; turn a non-success code into our error."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise EdgeResNeXtError(f"CUDA {what} failed: {error}")
    return values[0] if len(values) == 1 else values


def gpu_info() -> dict[str, Any]:
    """Name and SM (compute capability) of CUDA device 0."""
    cudart = _import_cudart()
    props = _cuda_check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu_name": name, "gpu_sm": f"{props.major}.{props.minor}"}


class _TRTLogger:
    """A TensorRT ILogger that forwards to Python logging (created lazily: it subclasses trt.ILogger)."""

    @staticmethod
    def create(trt: Any) -> Any:
        class Forward(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                    logger.error("TensorRT: %s", msg)
                elif severity == trt.ILogger.WARNING:
                    logger.warning("TensorRT: %s", msg)
                else:
                    logger.debug("TensorRT: %s", msg)

        return Forward()


def engine_from_onnx(
    onnx_path: str | Path, engine_path: str | Path, plan: dict[str, Any], timing_cache: str | Path | None = None
) -> dict[str, Any]:
    """Build and serialize a TensorRT engine from ``onnx_path`` following ``plan`` (see :func:`build_plan`).

    Writes ``engine_path`` and ``<engine_path>.json`` (TensorRT version, build mode, GPU name and SM, DLA core)
    atomically; reuses and updates ``timing_cache``. Returns the JSON's content.
    """
    from edgeresnext.atomic import sha256_file, write_bytes_atomic, write_json_atomic

    trt = _import_tensorrt()
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise BackendUnavailable(f"TensorRT {trt.__version__} found; edgeresnext needs TensorRT 10 or 11")
    if plan["build_mode"] == "weakly_typed" and major >= 11:
        raise ConfigError(
            f"target {plan['target']!r}: weakly typed builds (--int8/--fp16) were removed in "
            f"TensorRT 11 (found {trt.__version__}); set backend_options.tensorrt.strongly_typed: true"
        )
    engine_path = Path(engine_path)
    trt_logger = _TRTLogger.create(trt)
    builder = trt.Builder(trt_logger)
    # TensorRT 10 opts in to strong typing; TensorRT 11 is always strongly typed and deprecates the flag.
    strongly_typed_flag = plan["build_mode"] == "strongly_typed" and major < 11
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed_flag else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"{onnx_path}: TensorRT's ONNX parser rejected the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan["workspace_mb"] << 20)
    # Detailed layer information lets the Runner report which layers really run in INT8.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if plan["int8_flag"]:
        config.set_flag(trt.BuilderFlag.INT8)
    if plan["fp16_flag"]:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan["dynamic_batch"]:
        profile = builder.create_optimization_profile()
        chw = tuple(plan["input_chw"])
        batch = plan["batch"]
        profile.set_shape(plan["input_name"], (batch["min"], *chw), (batch["opt"], *chw), (batch["max"], *chw))
        config.add_optimization_profile(profile)
    if plan["dla_core"] is not None:
        if builder.num_DLA_cores == 0:
            raise BackendUnavailable(
                f"target {plan['target']!r} asks for DLA core {plan['dla_core']} but this device has no DLA"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan["dla_core"])
        if plan["gpu_fallback"]:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    # A cache from another TensorRT version or GPU is rejected rather than silently mixed in.
    config.set_timing_cache(cache, ignore_mismatch=False)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeResNeXtError(f"{onnx_path}: TensorRT failed to build the engine (see the TensorRT errors above)")
    seconds = time.perf_counter() - started
    write_bytes_atomic(engine_path, bytes(serialized))
    if cache_path is not None:
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    info = {
        "engine": engine_path.name,
        "onnx": Path(onnx_path).name,
        "onnx_sha256": sha256_file(onnx_path),
        "tensorrt_version": trt.__version__,
        "tensorrt_major": major,
        "build_mode": plan["build_mode"],
        **gpu_info(),
        "dla_core": plan["dla_core"],
        "batch": plan["batch"],
        "workspace_mb": plan["workspace_mb"],
        "built_with": "tensorrt-python",
        "build_seconds": round(seconds, 2),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(engine_path.with_name(engine_path.name + ".json"), info)
    logger.info(
        "tensorrt: built %s in %.1f s (%s, TensorRT %s, %s SM %s)",
        engine_path,
        seconds,
        plan["build_mode"],
        trt.__version__,
        info["gpu_name"],
        info["gpu_sm"],
    )
    return info


# ------------------------------------------------------------------------------------------ runner
class TensorRTRunner(Runner):
    """Executes a serialized engine with ``execute_async_v3`` on its own CUDA stream."""

    def __init__(self, artifact: Artifact) -> None:
        super().__init__(artifact)
        trt = _import_tensorrt()
        self._trt = trt
        self._cudart = _import_cudart()
        self._logger = _TRTLogger.create(trt)
        self.runtime = trt.Runtime(self._logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(artifact.path).read_bytes())
        if self.engine is None:
            meta = artifact.info
            raise BackendUnavailable(
                f"{artifact.path}: TensorRT cannot load this engine here; it was built with "
                f"TensorRT {meta.get('tensorrt_version', '?')} for {meta.get('gpu_name', '?')} "
                f"(SM {meta.get('gpu_sm', '?')}); rebuild it on this device"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ConfigError(f"{artifact.path}: expected one input and one output, got {inputs} / {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.input_shape = tuple(int(d) for d in shape[1:])
        if shape[0] == -1:
            lo, _opt, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.sizes = (int(lo[0]), int(hi[0]))
        else:
            self.sizes = (int(shape[0]), int(shape[0]))
        self.stream = _cuda_check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _cuda_check(self._cudart.cudaFree(pointer), "cudaFree")
            pointer = int(_cuda_check(self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        host_in = np.ascontiguousarray(chunk.astype(self.input_dtype, copy=False))
        self.context.set_input_shape(self.input_name, host_in.shape)
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        host_out = np.empty(out_shape, dtype=self.output_dtype)
        d_in = self._device_buffer(self.input_name, host_in.nbytes)
        d_out = self._device_buffer(self.output_name, host_out.nbytes)
        self.context.set_tensor_address(self.input_name, d_in)
        self.context.set_tensor_address(self.output_name, d_out)
        _cuda_check(
            cudart.cudaMemcpyAsync(
                d_in, host_in.ctypes.data, host_in.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream
            ),
            "cudaMemcpyAsync H2D",
        )
        if not self.context.execute_async_v3(int(self.stream)):
            raise EdgeResNeXtError(f"{self.artifact.path}: TensorRT execute_async_v3 failed")
        _cuda_check(
            cudart.cudaMemcpyAsync(
                host_out.ctypes.data, d_out, host_out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream
            ),
            "cudaMemcpyAsync D2H",
        )
        _cuda_check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return host_out.astype(np.float32)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return run_in_chunks(batch, self._run_chunk, self.sizes)

    def precision_report(self) -> dict[str, Any]:
        """Layer precisions from TensorRT's engine inspector (needs the DETAILED profiling verbosity we build
        with); an engine built elsewhere without it reports only its build mode."""
        trt = self._trt
        report: dict[str, Any] = {
            "precision": self.artifact.precision,
            "backend": "tensorrt",
            **{
                k: self.artifact.info.get(k)
                for k in ("build_mode", "tensorrt_version", "gpu_name", "gpu_sm", "dla_core")
            },
        }
        try:
            inspector = self.engine.create_engine_inspector()
            layers = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON)).get("Layers", [])
        except (AttributeError, ValueError, RuntimeError) as err:
            report["layers_note"] = f"engine inspector unavailable ({err})"
            return report
        kinds: dict[str, int] = {}
        int8 = 0
        for layer in layers:
            if not isinstance(layer, dict):
                continue
            formats = " ".join(str(t.get("Format/Datatype", "")) for t in layer.get("Inputs", []))
            precision = (
                "int8"
                if "Int8" in formats or "INT8" in formats
                else "fp16"
                if "Half" in formats or "FP16" in formats
                else "fp32"
                if formats
                else "unknown"
            )
            kinds[precision] = kinds.get(precision, 0) + 1
            int8 += precision == "int8"
        report.update(
            {
                "layers": len(layers),
                "by_precision": kinds,
                "int8_fraction": round(int8 / len(layers), 4) if layers else 0.0,
            }
        )
        return report

    def close(self) -> None:
        for pointer, _size in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._buffers.clear()
        if getattr(self, "stream", None) is not None:
            self._cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None


# ------------------------------------------------------------------------------------------ backend
class TensorRTBackend(Backend):
    name = "tensorrt"
    kinds = ("engine", "kit")
    suffixes = (".engine", ".plan")
    package = "tensorrt"
    default_device = "GPU"

    def proxies(self, artifact: Artifact) -> list[tuple[str, Artifact]]:
        # What TensorRT reads in FP16-for-float-layers mode is proven on the CPU in ONNX Runtime.
        fp16 = next((Path(p) for p in artifact.files if Path(p).name == FP16_QDQ_FILE), None)
        if fp16 is None:
            return []
        stand_in = Artifact("onnxruntime", "int8+fp16", "onnx", fp16, [fp16])
        return [("qdq-int8-fp16 (onnxruntime)", stand_in)]

    def available(self) -> str | None:
        try:
            trt = _import_tensorrt()
            cudart = _import_cudart()
        except BackendUnavailable as err:
            return str(err)
        try:
            count = _cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        except EdgeResNeXtError as err:
            return f"no usable NVIDIA GPU ({err})"
        if not count:
            return "no NVIDIA GPU found"
        if int(trt.__version__.split(".")[0]) < 10:
            return f"TensorRT {trt.__version__} is too old; edgeresnext needs TensorRT 10 or 11"
        return None

    def _compile_impl(self, onnx_path: Path, target: Target, out_dir: Path, **extra: Any) -> Artifact:
        options = target.backend_options.tensorrt
        check_onnx_precision(onnx_path, "int8" if target.precision == "int8" else "fp32")
        reason = _why_not_here(options)
        if reason is not None:
            return kit_from_onnx(onnx_path, target, out_dir, reason)
        plan = build_plan(onnx_path, target)
        model = out_dir / plan["onnx"]
        if plan["onnx"] == FP16_QDQ_FILE:
            fp16 = fp16_qdq_from_onnx(onnx_path, model)
        else:
            fp16 = None
            copy_file_atomic(onnx_path, model)
        timing_cache = Path(options.timing_cache) if options.timing_cache else None
        info = engine_from_onnx(model, out_dir / ENGINE_FILE, plan, timing_cache=timing_cache)
        info["fp16"] = fp16
        return Artifact(
            backend=self.name,
            precision=target.precision,
            kind="engine",
            path=out_dir / ENGINE_FILE,
            files=[out_dir / ENGINE_FILE, out_dir / f"{ENGINE_FILE}.json", model],
            info=info,
        )

    def load(self, artifact: Artifact, target: Target | None = None) -> Runner:
        # A kit is never runnable, whatever this host has: say what to do with it before anything else.
        if artifact.kind == "kit":
            raise BackendUnavailable(
                f"{artifact.path} is an on-device build kit, not an engine: build it on the "
                f"device with `edgeresnext compile --on-device {artifact.path}`"
            )
        return super().load(artifact, target)

    def _load_impl(self, artifact: Artifact, target: Target | None) -> Runner:
        engine_json = Path(f"{artifact.path}.json")
        if engine_json.is_file() and not artifact.info.get("tensorrt_version"):
            artifact.info.update(json.loads(engine_json.read_text()))
        return TensorRTRunner(artifact)


def _why_not_here(options: TensorRTOptions) -> str | None:
    """Why the engine cannot be built on this host (then a kit is written), or None."""
    if options.on_device:
        return f"the target builds on the device ({options.device}): backend_options.tensorrt.on_device is true"
    return TensorRTBackend().available()
