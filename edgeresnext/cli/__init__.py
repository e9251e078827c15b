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
from edgeresnext.errors import EdgeResNeXtError

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the launcher re-runs the same command per process
    if not args.command:
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _add, run = COMMANDS[args.command]
    try:
        return run(args)
    except EdgeResNeXtError as err:
        print(f"edgeresnext {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # A full disk hit outside edgeresnext.atomic (a library writing on its own) is still the user's to fix.
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(
            f"edgeresnext {args.command}: error: {where}no space left on device ({err.strerror}); free space and rerun",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"edgeresnext {args.command}: interrupted", file=sys.stderr)
        return 130
