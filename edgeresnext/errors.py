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


# Exit codes of every command, and of the Jetson kit's scripts (which import nothing of edgeresnext and repeat them).
# 3 is ours: the command did its job (built, bundle written; engine sealed) and every gate passed on its measured
# value, but at least one gate could not be proven by the images it had (NOT PROVEN, or a device check that did not
# run). CI systems fail a step on any non-zero code, so NOT PROVEN stops a pipeline by default; a team that accepts it
# writes `|| [ $? -eq 3 ]`, or sets gates.unproven: fail to make it exit 1 like a failed gate.
EXIT_OK = 0  # done, every gate proven
EXIT_GATE_FAILED = 1  # done (report written), a gate failed
EXIT_BAD_INPUT = 2  # nothing done: bad input, one line naming the file, key or flag
EXIT_UNPROVEN = 3  # done, every gate passed on its measured value, at least one NOT PROVEN


def exit_code(gates) -> int:
    """The exit code for gate verdicts (objects with ``passed`` and ``verdict``): 1 if any failed, 3 if all passed
    but at least one is NOT PROVEN, else 0."""
    gates = list(gates)
    if not all(gate.passed for gate in gates):
        return EXIT_GATE_FAILED
    return EXIT_UNPROVEN if any(gate.verdict == "NOT PROVEN" for gate in gates) else EXIT_OK


SHOWN_MAX = 80


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a user's value may be huge (a YAML alias
    bomb expands to billions of items), and a message must stay one readable line.

    A container is shown whole only when it is a few plain items; else it is summarised by its size.
    """
    scalars = (str, bytes, int, float, bool, type(None))
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        items = list(value.items() if isinstance(value, dict) else value)[:9] if len(value) <= 8 else None
        flat = [part for item in items for part in (item if isinstance(value, dict) else (item,))] if items else []
        if items is None or not all(isinstance(part, scalars) for part in flat):
            return f"a {type(value).__name__} of {len(value)} item(s)"
        if any(isinstance(part, (str, bytes)) and len(part) > limit for part in flat):
            return f"a {type(value).__name__} of {len(value)} item(s)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (str, bytes)) and len(value) > limit:
        value = value[:limit]  # never repr a huge string whole
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
