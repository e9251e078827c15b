"""edgeresnext: ResNeXt image classifiers from PyTorch to edge devices.

Importing the package is cheap on purpose: torch, onnx, openvino, nncf and tensorrt are imported only by
the stage or backend that needs them. Importing it also switches off the telemetry of the runtimes it uses, before
any of them is imported (:func:`edgeresnext.environment.keep_home_clean`): every entry point passes through here.
"""

from edgeresnext.environment import keep_home_clean

keep_home_clean()

from edgeresnext.errors import (  # noqa: E402  (after the switches, on purpose)
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
