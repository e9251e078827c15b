"""Backends (OpenVINO, TensorRT, ONNX Runtime), imported lazily through :func:`get_backend`."""

from edgeresnext.backends.base import (
    BACKENDS,
    Artifact,
    Backend,
    Runner,
    backend_for_path,
    get_backend,
    list_backends,
)

__all__ = ["BACKENDS", "Artifact", "Backend", "Runner", "backend_for_path", "get_backend", "list_backends"]
