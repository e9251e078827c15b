"""Building an engine with TensorRT's Python API, and the tensorrt / cuda-python imports every part shares.

tensorrt and cuda-python are imported here, inside functions, so the package imports without them. Names used
were checked against the TensorRT 10.x/11.x Python API reference.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgeresnext.backends.tensorrt.plan import BuildPlan
from edgeresnext.errors import BackendUnavailable, ConfigError, EdgeResNeXtError

logger = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as err:
        raise BackendUnavailable(
            f"the tensorrt Python package is not installed ({err}); on JetPack it comes "
            "with the OS (python3-libnvinfer), elsewhere pip install 'edgeresnext[tensorrt]'"
        ) from err
    return trt


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as err:
            raise BackendUnavailable(f"cuda-python is not installed ({err}); pip install cuda-python") from err
    return cudart


def cuda_check(result: Any, what: str) -> Any:
    """cuda-python returns (error, value...) tuples; turn a non-success code into our error."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise EdgeResNeXtError(f"CUDA {what} failed: {error}")
    return values[0] if len(values) == 1 else values


def tensorrt_major(trt: Any) -> int:
    return int(trt.__version__.split(".")[0])


def gpu_info() -> dict[str, Any]:
    """Name and SM (compute capability) of CUDA device 0."""
    cudart = import_cudart()
    props = cuda_check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu_name": name, "gpu_sm": f"{props.major}.{props.minor}"}


def device_facts() -> dict[str, Any]:
    """What an engine must have been built for to run here: this TensorRT's version, GPU 0's name and SM."""
    return {"tensorrt_version": import_tensorrt().__version__, **gpu_info()}


def trt_logger(trt: Any) -> Any:
    """A TensorRT ILogger that forwards to Python logging (made on use: it subclasses trt.ILogger)."""

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


def _tensorrt_for(plan: BuildPlan) -> tuple[Any, int]:
    """The tensorrt module and its major version, refused when it cannot build ``plan``."""
    trt = import_tensorrt()
    major = tensorrt_major(trt)
    if major < 10:
        raise BackendUnavailable(
            f"TensorRT {trt.__version__} found; needs TensorRT 10 or later (JetPack 6.1 and later)"
        )
    if plan.build_mode == "weakly_typed" and major >= 11:
        raise ConfigError(
            f"target {plan.target!r}: weakly typed builds (--int8/--fp16) were removed in "
            f"TensorRT 11 (found {trt.__version__}); set backend_options.tensorrt.strongly_typed: true"
        )
    return trt, major


def _parsed_network(
    trt: Any, builder: Any, log: Any, onnx_path: str | Path, plan: BuildPlan, major: int
) -> tuple[Any, Any]:
    """``onnx_path`` as a TensorRT network, strongly typed when the plan asks (and TensorRT still has the flag), and
    its parser, which owns the parsed weights: the caller keeps it until the engine is built."""
    # TensorRT 10 opts in to strong typing; TensorRT 11 is always strongly typed and deprecates the flag.
    strongly_typed_flag = plan.build_mode == "strongly_typed" and major < 11
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed_flag else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"{onnx_path}: TensorRT's ONNX parser rejected the model: {errors}")
    return network, parser


def _builder_config(trt: Any, builder: Any, plan: BuildPlan) -> Any:
    """The builder config of ``plan``: workspace, precision flags, batch profile, DLA core."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mb << 20)
    # Detailed layer information lets the Runner report which layers really run in INT8.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if plan.int8_flag:
        config.set_flag(trt.BuilderFlag.INT8)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.dynamic_batch:
        profile = builder.create_optimization_profile()
        chw = tuple(plan.input_chw)
        batch = plan.batch
        profile.set_shape(plan.input_name, (batch.min, *chw), (batch.opt, *chw), (batch.max, *chw))
        config.add_optimization_profile(profile)
    if plan.dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise BackendUnavailable(
                f"target {plan.target!r} asks for DLA core {plan.dla_core} but this device has no DLA"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan.dla_core)
        if plan.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return config


def _use_timing_cache(config: Any, cache_path: Path | None) -> None:
    """Start ``config`` from the timing cache file when there is one TensorRT accepts. A cache from another
    TensorRT version or GPU is rejected rather than silently mixed in; the build then starts from an empty cache
    (and replaces the file), so a foreign cache never blocks a rebuild."""
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        logger.warning(
            "tensorrt: TensorRT refused the timing cache %s (another TensorRT version or GPU?); building without it",
            cache_path,
        )
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def engine_from_onnx(
    onnx_path: str | Path, engine_path: str | Path, plan: BuildPlan, timing_cache: str | Path | None = None
) -> dict[str, Any]:
    """Build and serialize a TensorRT engine from ``onnx_path`` following ``plan``.

    Writes ``engine_path`` and ``<engine_path>.json`` (TensorRT version, build mode, GPU name and SM, DLA core)
    atomically; reuses and updates ``timing_cache``. Returns the JSON's content.
    """
    from edgeresnext.atomic import sha256_file, write_bytes_atomic, write_json_atomic

    trt, major = _tensorrt_for(plan)
    engine_path = Path(engine_path)
    log = trt_logger(trt)
    builder = trt.Builder(log)
    network, _parser = _parsed_network(trt, builder, log, onnx_path, plan, major)
    config = _builder_config(trt, builder, plan)
    cache_path = Path(timing_cache) if timing_cache else None
    _use_timing_cache(config, cache_path)
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
        "build_mode": plan.build_mode,
        **gpu_info(),
        "dla_core": plan.dla_core,
        "batch": asdict(plan.batch),
        "workspace_mb": plan.workspace_mb,
        "built_with": "tensorrt-python",
        "build_seconds": round(seconds, 2),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(engine_path.with_name(engine_path.name + ".json"), info)
    logger.info(
        "tensorrt: built %s in %.1f s (%s, TensorRT %s, %s SM %s)",
        engine_path,
        seconds,
        plan.build_mode,
        trt.__version__,
        info["gpu_name"],
        info["gpu_sm"],
    )
    return info
