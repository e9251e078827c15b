"""Backends (OpenVINO, TensorRT, ONNX Runtime), imported lazily through :func:`get_backend`.

Adding one: a module with a :class:`Backend` subclass and one registry entry (:func:`register_backend`, a line in
:data:`BACKENDS`, or the ``EDGERESNEXT_BACKENDS`` environment variable; see :mod:`edgeresnext.registry`).
"""

from edgeresnext.backends.base import (
    Artifact,
    ArtifactInfo,
    Backend,
    DeviceStepOutcome,
    HostOutputs,
    PrecisionReport,
    Runner,
    RunOptions,
    TritonEntry,
    backend_facts,
    backend_for_path,
    copy_artifact_folder,
    display_name,
    get_backend,
    kit_backends,
    kit_owner,
    list_backends,
    run_in_chunks,
)
from edgeresnext.registry import BACKENDS, option, register_backend

__all__ = [
    "BACKENDS",
    "Artifact",
    "ArtifactInfo",
    "Backend",
    "DeviceStepOutcome",
    "HostOutputs",
    "PrecisionReport",
    "RunOptions",
    "Runner",
    "TritonEntry",
    "backend_facts",
    "backend_for_path",
    "copy_artifact_folder",
    "display_name",
    "get_backend",
    "kit_backends",
    "kit_owner",
    "list_backends",
    "option",
    "register_backend",
    "run_in_chunks",
]
