"""The one exception root of edgeresnext.

Everything the user can cause (bad config, bad data, a checkpoint we refuse, a backend missing on this
host, a failed gate) raises a subclass of :class:`EdgeResNeXtError`; the CLI turns it into one line and
exit code 2. Internal bugs are left as ordinary Python exceptions on purpose.

It also holds what every message about a user's value needs: how a value is quoted (:func:`shown`), how untrusted
text is rendered for a terminal (:func:`printable`), and the upper bound of every count a user can give (``MAX_*``).
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


class BundleError(EdgeResNeXtError):
    """A bundle is missing, malformed, or does not match its manifest (tampered or incomplete)."""


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


# How a character a terminal would not simply show is written: its name, else its code point.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` as one line a terminal shows as it is: every character that is not printable (``str.isprintable``:
    line breaks, carriage returns, ESC and the other C0 and C1 controls, bidirectional overrides and zero-width
    characters, line separators, unassigned and private-use code points) written as its escape (``\\n``,
    ``\\x1b``, ``\\u202e``).

    The one place that renders untrusted text (names, labels, paths, error messages: anything from a user's file, data
    folder, manifest or labels file) for a terminal: the CLI passes its errors, log lines and the text it prints from
    bundles through it, so a name cannot add a line (``...\\nedgeresnext build: error: none; all good``), move the
    cursor or retitle the window. Backslashes are kept, so escaping twice changes nothing."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


# --------------------------------------------------------------------------------------------- upper bounds
# Every count a user can give has one: a command-line flag or a target key beyond it is refused naming it and the
# accepted range, before any work (``--threads 100000`` once grew to 5.5 GB; ``--runs 10**12`` ran on). Read by the
# CLI's argument types (``cli/common.py``), the target schema (``config.py``) and the backends' options
# (``registry.option``); tests/test_hostile_round3.py checks that no numeric flag or target key is unbounded.

# Threads of a runtime or of torch: more than any CPU has cores (each thread costs memory, whatever the machine).
MAX_THREADS = 1024
# Timed or warm-up inference runs.
MAX_RUNS = 1_000_000
# Images: validation or training limits, calibration or tuning set sizes, counts to write or compare.
MAX_IMAGES = 10_000_000
# The device check set travels in the bundle: 10,000 ResNeXt-50 inputs at 224x224 are 1.5 GB (uint8); its byte
# budget (backend_options.tensorrt.device_check_megabytes, MB) at most 4 GB.
MAX_DEVICE_CHECK_IMAGES = 10_000
MAX_DEVICE_CHECK_MEGABYTES = 4096
# Training or fine-tuning epochs.
MAX_EPOCHS = 10_000
# A batch (training, QAT, or the largest batch an artifact is built for).
MAX_BATCH = 65_536
# Seeds: what every random generator we seed (numpy, torch, Python) takes.
MAX_SEED = 2**32 - 1
# torchrun: processes on one node (and data loader workers), and a node's rank.
MAX_PROCESSES = 1024
MAX_NODE_RANK = 65_535
# Classes a model has (and so the k of top-k).
MAX_CLASSES = 100_000
# Layers left in float by the quantization fallback.
MAX_FALLBACK_LAYERS = 1000
# ONNX opsets: 13 (the first with per-channel Q/DQ) up to this; one newer than the exporter supports is refused there.
MAX_OPSET = 30
# TensorRT's builder workspace, MiB (1 TiB), and DLA core index.
MAX_WORKSPACE_MB = 1 << 20
MAX_DLA_CORE = 15
# Tolerances, rates and times given as numbers.
MAX_TOLERANCE = 1e6
MAX_LEARNING_RATE = 100.0
MAX_LATENCY_MS = 3_600_000.0  # an hour per batch
MAX_SPEEDUP = 1e6


def range_text(low: float, high: float) -> str:
    """``1 to 1,000,000`` (integers with thousands separators, other numbers as ``%g``)."""
    if isinstance(low, int) and isinstance(high, int):
        return f"{low:,} to {high:,}"
    return f"{low:g} to {high:g}"
