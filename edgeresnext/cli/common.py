"""What every command shares: one-line argparse errors, range-checked argument types, and the one path by which
command-line flags override a target's keys (a bad value is reported against the flag)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from edgeresnext.errors import printable, range_text, shown


class Parser(argparse.ArgumentParser):
    """argparse's errors as one line naming the flag (exit 2), like our own errors, without the usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")


def say(*parts: object, sep: str = " ", file: TextIO | None = None) -> None:
    """``print`` for lines that carry text from a user's files (labels, names, paths, a manifest's strings): through
    :func:`~edgeresnext.errors.printable`, so a label cannot clear the screen or add a line."""
    print(printable(sep.join(str(part) for part in parts)), file=file)


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high`` (the message names the accepted range; argparse adds
    the flag). Every count has an upper bound (:mod:`edgeresnext.limits`)."""
    accepted = f"(accepted: {range_text(low, high)})"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {shown(text)} {accepted}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value} {accepted}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:,}, got {shown(value)} {accepted}")
        return value

    parse.__name__ = "integer"
    parse.bounds = (low, high)  # type: ignore[attr-defined]  # read by the convention test
    parse.accepted = range_text(low, high)  # type: ignore[attr-defined]  # said in --help
    return parse


def float_in(low: float, high: float, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number > ``low`` (>= with ``inclusive``) and <= ``high``."""
    import math

    symbol = ">=" if inclusive else ">"
    accepted = f"(accepted: {symbol} {low:g} and <= {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a number {symbol} {low:g}, got {shown(text)} {accepted}"
            ) from None
        if not math.isfinite(value) or (value < low if inclusive else value <= low):
            raise argparse.ArgumentTypeError(f"must be a number {symbol} {low:g}, got {text} {accepted}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text} {accepted}")
        return value

    parse.__name__ = "number"
    parse.bounds = (low, high)  # type: ignore[attr-defined]
    parse.accepted = f"{symbol} {low:g} and <= {high:g}"  # type: ignore[attr-defined]
    return parse


def add_model_flag(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """``--model NAME``: the registered model (see ``edgeresnext inspect --models``), into ``args.model``. One
    name on every command; ``--arch``, its older name, still works and is left out of ``--help``."""
    p.add_argument("--model", default=default, metavar="NAME", help=help)
    p.add_argument("--arch", dest="model", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


# What a command says on stderr when it exits 3 (edgeresnext.errors.EXIT_UNPROVEN).
UNPROVEN_LINE = (
    "NOT PROVEN: every gate passed on its measured value, but at least one could not be proven by these images "
    "(exit code 3; more images prove it, `gates.unproven: fail` makes it exit 1, a script that accepts it adds "
    "`|| [ $? -eq 3 ]`)"
)


def is_rank0() -> bool:
    """Under torchrun only rank 0 prints results (every rank runs the same command)."""
    return os.environ.get("RANK", "0") == "0"


# Flags that set a target key: (argparse dest, the flag as typed, dotted target key, value for a store_true flag).
# Every command reads its overrides through _target_from_args, so a bad value is reported against the flag the
# user typed (`--subset-size must be >= 1, got 0`), never against the target file.
TargetFlag = tuple[str, str, str, object]
BUILD_FLAGS: tuple[TargetFlag, ...] = (
    ("model", "--model", "model.arch", None),
    ("checkpoint", "--checkpoint", "model.checkpoint", None),
    ("data", "--data", "data.dataset", None),
    ("calib", "--calib", "quant.calib_dir", None),
    ("labels", "--labels", "model.class_names", None),
)
VALIDATE_FLAGS: tuple[TargetFlag, ...] = (
    ("data", "--data", "data.dataset", None),
    ("limit", "--limit", "data.limit", None),
    ("runs", "--runs", "validate.latency_runs", None),
    ("warmup", "--warmup", "validate.warmup_runs", None),
)
QUANTIZE_FLAGS: tuple[TargetFlag, ...] = (
    ("checkpoint", "CHECKPOINT", "model.checkpoint", None),
    ("model", "--model", "model.arch", None),
    ("data", "--data", "data.dataset", None),
    ("on_bad_image", "--on-bad-image", "data.on_bad_image", None),
    ("limit_train", "--limit-train", "quant.qat_train_limit", None),
    ("method", "--method", "quant.method", None),
    ("calib", "--calib", "quant.calib_dir", None),
    ("subset_size", "--subset-size", "quant.subset_size", None),
    ("range_estimator", "--range-estimator", "quant.range_estimator", None),
    ("placement", "--placement", "quant.placement", None),
    ("epochs", "--epochs", "quant.qat_epochs", None),
    ("per_tensor", "--per-tensor", "quant.per_channel", False),
    ("bias_correction", "--bias-correction", "quant.bias_correction", True),
    ("no_bias_correction", "--no-bias-correction", "quant.bias_correction", False),
)


def target_from_args(args: argparse.Namespace, flags: Sequence[TargetFlag], path: Path | None = None, **extra):
    """The target named by ``--target`` (or the file ``path``) with the command-line overrides in ``flags``.

    ``extra``: further dotted-key overrides the command computes (named by their flag in ``flags`` too).
    Without a target file (``quantize`` alone) the defaults of a generic ONNX Runtime target are used.
    """
    from edgeresnext.config import apply_overrides, find_target, read_target_file, target_from_dict

    overrides: dict[str, object] = {}
    named: dict[str, str] = {}
    for dest, flag, key, constant in flags:
        value = getattr(args, dest, None)
        if constant is not None:
            value = constant if value else None
        if value is not None:
            overrides[key] = value
            named[key] = flag
    overrides.update({key: value for key, value in extra.items() if value is not None})
    _check_path_flags(overrides, named)
    if path is None and getattr(args, "target", None):
        path = find_target(args.target, getattr(args, "targets_dir", "targets"))
    if path is None:
        data, source = {"name": "quantize", "backend": "onnxruntime"}, "<command line>"
    else:
        data, source = read_target_file(path), str(path)
    return target_from_dict(apply_overrides(data, overrides, source), source, named)


def _check_path_flags(overrides: dict[str, object], named: dict[str, str]) -> None:
    """A file or folder given on the command line that is not there is the flag's fault: say so before any work."""
    from edgeresnext.data import DATASETS
    from edgeresnext.errors import ConfigError

    expected = {
        "quant.calib_dir": "an image folder",
        "model.checkpoint": "a checkpoint file",
        "model.class_names": "a labels file (one class name per line)",
        "data.dataset": None,
    }
    for key, what in expected.items():
        value = overrides.get(key)
        if key not in named or not isinstance(value, str) or value.startswith("shipped:") or value in DATASETS:
            continue
        if not Path(value).exists():
            accepted = what or f"one of {', '.join(DATASETS)} or an image folder"
            raise ConfigError(f"{named[key]} {value}: no such file or folder; expected {accepted}")


def check_output(value: str | os.PathLike[str], flag: str, folder: bool = True) -> Path:
    """``value`` (given as ``flag``) checked as a place this command may write, before any work: a folder (or, with
    ``folder=False``, a file) that exists as one or can be made, each name short enough for the file system, its
    nearest existing parent a writable folder. Anything else is one :class:`ConfigError` naming the flag and what
    is wrong (never a traceback after work was done and half of it left)."""
    from edgeresnext.errors import ConfigError

    path = Path(value)
    kind = "a folder" if folder else "a file"
    where = f"{flag} {shown(str(value))}"
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > _name_max(path):
            raise ConfigError(f"{where}: the name {shown(part)} is {size} bytes, over the file system's limit")
    try:
        if path.exists() or path.is_symlink():
            if folder and not path.is_dir():
                raise ConfigError(f"{where}: not a folder; {flag} takes a folder to write into")
            if not folder and path.is_dir():
                raise ConfigError(f"{where}: a folder; {flag} takes a file to write")
        parent = next(p for p in (path if folder else path.parent, *path.parents) if p.exists() or p.is_symlink())
        if not parent.is_dir():
            raise ConfigError(f"{where}: {parent} is not a folder, so {kind} cannot be made below it")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{where}: {parent} is not writable (read-only or no permission); give another {flag}")
    except OSError as err:  # a link loop, a permission on the way
        raise ConfigError(f"{where}: not usable ({err.strerror or err})") from err
    return path


def _name_max(path: Path) -> int:
    """The longest file name (bytes) on the file system holding ``path``'s nearest existing parent (255 if unknown)."""
    for parent in (path, *path.parents):
        try:
            return os.pathconf(parent, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255
