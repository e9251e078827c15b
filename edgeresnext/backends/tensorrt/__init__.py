"""TensorRT (NVIDIA GPUs, Jetson): engines from the Q/DQ ONNX, or an on-device build kit.

INT8 reaches TensorRT only as explicit quantization (the Q/DQ ONNX): TensorRT 11 removed implicit
quantization and the calibrator APIs. The default build is *strongly typed* (TensorRT 10:
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` / ``trtexec --stronglyTyped``; TensorRT 11: always), so
precision comes from the graph: the layers left in float run in FP16 because
:func:`edgeresnext.quantize.qdq.fp16_qdq_from_onnx` casts the float parts of the Q/DQ model to FP16 first. The
weakly typed ``--int8 --fp16`` build is kept as an option for TensorRT 10 only
(``backend_options.tensorrt.strongly_typed: false``).

Engines run only with the TensorRT version and GPU (SM) that built them. On a host without TensorRT or
without the target's GPU (a Jetson target built on a workstation) ``compile`` writes an *on-device build
kit* instead (:mod:`.kit`). Every engine gets a JSON beside it with the TensorRT version, build mode, GPU name
and SM.

One job per module: :mod:`.plan` (the typed build plan), :mod:`.kit` (build_engine.sh, kit.json),
:mod:`.checkset` (the device check's set the bundle's kit carries), :mod:`.device_step` (``bundle build-engine`` with
edgeresnext installed), :mod:`.seal` (the device step of a bundle: build the kit's engine in a copy, record it in the
manifest; standard library only, copied into every kit as seal.py), :mod:`.engine` (building with the Python API;
the tensorrt/cuda-python imports), :mod:`.runner` (running an engine; refusing one built for another TensorRT or SM),
:mod:`.backend` (the Backend, with the hooks of a build that finishes on the device). The package imports without
tensorrt or cuda-python installed.
"""

from edgeresnext.backends.tensorrt.backend import TensorRTBackend
from edgeresnext.backends.tensorrt.engine import device_facts, engine_from_onnx, gpu_info
from edgeresnext.backends.tensorrt.kit import (
    KIT_FILE,
    KIT_SCRIPT,
    describe_engine,
    engine_from_kit,
    kit_from_onnx,
    read_kit,
    rebuild_hint,
    trtexec_args,
)
from edgeresnext.backends.tensorrt.plan import (
    ENGINE_FILE,
    FP16_QDQ_FILE,
    QDQ_FILE,
    TIMING_CACHE_FILE,
    BatchShapes,
    BuildPlan,
    build_plan,
)
from edgeresnext.backends.tensorrt.runner import TensorRTRunner, engine_mismatch

__all__ = [
    "ENGINE_FILE",
    "FP16_QDQ_FILE",
    "KIT_FILE",
    "KIT_SCRIPT",
    "QDQ_FILE",
    "TIMING_CACHE_FILE",
    "BatchShapes",
    "BuildPlan",
    "TensorRTBackend",
    "TensorRTRunner",
    "build_plan",
    "describe_engine",
    "device_facts",
    "engine_from_kit",
    "engine_from_onnx",
    "engine_mismatch",
    "gpu_info",
    "kit_from_onnx",
    "read_kit",
    "rebuild_hint",
    "trtexec_args",
]
