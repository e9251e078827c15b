"""The build plan: everything an engine build needs, as plain typed data. One plan drives the Python API build
(:func:`~edgeresnext.backends.tensorrt.engine.engine_from_onnx`), ``build_engine.sh`` (trtexec) and ``kit.json``,
whose ``"plan"`` is :meth:`BuildPlan.to_dict` (the on-disk format of kit version 1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeresnext.errors import ConfigError
from edgeresnext.onnx_io import onnx_input

if TYPE_CHECKING:
    from edgeresnext.config import Target

ENGINE_FILE = "model.engine"
QDQ_FILE = "model.qdq.onnx"
FP16_QDQ_FILE = "model.qdq-fp16.onnx"
# The kit's ONNX files keep their large tensors here, once (onnx_io.share_initializers): ONNX external data.
WEIGHTS_FILE = "model.weights"
TIMING_CACHE_FILE = "timing.cache"
BUILD_MODES = ("strongly_typed", "weakly_typed")


@dataclass(frozen=True)
class BatchShapes:
    """The optimisation profile's batch sizes (a static batch has min == opt == max)."""

    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class BuildPlan:
    target: str
    device: str  # the human name of the device the engine is for (jetson-orin)
    precision: str
    build_mode: str  # strongly_typed | weakly_typed
    onnx: str  # file name of the model the engine is built from, beside the engine
    input_name: str
    input_chw: tuple[int, ...]
    dynamic_batch: bool
    batch: BatchShapes
    workspace_mb: int
    dla_core: int | None
    gpu_fallback: bool
    int8_flag: bool  # weak typing only: which precisions TensorRT may choose
    fp16_flag: bool
    engine: str
    timing_cache: str
    # More ONNX files in the kit built with the same flags, each into <name without .onnx>.engine (DeepStream's variant
    # with the normalization inside); kits written before it have none.
    variants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.build_mode not in BUILD_MODES:
            raise ConfigError(f"build plan: build_mode {self.build_mode!r}; expected one of {', '.join(BUILD_MODES)}")

    @classmethod
    def from_target(cls, onnx_path: str | Path, target: Target) -> BuildPlan:
        """The plan for building ``onnx_path`` (the Q/DQ or FP32 ONNX) as ``target`` says."""
        options = target.backend_options.tensorrt
        name, shape = onnx_input(onnx_path)
        batch = target.input.batch
        dynamic = not isinstance(shape[0], int)
        if not dynamic and not batch.min == batch.max == shape[0]:
            raise ConfigError(
                f"{onnx_path}: the ONNX has a fixed batch of {shape[0]} but target input.batch is "
                f"{batch.min}..{batch.max}; export with a dynamic batch dimension"
            )
        if not all(isinstance(d, int) for d in shape[1:]):
            raise ConfigError(f"{onnx_path}: input {name!r} needs fixed C, H, W (got {shape})")
        fp16 = options.fp16 or target.precision == "fp16"
        mode = "strongly_typed" if options.strongly_typed else "weakly_typed"
        return cls(
            target=target.name,
            device=options.device,
            precision=target.precision,
            build_mode=mode,
            onnx=FP16_QDQ_FILE if options.strongly_typed and fp16 else QDQ_FILE,
            input_name=name,
            input_chw=tuple(int(d) for d in shape[1:]),
            dynamic_batch=dynamic,
            batch=BatchShapes(batch.min, batch.opt, batch.max),
            workspace_mb=options.workspace_mb,
            dla_core=options.dla_core,
            gpu_fallback=options.gpu_fallback,
            int8_flag=mode == "weakly_typed" and target.precision == "int8",
            fp16_flag=mode == "weakly_typed" and fp16,
            engine=ENGINE_FILE,
            timing_cache=TIMING_CACHE_FILE,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, keys in field order (kit.json's ``"plan"``); ``variants`` only when there are some, so a
        kit written before them reads back to the same dict."""
        data = asdict(self)
        data["input_chw"] = list(self.input_chw)
        data["variants"] = list(self.variants)
        if not self.variants:
            del data["variants"]
        return data

    def variant_engines(self) -> list[tuple[str, str]]:
        """(ONNX, engine) of each variant the device step builds beside the engine."""
        return [(onnx, variant_engine(onnx)) for onnx in self.variants]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildPlan:
        """A plan read back from kit.json; every field is required (KeyError/TypeError/ValueError otherwise)."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name != "variants"}
        values["variants"] = tuple(str(v) for v in data.get("variants", ()))
        batch = values["batch"]
        values["batch"] = BatchShapes(int(batch["min"]), int(batch["opt"]), int(batch["max"]))
        values["input_chw"] = tuple(int(d) for d in values["input_chw"])
        if values["dla_core"] is not None:
            values["dla_core"] = int(values["dla_core"])
        return cls(**values)


def variant_engine(onnx: str) -> str:
    """The engine a variant ONNX of the kit is built into: ``model.deepstream.onnx`` -> ``model.deepstream.engine``."""
    return (onnx[: -len(".onnx")] if onnx.endswith(".onnx") else onnx) + ".engine"


def build_plan(onnx_path: str | Path, target: Target) -> BuildPlan:
    """:meth:`BuildPlan.from_target` (the converter-style name the rest of the backend uses)."""
    return BuildPlan.from_target(onnx_path, target)
