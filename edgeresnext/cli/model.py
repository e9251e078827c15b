"""Commands on one model: ``inspect`` (archs, checkpoint metadata), ``data`` (Fashion-MNIST and calibration
images), ``export`` (FP32 ONNX), ``quantize`` (INT8 Q/DQ ONNX through the build's stages) and ``lint``."""

from __future__ import annotations

import argparse

from edgeresnext.cli.common import (
    QUANTIZE_FLAGS,
    add_model_flag,
    check_output,
    float_in,
    int_in,
    is_rank0,
    target_from_args,
)
from edgeresnext.cli.train import add_distributed_options, launch_torchrun_if_asked
from edgeresnext.errors import MAX_IMAGES, MAX_OPSET, MAX_SEED, MAX_TOLERANCE


def run_inspect(args: argparse.Namespace) -> int:
    if args.models or not args.checkpoint:
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

    model = load_checkpoint(resolve_checkpoint(args.checkpoint), arch=args.model)
    info = model.meta.to_dict()
    info["parameters"] = sum(p.numel() for p in model.parameters())
    print(json.dumps(info, indent=2))
    return 0


def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="list the models, or show a checkpoint's metadata")
    p.add_argument("checkpoint", nargs="?", help="checkpoint path or 'shipped:fashion-mnist'")
    add_model_flag(p, "the model of a bare state dict")
    p.add_argument("--models", action="store_true", help="list the registered models")
    p.add_argument("--archs", dest="models", action="store_true", help=argparse.SUPPRESS)


def run_data(args: argparse.Namespace) -> int:
    from edgeresnext.data.calibration import remove_calibration_set, write_calibration_set

    if args.remove:
        removed = remove_calibration_set(check_output(args.out, "--out"))
        print(f"removed {removed} calibration images written by `edgeresnext data` from {args.out} (nothing else)")
        return 0
    if args.fetch_only:
        from edgeresnext.data.fashion_mnist import ensure_fashion_mnist

        if args.dataset != "fashion-mnist":
            from edgeresnext.errors import ConfigError

            raise ConfigError(f"--fetch-only sets up Fashion-MNIST; --dataset {args.dataset!r} is not fetched")
        print(f"Fashion-MNIST: {ensure_fashion_mnist(install=not args.no_install)}")
        return 0
    sample = {"dataset": args.dataset, "root": args.data_root, "count": args.count, "seed": args.seed}
    out = check_output(args.out, "--out")
    written = write_calibration_set(out, **sample, split=args.split, install=not args.no_install)
    print(f"wrote {written.count} calibration images ({written.per_class} per class) to {written.folder}")
    return 0


def add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="fill calib_data/ with a class-balanced calibration set")
    p.add_argument("--out", default="calib_data")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", default="train", help="split to sample from (default train: never the test set)")
    p.add_argument("--count", type=int_in(1, MAX_IMAGES), default=500)
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    p.add_argument(
        "--fetch-only",
        action="store_true",
        help="only make sure Fashion-MNIST is on this machine (apt-get as root/sudo, else download); no images",
    )
    p.add_argument(
        "--no-install", action="store_true", help="never run apt-get (also EDGERESNEXT_NO_INSTALL=1); download only"
    )
    p.add_argument(
        "--remove",
        action="store_true",
        help="remove the images this command wrote into --out (listed in its record, unchanged); nothing else",
    )


def _load_cli_model(args: argparse.Namespace):
    from edgeresnext.models import load_checkpoint
    from edgeresnext.models.shipped import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(args.checkpoint), arch=args.model)


def _parity_batch(model, count: int, checkpoint: str):
    """``count`` test images prepared with the model's preprocessing, for the PyTorch comparison."""
    import numpy as np

    from edgeresnext.data import load_dataset
    from edgeresnext.errors import CheckpointError

    preprocess = model.meta.preprocess
    if preprocess.num_channels != model.meta.in_channels:  # a bare state dict names no preprocessing
        raise CheckpointError(
            f"{checkpoint}: the model takes {model.meta.in_channels} input channel(s), but the checkpoint carries no "
            f"preprocessing for them (the default gives {preprocess.num_channels}, {preprocess.channels}), so the "
            "PyTorch comparison has no images to feed it: --parity-images 0 skips it, or export a checkpoint with "
            "metadata (edgeresnext build writes one)"
        )
    data = load_dataset(model.meta.dataset or "fashion-mnist", split="test")
    return np.stack([model.meta.preprocess.image_to_array(image) for image in data.images[:count]])


def run_export(args: argparse.Namespace) -> int:
    from edgeresnext.export import assert_parity, onnx_from_torch

    out = check_output(args.out, "--out", folder=False)
    model = _load_cli_model(args)
    batch = _parity_batch(model, args.parity_images, args.checkpoint) if args.parity_images else None
    path = onnx_from_torch(model, out, dynamic_batch=not args.static_batch, opset=args.opset)
    message = f"wrote {path} (opset {args.opset}, checker and shape inference pass)"
    if batch is not None:
        try:
            error = assert_parity(model, path, batch, tolerance=args.tolerance)
        except BaseException:
            path.unlink(missing_ok=True)  # an ONNX that failed its check is not left to look finished
            raise
        message += f"; max abs error vs PyTorch {error:.2e} on {args.parity_images} test images"
    print(message)
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the FP32 ONNX (checked, compared with PyTorch on real images)")
    p.add_argument("checkpoint", nargs="?", default="shipped:fashion-mnist", help="checkpoint path or shipped:<name>")
    add_model_flag(p, "the model of a bare state dict")
    p.add_argument("--out", default="model_fp32.onnx")
    p.add_argument("--opset", type=int_in(13, MAX_OPSET), default=17)
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to 1 (default: dynamic)")
    p.add_argument(
        "--parity-images",
        type=int_in(0, MAX_IMAGES),
        default=64,
        help="test images for the PyTorch comparison (0: skip)",
    )
    p.add_argument("--tolerance", type=float_in(0, MAX_TOLERANCE), default=1e-3, help="max abs logit error accepted")


def run_quantize(args: argparse.Namespace) -> int:
    """The build's model/export/quantize/lint stages (cached under ``--build``), then the Q/DQ file copied to
    ``--out``. Distributed QAT (``--nproc``) runs the same quantize function on every torchrun rank instead: the
    stage cache has one writer, the ranks are many."""
    from edgeresnext.errors import ConfigError

    if args.method == "qat":
        launch_torchrun_if_asked(args)
    elif args.nproc is not None:
        raise ConfigError("--nproc runs QAT fine-tuning under torchrun; PTQ needs no training (use --method qat)")
    if args.bias_correction and args.no_bias_correction:
        raise ConfigError("--bias-correction and --no-bias-correction contradict each other; give one")
    extra = {"quant.sensitivity": True if args.sensitivity else None}
    if args.ignore:
        extra["quant.ignored_scope"] = args.ignore
    target = target_from_args(args, QUANTIZE_FLAGS, **extra)
    check_output(args.out, "--out", folder=False)
    if args.sensitivity:
        check_output(args.sensitivity, "--sensitivity", folder=False)
    from edgeresnext import distributed

    if distributed.launched_by_torchrun():
        return _quantize_on_this_rank(target, args)
    from edgeresnext.backends.base import copy_file_atomic
    from edgeresnext.pipeline import build

    summary = build(
        target, out_root=check_output(args.build, "--build"), progress=not args.quiet, stop_after="lint", install=True
    )
    ctx = summary.context
    copy_file_atomic(ctx.qdq_onnx, args.out)
    quantized = summary.stage("quantize")
    spec = target.quant
    print(
        f"wrote {args.out} ({spec.method}, {quantized.info.calibration_images} calibration images from "
        f"{spec.calib_dir}, placement {spec.placement}; TensorRT lint clean; stages in {ctx.root})"
    )
    if args.sensitivity:
        copy_file_atomic(ctx.sensitivity_json, args.sensitivity)
        print(f"wrote {args.sensitivity}: most sensitive {', '.join(quantized.info.most_sensitive or [])}")
    for note in summary.notes:
        print(f"note: {note}")
    return 0


def _quantize_on_this_rank(target, args: argparse.Namespace) -> int:
    from edgeresnext.data.calibration import load_calibration_images
    from edgeresnext.models import load_checkpoint
    from edgeresnext.models.shipped import resolve_checkpoint
    from edgeresnext.quantize.int8 import quantize_int8

    spec = target.quant
    model = load_checkpoint(resolve_checkpoint(target.model.checkpoint), arch=target.model.arch)
    calib = load_calibration_images(spec.calib_dir, model.meta.preprocess, spec.subset_size, target.data.on_bad_image)
    out = quantize_int8(model, calib, spec, args.out, progress=not args.quiet, train_limit=spec.qat_train_limit)
    if is_rank0():
        print(f"wrote {out} ({spec.method} on {args.nproc or 'all'} processes, {len(calib)} calibration images)")
    return 0


def add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="INT8 Q/DQ ONNX by PTQ or QAT (NNCF), TensorRT-lint clean")
    p.add_argument("checkpoint", nargs="?", default="shipped:fashion-mnist", help="checkpoint path or shipped:<name>")
    add_model_flag(p, "the model of a bare state dict")
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
    p.add_argument("--limit-train", type=int, default=None, help="QAT on the first N training images only")
    add_distributed_options(p, training=False)
    p.add_argument("--on-bad-image", choices=["fail", "skip"], default=None, help="default: the target's (fail)")
    p.add_argument(
        "--data",
        default=None,
        help="the validation set (data.dataset): the export parity check runs on it, and the fallback tunes on "
        "images disjoint from it (quant.tune_dir, the held-out training images, or the calibration folder)",
    )
    p.add_argument("--sensitivity", default=None, metavar="JSON", help="also write per-layer sensitivity here")
    p.add_argument("--build", default="build", help="build root of the cached stages (default build/)")
    p.add_argument("--out", default="model.qdq.onnx")


def run_lint(args: argparse.Namespace) -> int:
    from edgeresnext.lint import lint_onnx

    found = lint_onnx(args.model, rules=args.rules)
    for violation in found:
        print(f"{violation.severity}: {violation}")
    errors = sum(v.severity == "error" for v in found)
    print(f"{args.model}: {errors} error(s), {len(found) - errors} warning(s) against the {args.rules} rules")
    return 1 if errors else 0


def add_lint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lint", help="check a Q/DQ ONNX against TensorRT's rules (exit 1 on violations)")
    p.add_argument("model", help="ONNX file")
    p.add_argument("--for", dest="rules", choices=["tensorrt"], default="tensorrt")


# This module's commands: name -> (add the sub-parser, run it).
COMMANDS = {
    "inspect": (add_inspect, run_inspect),
    "data": (add_data, run_data),
    "export": (add_export, run_export),
    "quantize": (add_quantize, run_quantize),
    "lint": (add_lint, run_lint),
}
