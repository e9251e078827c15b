"""The one exception root of edgeresnext.

Everything the user can cause (bad config, bad data, a checkpoint we refuse, a backend missing on this
host, a failed gate) raises a subclass of :class:`EdgeResNeXtError`; the CLI turns it into one line and
exit code 2. Internal bugs are left as ordinary Python exceptions on purpose.
"""


class EdgeResNeXtError(Exception):
    """Root of every error that edgeresnext reports to the user."""


class ConfigError(EdgeResNeXtError):
    """A target file, CLI flag or Python config value is invalid."""


class DataError(EdgeResNeXtError):
    """A dataset, image, idx file or calibration folder cannot be used."""


class CheckpointError(EdgeResNeXtError):
    """A checkpoint is unsafe, corrupt, or does not fit the requested model."""


class ExportError(EdgeResNeXtError):
    """An ONNX export failed its checks (checker, shape inference, parity, lint)."""


class BackendUnavailable(EdgeResNeXtError):
    """A backend cannot run on this host (package or device missing)."""


class GateFailed(EdgeResNeXtError):
    """A validation gate of the target was not met."""


class StorageError(EdgeResNeXtError):
    """An output cannot be written: the disk (or quota) is full, or the folder is not writable."""
