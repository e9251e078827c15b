"""The ``edgeresnext`` command line.

Each command is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args) -> int``; heavy modules are
imported inside ``_run_*`` so ``edgeresnext --help`` stays instant. Our errors become one line on stderr
and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from edgeresnext import __version__
from edgeresnext.errors import EdgeResNeXtError

_COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str):
    """Register ``_add``/``_run`` under ``name`` (decorates the ``_add`` function; ``_run`` is found by name)."""

    def decorator(add: Callable[[argparse._SubParsersAction], None]):
        if name in _COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        run = globals()[f"_run_{name.replace('-', '_')}"]
        _COMMANDS[name] = (add, run)
        return add

    return decorator


# --------------------------------------------------------------------------------------------- train
def _run_train(args: argparse.Namespace) -> int:
    from edgeresnext.config import TrainConfig
    from edgeresnext.train import fit

    recipe = "edgeresnext train " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else None
    config = TrainConfig(
        arch=args.arch, dataset=args.dataset, data_root=args.data_root, out_dir=args.out, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        threads=args.threads, resume=not args.no_resume, progress=not args.quiet, limit_train=args.limit_train,
        recipe=recipe,
    )
    final = fit(config)
    from edgeresnext.models import read_checkpoint

    meta = read_checkpoint(final).meta
    print(f"test top-1 {meta.metrics['test_top1']:.4f}  ({meta.metrics['train_seconds']:.0f} s training)  -> {final}")
    return 0


@command("train")
def _add_train(sub: argparse._SubParsersAction) -> None:
    from edgeresnext.config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a ResNeXt (FP32) with checkpoints every epoch and resume")
    p.add_argument("--arch", default=d.arch, help=f"registered arch (default {d.arch}; see `edgeresnext inspect --archs`)")
    p.add_argument("--dataset", default=d.dataset, help="fashion-mnist | cifar10 | path to an image folder")
    p.add_argument("--data-root", default=None, help="where the dataset files are (default: search the usual places)")
    p.add_argument("--out", default=d.out_dir, help=f"run folder (default {d.out_dir})")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--limit-train", type=int, default=None, help="train on the first N images only (smoke runs)")
    p.add_argument("--no-resume", action="store_true", help="start over even if the run folder has last.pt")


# --------------------------------------------------------------------------------------------- inspect
def _run_inspect(args: argparse.Namespace) -> int:
    if args.archs or not args.checkpoint:
        from edgeresnext.models import ARCHS

        for name, config in sorted(ARCHS.items()):
            print(f"{name:20s} stem={config.stem:8s} layers={config.layers} groups={config.groups} "
                  f"channels/group={config.group_channels()}")
        return 0
    import json

    from edgeresnext.models import load_checkpoint
    from edgeresnext.pipeline import resolve_checkpoint

    model = load_checkpoint(resolve_checkpoint(args.checkpoint), arch=args.arch)
    info = model.meta.to_dict()
    info["parameters"] = sum(p.numel() for p in model.parameters())
    print(json.dumps(info, indent=2))
    return 0


@command("inspect")
def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="list archs, or show a checkpoint's metadata")
    p.add_argument("checkpoint", nargs="?", help="checkpoint path or 'shipped:fashion-mnist'")
    p.add_argument("--arch", default=None, help="arch of a bare state dict")
    p.add_argument("--archs", action="store_true", help="list the registered archs")


# --------------------------------------------------------------------------------------------- data
def _run_data(args: argparse.Namespace) -> int:
    from edgeresnext.data.calibration import write_calibration_set

    written = write_calibration_set(args.out, dataset=args.dataset, root=args.data_root, count=args.count,
                                    seed=args.seed, split=args.split)
    print(f"wrote {written.count} calibration images ({written.per_class} per class) to {written.folder}")
    return 0


@command("data")
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="fill calib_data/ with a class-balanced calibration set")
    p.add_argument("--out", default="calib_data")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", default="train", help="split to sample from (default train: never the test set)")
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)


# --------------------------------------------------------------------------------------------- build
def _run_build(args: argparse.Namespace) -> int:
    from edgeresnext.config import find_target, load_target
    from edgeresnext.pipeline import build

    overrides = {"model.arch": args.model, "model.checkpoint": args.checkpoint, "data.dataset": args.data,
                 "quant.calib_dir": args.calib}
    target = load_target(find_target(args.target), overrides=overrides)
    summary = build(target, out_root=args.out, progress=not args.quiet)
    print(summary.render())
    return 0 if summary.ok else 1


@command("build")
def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="run the whole pipeline for one target into build/<target>/")
    p.add_argument("--target", required=True, help="target name (targets/<name>.yaml) or path to a YAML file")
    p.add_argument("--model", default=None, help="override model.arch")
    p.add_argument("--checkpoint", default=None, help="override model.checkpoint")
    p.add_argument("--data", default=None, help="override data.dataset")
    p.add_argument("--calib", default=None, help="override quant.calib_dir")
    p.add_argument("--out", default="build", help="build root (default build/)")


# --------------------------------------------------------------------------------------------- main
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeresnext",
        description="ResNeXt from PyTorch to edge devices: train, quantize (INT8 PTQ/QAT), export ONNX, compile "
                    "(OpenVINO, TensorRT, ONNX Runtime), validate against FP32, bundle.",
    )
    parser.add_argument("--version", action="version", version=f"edgeresnext {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, _run in _COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _add, run = _COMMANDS[args.command]
    try:
        return run(args)
    except EdgeResNeXtError as err:
        print(f"edgeresnext {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgeresnext {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
