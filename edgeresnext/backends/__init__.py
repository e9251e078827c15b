"""Backends (OpenVINO, TensorRT, ONNX Runtime), imported lazily through :func:`get_backend`."""

from edgeresnext.backends.base import (
    BACKENDS,
    Artifact,
    Backend,
    Runner,
    RunOptions,
    backend_for_path,
    get_backend,
    list_backends,
    run_in_chunks,
)

__all__ = [
    "BACKENDS",
    "Artifact",
    "Backend",
    "RunOptions",
    "Runner",
    "backend_for_path",
    "get_backend",
    "list_backends",
    "run_in_chunks",
]
