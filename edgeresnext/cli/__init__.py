"""The ``edgeresnext`` command line.

Each command is a pair ``add_<name>(subparsers)`` / ``run_<name>(args) -> int`` in one of this package's modules,
listed in :data:`COMMANDS`; heavy modules are imported inside ``run_*`` so ``edgeresnext --help`` stays instant.
Our errors become one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Sequence

from edgeresnext import __version__
from edgeresnext.cli import build, bundle, model, report, train
from edgeresnext.cli.common import Parser
from edgeresnext.errors import EdgeResNeXtError, printable

Add = Callable[[argparse._SubParsersAction], None]
Run = Callable[[argparse.Namespace], int]
# Every command, in the order --help lists them.
COMMANDS: dict[str, tuple[Add, Run]] = {
    **train.COMMANDS,
    **model.COMMANDS,
    **build.COMMANDS,
    **bundle.COMMANDS,
    **report.COMMANDS,
}


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edgeresnext",
        description="ResNeXt from PyTorch to edge devices: train, quantize (INT8 PTQ/QAT), export ONNX, compile "
        "(OpenVINO, TensorRT, ONNX Runtime), validate against FP32, bundle.",
    )
    parser.add_argument("--version", action="version", version=f"edgeresnext {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, _run in COMMANDS.values():
        add(sub)
    _say_ranges(parser)
    return parser


def _say_ranges(parser: argparse.ArgumentParser) -> None:
    """Each bounded number's accepted range at the end of its --help line (and so in the CLI reference)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _say_ranges(command)
        accepted = getattr(action.type, "accepted", None)
        if accepted is not None and action.help != argparse.SUPPRESS:
            action.help = f"{action.help or ''} ({accepted})".lstrip()


class _PrintableFormatter(logging.Formatter):
    """Log lines through :func:`~edgeresnext.errors.printable`: a message naming a user's file stays one line."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


# What a user's file system answers that is the user's to fix (a read-only folder, a file where a folder is needed, a
# name too long, a link loop): one line naming the path, like our own errors. Anything else keeps its traceback.
_USER_OS_ERRORS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a file where a folder is needed",
    errno.EISDIR: "a folder where a file is needed",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "a name too long for the file system",
    errno.ELOOP: "a symbolic link loop",
}


def _os_error_line(err: OSError) -> str | None:
    """The one line for an OSError the user can fix, or None (a bug: the traceback stays)."""
    where = f"{err.filename}: " if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        # A full disk hit outside edgeresnext.atomic (a library writing on its own) is still the user's to fix.
        return f"{where}no space left on device ({err.strerror}); free space and rerun"
    if err.errno in _USER_OS_ERRORS and err.filename:
        return f"{where}{err.strerror or _USER_OS_ERRORS[err.errno]} ({_USER_OS_ERRORS[err.errno]}); check the path"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the launcher re-runs the same command per process
    if not args.command:
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    _add, run = COMMANDS[args.command]
    try:
        return run(args)
    except EdgeResNeXtError as err:
        print(f"edgeresnext {args.command}: error: {printable(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        line = _os_error_line(err)
        if line is None:
            raise
        print(f"edgeresnext {args.command}: error: {printable(line)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgeresnext {args.command}: interrupted", file=sys.stderr)
        return 130
