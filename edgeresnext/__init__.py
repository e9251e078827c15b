"""edgeresnext: ResNeXt image classifiers from PyTorch to edge devices.

Importing the package is cheap on purpose: torch, onnx, openvino, nncf and tensorrt are imported only by
the stage or backend that needs them.
"""

from edgeresnext.errors import (
    BackendUnavailable,
    CheckpointError,
    ConfigError,
    DataError,
    EdgeResNeXtError,
    ExportError,
    GateFailed,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EdgeResNeXtError",
    "ExportError",
    "GateFailed",
    "__version__",
]
