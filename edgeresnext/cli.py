"""The ``edgeresnext`` command line.

Each command is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args) -> int``; heavy modules are
imported inside ``_run_*`` so ``edgeresnext --help`` stays instant. Our errors become one line on stderr
and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from edgeresnext import __version__
from edgeresnext.errors import EdgeResNeXtError


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line naming the flag (exit 2), like our own errors, without the usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``low`` (the message names what is accepted; argparse adds the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_above(low: float, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number > ``low`` (>= with ``inclusive``)."""
    import math

    symbol = ">=" if inclusive else ">"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {symbol} {low:g}, got {text!r}") from None
        if not math.isfinite(value) or (value < low if inclusive else value <= low):
            raise argparse.ArgumentTypeError(f"must be a number {symbol} {low:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


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

    _launch_torchrun_if_asked(args)
    from edgeresnext.train import fit

    recipe = "edgeresnext train " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else None
    config = TrainConfig(
        arch=args.arch,
        dataset=args.dataset,
        data_root=args.data_root,
        out_dir=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        threads=args.threads,
        resume=not args.no_resume,
        progress=not args.quiet,
        limit_train=args.limit_train,
        recipe=recipe,
        limit_test=args.limit_test,
        sync_bn=args.sync_bn,
        workers=args.workers,
        device=args.device,
        augment=not args.no_augment,
        stop_after=args.stop_after_epoch,
    )
    final = fit(config)
    if not _is_rank0():
        return 0
    if final.suffix == ".pt":
        print(f"stopped after epoch {args.stop_after_epoch}/{config.epochs}; resume with the same command -> {final}")
        return 0
    from edgeresnext.models import read_checkpoint

    meta = read_checkpoint(final).meta
    print(f"test top-1 {meta.metrics['test_top1']:.4f}  ({meta.metrics['train_seconds']:.0f} s training)  -> {final}")
    return 0


def _is_rank0() -> bool:
    """Under torchrun only rank 0 prints results (every rank runs the same command)."""
    import os

    return os.environ.get("RANK", "0") == "0"


# Launcher options that only the outer `edgeresnext ... --nproc N` process reads (True: takes a value).
_LAUNCHER_OPTIONS = {"--nproc": True, "--nnodes": True, "--node-rank": True, "--rdzv-endpoint": True, "--rdzv-id": True}


def _launch_torchrun_if_asked(args: argparse.Namespace) -> None:
    """With ``--nproc N`` (or ``--nnodes``) outside torchrun: replace this process with torchrun running the same
    command once per process. Inside torchrun (RANK/WORLD_SIZE set), quiet the logs of ranks other than 0."""
    from edgeresnext import distributed

    if distributed.launched_by_torchrun():
        if not _is_rank0():
            logging.getLogger().setLevel(logging.WARNING)
        return
    if args.nproc is None and args.nnodes == "1":
        return
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    command_argv = distributed.strip_launcher_options(argv, _LAUNCHER_OPTIONS)
    distributed.exec_torchrun(
        distributed.torchrun_argv(
            args.nproc or 1,
            command_argv,
            nnodes=args.nnodes,
            node_rank=args.node_rank,
            rdzv_endpoint=args.rdzv_endpoint,
            rdzv_id=args.rdzv_id,
        )
    )


def _add_distributed_options(p: argparse.ArgumentParser, training: bool = True) -> None:
    """--nproc and torchrun's multi-node options (also usable as `torchrun ... -m edgeresnext.cli <command>`);
    ``training``: also --sync-bn, --workers and --device (the FP32 training loop)."""
    g = p.add_argument_group("distributed (torchrun/DDP; the batch size is the global batch)")
    g.add_argument(
        "--nproc",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="launch N processes on this node with torchrun (DDP: gloo on CPU, nccl on GPU)",
    )
    g.add_argument("--nnodes", default="1", help="nodes in the job (torchrun --nnodes; default 1)")
    g.add_argument("--node-rank", type=int_at_least(0), default=None, help="this node's rank (torchrun --node-rank)")
    g.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT", help="node 0's address for a multi-node job")
    g.add_argument("--rdzv-id", default=None, help="job id shared by all nodes (default edgeresnext)")
    if not training:
        return
    g.add_argument("--sync-bn", action="store_true", help="BatchNorm statistics over the global batch")
    g.add_argument(
        "--workers", type=int_at_least(0), default=None, help="data loader worker processes for image folders"
    )
    g.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")


@command("train")
def _add_train(sub: argparse._SubParsersAction) -> None:
    from edgeresnext.config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a ResNeXt (FP32) with checkpoints every epoch and resume")
    p.add_argument(
        "--arch", default=d.arch, help=f"registered arch (default {d.arch}; see `edgeresnext inspect --archs`)"
    )
    p.add_argument("--dataset", default=d.dataset, help="fashion-mnist | cifar10 | path to an image folder")
    p.add_argument("--data-root", default=None, help="where the dataset files are (default: search the usual places)")
    p.add_argument("--out", default=d.out_dir, help=f"run folder (default {d.out_dir})")
    p.add_argument("--epochs", type=int_at_least(1), default=d.epochs)
    p.add_argument("--batch-size", type=int_at_least(1), default=d.batch_size)
    p.add_argument("--lr", type=float_above(0), default=d.lr, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float_above(0, inclusive=True), default=d.weight_decay)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument(
        "--limit-train", type=int_at_least(1), default=None, help="train on the first N images only (smoke runs)"
    )
    p.add_argument("--no-resume", action="store_true", help="start over even if the run folder has last.pt")
    p.add_argument("--limit-test", type=int_at_least(1), default=None, help="evaluate on the first N test images only")
    p.add_argument("--no-augment", action="store_true", help="no random crop/flip (deterministic batches)")
    p.add_argument(
        "--stop-after-epoch",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="end after epoch N of the schedule (time-limited jobs); the same command resumes",
    )
    _add_distributed_options(p)


# --------------------------------------------------------------------------------------------- inspect
def _run_inspect(args: argparse.Namespace) -> int:
    if args.archs or not args.checkpoint:
        from edgeresnext.models import ARCHS

        for name, config in sorted(ARCHS.items()):
            print(
                f"{name:20s} stem={config.stem:8s} layers={config.layers} groups={config.groups} "
                f"channels/group={config.group_channels()}"
            )
        return 0
    import json

    from edgeresnext.models import load_checkpoint
    from edgeresnext.models.shipped import resolve_checkpoint

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

    if args.fetch_only:
        from edgeresnext.data.fashion_mnist import ensure_fashion_mnist

        if args.dataset != "fashion-mnist":
            from edgeresnext.errors import ConfigError

            raise ConfigError(f"--fetch-only sets up Fashion-MNIST; --dataset {args.dataset!r} is not fetched")
        print(f"Fashion-MNIST: {ensure_fashion_mnist(install=not args.no_install)}")
        return 0
    written = write_calibration_set(
        args.out,
        dataset=args.dataset,
        root=args.data_root,
        count=args.count,
        seed=args.seed,
        split=args.split,
        install=not args.no_install,
    )
    print(f"wrote {written.count} calibration images ({written.per_class} per class) to {written.folder}")
    return 0


@command("data")
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="fill calib_data/ with a class-balanced calibration set")
    p.add_argument("--out", default="calib_data")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", default="train", help="split to sample from (default train: never the test set)")
    p.add_argument("--count", type=int_at_least(1), default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fetch-only",
        action="store_true",
        help="only make sure Fashion-MNIST is on this machine (apt-get as root/sudo, else download); no images",
    )
    p.add_argument(
        "--no-install", action="store_true", help="never run apt-get (also EDGERESNEXT_NO_INSTALL=1); download only"
    )


# --------------------------------------------------------------------------------------------- target flags
# Flags that set a target key: (argparse dest, the flag as typed, dotted target key, value for a store_true flag).
# Every command reads its overrides through _target_from_args, so a bad value is reported against the flag the
# user typed (`--subset-size must be >= 1, got 0`), never against the target file.
TargetFlag = tuple[str, str, str, object]
_BUILD_FLAGS: tuple[TargetFlag, ...] = (
    ("model", "--model", "model.arch", None),
    ("checkpoint", "--checkpoint", "model.checkpoint", None),
    ("data", "--data", "data.dataset", None),
    ("calib", "--calib", "quant.calib_dir", None),
)
_VALIDATE_FLAGS: tuple[TargetFlag, ...] = (
    ("data", "--data", "data.dataset", None),
    ("limit", "--limit", "data.limit", None),
    ("runs", "--runs", "validate.latency_runs", None),
    ("warmup", "--warmup", "validate.warmup_runs", None),
)
_QUANTIZE_FLAGS: tuple[TargetFlag, ...] = (
    ("method", "--method", "quant.method", None),
    ("calib", "--calib", "quant.calib_dir", None),
    ("subset_size", "--subset-size", "quant.subset_size", None),
    ("range_estimator", "--range-estimator", "quant.range_estimator", None),
    ("placement", "--placement", "quant.placement", None),
    ("epochs", "--epochs", "quant.qat_epochs", None),
    ("per_tensor", "--per-tensor", "quant.per_channel", False),
    ("bias_correction", "--bias-correction", "quant.fast_bias_correction", True),
    ("no_bias_correction", "--no-bias-correction", "quant.fast_bias_correction", False),
)


def _target_from_args(args: argparse.Namespace, flags: Sequence[TargetFlag], path: Path | None = None, **extra):
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

    expected = {"quant.calib_dir": "an image folder", "model.checkpoint": "a checkpoint file", "data.dataset": None}
    for key, what in expected.items():
        value = overrides.get(key)
        if key not in named or not isinstance(value, str) or value.startswith("shipped:") or value in DATASETS:
            continue
        if not Path(value).exists():
            accepted = what or f"one of {', '.join(DATASETS)} or an image folder"
            raise ConfigError(f"{named[key]} {value}: no such file or folder; expected {accepted}")


# --------------------------------------------------------------------------------------------- build
def _run_build(args: argparse.Namespace) -> int:
    from edgeresnext.pipeline import build

    target = _target_from_args(args, _BUILD_FLAGS)
    summary = build(target, out_root=args.out, progress=not args.quiet, on_event=print, install=True)
    print(summary.render())
    return 0 if summary.ok else 1


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="override model.arch (MODEL=...)")
    p.add_argument("--checkpoint", default=None, help="override model.checkpoint (CHECKPOINT=...)")
    p.add_argument("--data", default=None, help="override data.dataset: a dataset name or image folder (DATA=...)")
    p.add_argument("--calib", default=None, help="override quant.calib_dir (CALIB=...)")
    p.add_argument("--out", default="build", help="build root (default build/)")
    p.add_argument("--targets-dir", default="targets", help="where target names are looked up (default targets/)")


@command("build")
def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="run the whole pipeline for one target into build/<target>/")
    p.add_argument("--target", required=True, help="target name (targets/<name>.yaml) or path to a YAML file")
    _add_build_options(p)


def _run_build_all(args: argparse.Namespace) -> int:
    from edgeresnext.pipeline import build_all

    paths = sorted(p for p in Path(args.targets_dir).glob("*.yaml") if not p.name.startswith("_"))
    targets = [_target_from_args(args, _BUILD_FLAGS, path=p) for p in paths]
    table, ok = build_all(targets, out_root=args.out, progress=not args.quiet, on_event=print, install=True)
    print(table)
    return 0 if ok else 1


@command("build-all")
def _add_build_all(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-all", help="build every target in targets/ and write one comparison table")
    _add_build_options(p)


# --------------------------------------------------------------------------------------------- validate
def _run_validate(args: argparse.Namespace) -> int:
    from edgeresnext.report import summary_rows
    from edgeresnext.validate import validate_target

    target = _target_from_args(args, _VALIDATE_FLAGS)
    report, paths = validate_target(
        target,
        build_root=args.build,
        artifact_specs=args.artifact or (),
        out_dir=args.out,
        checkpoint=args.checkpoint,
        primary=args.primary,
        threads=args.threads,
        command="edgeresnext " + " ".join(sys.argv[1:]),
        progress=not args.quiet,
        html_report=not args.no_html,
    )
    rows = summary_rows(report)
    keep = [0, 2, 3, 5, 6, 7, 9, 10, 11, 12, 14]  # the columns that fit a terminal
    widths = [max(len(row[i]) for row in rows) for i in keep]
    for row in rows:
        print("  ".join(row[i].ljust(w) for i, w in zip(keep, widths, strict=True)).rstrip())
    for note in report["notes"]:
        print(f"note: {note}")
    for gate in report["gates"]:
        print(("PASS " if gate["passed"] else "FAIL ") + gate["message"])
    print(f"report: {', '.join(str(p) for p in paths.values())}")
    if not report["passed"]:
        failed = "; ".join(g["message"] for g in report["gates"] if not g["passed"])
        print(f"edgeresnext validate: gate failed: {failed}", file=sys.stderr)
        return 1
    return 0


@command("validate")
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="validate every artifact of a build against FP32; write the report")
    p.add_argument("--target", required=True, help="target name (targets/<name>.yaml) or path to a YAML file")
    p.add_argument("--build", default="build", help="build root holding <target>/ (default build/)")
    p.add_argument(
        "--artifact",
        action="append",
        metavar="NAME=[BACKEND:]PATH",
        help="validate this file instead of the build's artifacts (repeatable); BACKEND is onnxruntime, "
        "openvino, tensorrt or pytorch, guessed from the suffix when left out",
    )
    p.add_argument("--primary", default=None, help="artifact the gates apply to (default: the target's deployed one)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="FP32 reference (default: the build's model stage, else the target's checkpoint)",
    )
    p.add_argument("--data", default=None, help="override data.dataset (a dataset name or a labelled image folder)")
    p.add_argument("--limit", type=int, default=None, help="validate on the first N images only")
    p.add_argument(
        "--runs", type=int, default=None, help="timed latency runs (default: the target's validate.latency_runs)"
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up runs (default: the target's)")
    p.add_argument(
        "--threads",
        type=int_at_least(1),
        default=None,
        help="threads for every runtime (default: the target's, else all usable cores)",
    )
    p.add_argument("--out", default=None, help="report folder (default build/<target>/report)")
    p.add_argument("--no-html", action="store_true", help="skip report.html (no matplotlib needed)")


# --------------------------------------------------------------------------------------------- compare
def _run_compare(args: argparse.Namespace) -> int:
    from edgeresnext.config import DataSpec
    from edgeresnext.data.validation import load_validation_data
    from edgeresnext.models import read_checkpoint
    from edgeresnext.models.shipped import resolve_checkpoint
    from edgeresnext.validate import compare_artifacts

    meta = read_checkpoint(resolve_checkpoint(args.checkpoint)).meta
    if meta is None:
        from edgeresnext.errors import CheckpointError

        raise CheckpointError(f"{args.checkpoint}: no metadata (preprocessing, classes) to prepare the inputs with")
    spec = DataSpec(dataset=args.data, split=args.split, limit=args.limit)
    data = load_validation_data(spec, meta.preprocess, meta.class_names)
    result = compare_artifacts(args.a, args.b, data, atol=args.atol, rtol=args.rtol, worst=args.worst)
    names = result["class_names"]
    print(f"compare {args.a} vs {args.b} (reference) on {result['data']} ({result['images']} images)")
    print(
        f"  max abs error {result['max_abs_error']:.4g}  mean {result['mean_abs_error']:.4g}  "
        f"median {result['median_abs_error']:.4g}  max rel {result['max_rel_error']:.4g}"
    )
    print(
        f"  cosine mean {result['cosine_mean']:.6f}  min {result['cosine_min']:.6f}  top-1 agreement "
        f"{result['agreement'] * 100:.2f} %  (top-1 a {result['top1_a'] * 100:.2f} %, "
        f"b {result['top1_b'] * 100:.2f} %)"
    )
    print(
        f"  within atol={args.atol:g} rtol={args.rtol:g}: {result['elements_within_tolerance'] * 100:.2f} % of "
        f"logits, {result['images_within_tolerance'] * 100:.2f} % of images -> "
        f"{'PASS' if result['passed'] else 'FAIL'}"
    )
    print(f"  worst {len(result['worst'])} images:")
    for row in result["worst"]:
        print(
            f"    #{row['index']:<6d} label {names[row['label']]:<12s} a: {names[row['pred_a']]:<12s} "
            f"b: {names[row['pred_b']]:<12s} max abs {row['max_abs_error']:.4g}  cosine {row['cosine']:.6f}"
        )
    if args.json:
        from edgeresnext.atomic import write_json_atomic

        write_json_atomic(args.json, result)
        print(f"  written to {args.json}")
    return 0 if result["passed"] else 1


@command("compare")
def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare two artifacts' outputs on the same inputs (b is the reference)")
    p.add_argument("a", help="[BACKEND:]PATH of an .onnx, .xml, .engine, .safetensors or .pt")
    p.add_argument("b", help="the reference, same forms as a")
    p.add_argument(
        "--checkpoint",
        default="shipped:fashion-mnist",
        help="checkpoint whose preprocessing and class names prepare the inputs (default shipped)",
    )
    p.add_argument("--data", default="fashion-mnist", help="dataset name or labelled image folder")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int_at_least(1), default=512, help="number of images (default 512)")
    p.add_argument(
        "--atol", type=float_above(0, inclusive=True), default=1e-3, help="absolute tolerance per logit (default 1e-3)"
    )
    p.add_argument(
        "--rtol", type=float_above(0, inclusive=True), default=1e-3, help="relative tolerance per logit (default 1e-3)"
    )
    p.add_argument("--worst", type=int_at_least(0), default=10, help="how many worst images to list")
    p.add_argument("--json", default=None, help="also write the comparison as JSON to this file")


# --------------------------------------------------------------------------------------------- compile
def _run_compile(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.on_device:
        from edgeresnext.backends.tensorrt import engine_from_kit

        artifact = engine_from_kit(args.on_device)
        info = artifact.info
        print(
            f"engine: {artifact.path}  ({info['build_mode'].replace('_', ' ')}, TensorRT {info['tensorrt_version']}, "
            f"{info['gpu_name']} SM {info['gpu_sm']}, built in {info['build_seconds']} s)"
        )
        print(f"build record: {artifact.path}.json")
        return 0
    from edgeresnext.backends import get_backend

    target = _target_from_args(args, ())
    out = Path(args.out) if args.out else Path(args.build) / target.name / "compile"
    onnx_path = Path(args.onnx) if args.onnx else _onnx_for_target(target, Path(args.build), progress=not args.quiet)
    artifact = get_backend(target.backend).compile(onnx_path, target, out)
    artifact.save(out / "artifact.json")
    print(f"{target.name}: {artifact.backend} {artifact.precision} {artifact.kind} from {onnx_path}")
    for path in artifact.files:
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        print(f"  {path}  {size / 1e6:.2f} MB")
    if artifact.kind == "kit":
        print(f"no engine built here: {artifact.info['reason']}")
        print("build it on the device (copy the folder there first):")
        for line in artifact.info.get("device_commands", []):
            print(f"  {line}")
    return 0


def _onnx_for_target(target, build_root, progress: bool):
    """The ONNX the target compiles from, made by the cached pipeline stages: FP32, or the linted Q/DQ INT8."""
    from edgeresnext.pipeline import stage_export, stage_lint, stage_model, stage_quantize

    root = build_root / target.name
    model_stage = stage_model(target, root)
    export = stage_export(target, root, model_stage)
    if target.precision != "int8":
        return export.folder / "model_fp32.onnx"
    quantized = stage_quantize(target, root, model_stage, export, progress)
    qdq_onnx = quantized.folder / "model_int8.onnx"
    stage_lint(target, root, qdq_onnx)
    return qdq_onnx


@command("compile")
def _add_compile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile", help="turn the (Q/DQ) ONNX into what one target runs; or build a TensorRT kit on the device"
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--target", help="target name (targets/<name>.yaml) or path to a YAML file")
    what.add_argument(
        "--on-device",
        metavar="KIT",
        help="build the engine of a TensorRT build kit here (on the Jetson/GPU host, with its TensorRT)",
    )
    p.add_argument(
        "--onnx",
        default=None,
        help="ONNX to compile (default: made by the cached model/export/quantize stages under --build)",
    )
    p.add_argument("--out", default=None, help="output folder (default build/<target>/compile)")
    p.add_argument("--build", default="build", help="build root for the stages that make the ONNX (default build/)")


# --------------------------------------------------------------------------------------------- bundle
def _run_bundle(args: argparse.Namespace) -> int:
    if args.bundle_command == "extract":
        from edgeresnext.bundle import extract_bundle

        manifest = extract_bundle(args.archive, args.dest)
        print(f"OK {args.dest}: extracted from {args.archive}, {len(manifest['files'])} files, sha256 verified")
        return 0
    if args.bundle_command == "verify":
        from edgeresnext.bundle import verify_bundle

        manifest = verify_bundle(args.bundle)
        backend = manifest["backend"]
        print(
            f"OK {args.bundle}: {manifest['model']['arch']} {manifest['precision']} for {backend['name']} "
            f"{backend['version']} ({manifest['device']['target_device']}), {len(manifest['files'])} files, "
            "sha256 verified"
        )
        return 0
    import json

    from edgeresnext.runtime import load_bundle

    classifier = load_bundle(args.bundle, backend=args.backend)
    results = classifier.predict(list(args.images), top_k=args.top_k)
    for image, result in zip(args.images, results, strict=True):
        if args.json:
            print(json.dumps({"image": image, **result.to_dict()}))
            continue
        print(image)
        for rank, (index, label, score) in enumerate(
            zip(result.indices, result.labels, result.scores, strict=True), start=1
        ):
            print(f"  {rank}. {label:20s} {score:.6f}  (class {index})")
    return 0


@command("bundle")
def _add_bundle(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="check a bundle (manifest + sha256) or classify images with it")
    actions = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check manifest.json and the sha256 of every file; exit 2 if not")
    verify.add_argument("bundle", help="bundle folder, e.g. build/cpu/bundle")
    extract = actions.add_parser(
        "extract",
        help="unpack a .tar[.gz]/.zip bundle safely (no paths leaving the "
        "folder, no links, size limits), then verify it",
    )
    extract.add_argument("archive", help="bundle archive, e.g. cpu-bundle.tar.gz")
    extract.add_argument("dest", help="new (or empty) folder to unpack into")
    predict = actions.add_parser("predict", help="top-k classes of images with the bundle's runtime")
    predict.add_argument("bundle", help="bundle folder, e.g. build/cpu/bundle")
    predict.add_argument("images", nargs="+", help="image files (PNG, JPEG, PGM/PPM, ...)")
    predict.add_argument("--top-k", type=int_at_least(1), default=5)
    predict.add_argument("--backend", default=None, help="which of the bundle's artifacts to run (default: primary)")
    predict.add_argument("--json", action="store_true", help="one JSON line per image")


# --------------------------------------------------------------------------------------------- export
def _load_cli_model(args: argparse.Namespace):
    from edgeresnext.models import load_checkpoint
    from edgeresnext.models.shipped import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(args.checkpoint), arch=args.arch)


def _parity_batch(model, count: int):
    import numpy as np

    from edgeresnext.data import load_dataset

    data = load_dataset(model.meta.dataset or "fashion-mnist", split="test")
    return np.stack([model.meta.preprocess.image_to_array(image) for image in data.images[:count]])


def _run_export(args: argparse.Namespace) -> int:
    from edgeresnext.export import assert_parity, onnx_from_torch

    model = _load_cli_model(args)
    path = onnx_from_torch(model, args.out, dynamic_batch=not args.static_batch, opset=args.opset)
    message = f"wrote {path} (opset {args.opset}, checker and shape inference pass)"
    if args.parity_images:
        error = assert_parity(model, path, _parity_batch(model, args.parity_images), tolerance=args.tolerance)
        message += f"; max abs error vs PyTorch {error:.2e} on {args.parity_images} test images"
    print(message)
    return 0


@command("export")
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the FP32 ONNX (checked, compared with PyTorch on real images)")
    p.add_argument("checkpoint", nargs="?", default="shipped:fashion-mnist", help="checkpoint path or shipped:<name>")
    p.add_argument("--arch", default=None, help="arch of a bare state dict")
    p.add_argument("--out", default="model_fp32.onnx")
    p.add_argument("--opset", type=int_at_least(13), default=17)
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to 1 (default: dynamic)")
    p.add_argument(
        "--parity-images", type=int_at_least(0), default=64, help="test images for the PyTorch comparison (0: skip)"
    )
    p.add_argument("--tolerance", type=float_above(0), default=1e-3, help="max abs logit error accepted (default 1e-3)")


# --------------------------------------------------------------------------------------------- quantize
def _run_quantize(args: argparse.Namespace) -> int:
    if args.method == "qat":
        _launch_torchrun_if_asked(args)
    elif args.nproc is not None:
        from edgeresnext.errors import ConfigError

        raise ConfigError("--nproc runs QAT fine-tuning under torchrun; PTQ needs no training (use --method qat)")
    from edgeresnext.data.calibration import load_calibration_images

    if args.bias_correction and args.no_bias_correction:
        from edgeresnext.errors import ConfigError

        raise ConfigError("--bias-correction and --no-bias-correction contradict each other; give one")
    spec = _target_from_args(args, _QUANTIZE_FLAGS).quant
    if args.ignore:
        spec.ignored_scope = list(spec.ignored_scope) + args.ignore
    model = _load_cli_model(args)
    calib = load_calibration_images(spec.calib_dir, model.meta.preprocess, spec.subset_size, args.on_bad_image)
    if spec.method == "qat":
        from edgeresnext.quantize.qat import quantize_qat

        out = quantize_qat(model, calib, spec, args.out, progress=not args.quiet, train_limit=args.limit_train)
        if not _is_rank0():
            return 0
    elif spec.method == "ptq":
        from edgeresnext.quantize.ptq import quantize_ptq

        out = quantize_ptq(model, calib, spec, args.out)
    else:
        from edgeresnext.errors import ConfigError

        raise ConfigError("--method none makes no INT8 model; use ptq or qat")
    print(
        f"wrote {out} ({spec.method}, {len(calib)} calibration images from {spec.calib_dir}, placement "
        f"{spec.placement}; TensorRT lint clean)"
    )
    if args.sensitivity:
        from edgeresnext.quantize.sensitivity import layer_sensitivity

        report = layer_sensitivity(out, calib[:64], args.sensitivity)
        print(f"wrote {args.sensitivity}: most sensitive {', '.join(r['layer'] for r in report['layers'][:3])}")
    return 0


@command("quantize")
def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="INT8 Q/DQ ONNX by PTQ or QAT (NNCF), TensorRT-lint clean")
    p.add_argument("checkpoint", nargs="?", default="shipped:fashion-mnist", help="checkpoint path or shipped:<name>")
    p.add_argument("--arch", default=None, help="arch of a bare state dict")
    p.add_argument("--target", default=None, help="take quant settings from targets/<name>.yaml (flags override)")
    p.add_argument("--method", choices=["ptq", "qat"], default=None)
    p.add_argument("--calib", default=None, help="calibration image folder (default calib_data)")
    p.add_argument("--subset-size", type=int, default=None, help="calibration images (default 300)")
    p.add_argument("--range-estimator", choices=["minmax", "mean_minmax", "percentile", "histogram"], default=None)
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (TensorRT lint will refuse)")
    p.add_argument("--no-bias-correction", action="store_true", help="skip NNCF's fast bias correction (default)")
    p.add_argument("--bias-correction", action="store_true", help="apply NNCF's fast bias correction")
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="LAYER",
        help="leave a layer in float (torch module name such as layer1.0.conv1, or ONNX node name)",
    )
    p.add_argument("--placement", choices=["residual", "nncf_default"], default=None)
    p.add_argument("--epochs", type=int, default=None, help="QAT fine-tuning epochs")
    p.add_argument("--limit-train", type=int_at_least(1), default=None, help="QAT on the first N training images only")
    _add_distributed_options(p, training=False)
    p.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail")
    p.add_argument("--sensitivity", default=None, metavar="JSON", help="also write per-layer sensitivity here")
    p.add_argument("--out", default="model_int8.onnx")


# --------------------------------------------------------------------------------------------- lint
def _run_lint(args: argparse.Namespace) -> int:
    from edgeresnext.lint import lint_onnx

    found = lint_onnx(args.model, rules=args.rules)
    for violation in found:
        print(f"{violation.severity}: {violation}")
    errors = sum(v.severity == "error" for v in found)
    print(f"{args.model}: {errors} error(s), {len(found) - errors} warning(s) against the {args.rules} rules")
    return 1 if errors else 0


@command("lint")
def _add_lint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lint", help="check a Q/DQ ONNX against TensorRT's rules (exit 1 on violations)")
    p.add_argument("model", help="ONNX file")
    p.add_argument("--for", dest="rules", choices=["tensorrt"], default="tensorrt")


# --------------------------------------------------------------------------------------------- main
def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the launcher re-runs the same command per process
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


if __name__ == "__main__":
    sys.exit(main())
