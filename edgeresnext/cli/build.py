"""``edgeresnext build``/``build-all`` (the whole pipeline), ``validate`` and ``compare`` (the report),
``compile`` (the stages up to the target's artifact, or a TensorRT kit's engine on the device)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeresnext.cli.common import (
    BUILD_FLAGS,
    UNPROVEN_LINE,
    VALIDATE_FLAGS,
    add_model_flag,
    check_output,
    float_in,
    int_in,
    say,
    target_from_args,
)
from edgeresnext.errors import EXIT_GATE_FAILED, EXIT_UNPROVEN, MAX_IMAGES, MAX_THREADS, MAX_TOLERANCE, exit_code


def _run_options(args: argparse.Namespace) -> dict:
    """What `build` and `build-all` hand the pipeline from their shared flags."""
    return {
        "out_root": check_output(args.out, "--out"),
        "progress": not args.quiet,
        "say": print,
        "install": True,
        "sign_key": args.sign_key,
    }


def run_build(args: argparse.Namespace) -> int:
    from edgeresnext.pipeline import build

    target = target_from_args(args, BUILD_FLAGS)
    summary = build(target, **_run_options(args))
    print(summary.render())
    if summary.exit_code == EXIT_UNPROVEN:
        print(f"edgeresnext build: {UNPROVEN_LINE}", file=sys.stderr)
    return summary.exit_code


def _add_build_options(p: argparse.ArgumentParser) -> None:
    add_model_flag(p, "override model.arch (MODEL=...)")
    p.add_argument("--checkpoint", default=None, help="override model.checkpoint (CHECKPOINT=...)")
    p.add_argument("--data", default=None, help="override data.dataset: a dataset name or image folder (DATA=...)")
    p.add_argument("--calib", default=None, help="override quant.calib_dir (CALIB=...)")
    p.add_argument("--labels", default=None, help="labels file, one class name per line in output order (LABELS=...)")
    p.add_argument("--out", default="build", help="build root (default build/)")
    p.add_argument("--targets-dir", default="targets", help="where target names are looked up (default targets/)")
    p.add_argument(
        "--sign-key",
        default=None,
        metavar="KEY",
        help="sign the bundle of a build that passes with this PEM private key (bundle/bundle.sig; its password: "
        "$EDGERESNEXT_SIGN_KEY_PASSWORD; needs pip install 'edgeresnext[sign]')",
    )


def add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="run the whole pipeline for one target into build/<target>/")
    p.add_argument("--target", required=True, help="target name (targets/<name>.yaml) or path to a YAML file")
    _add_build_options(p)


def run_build_all(args: argparse.Namespace) -> int:
    from edgeresnext.pipeline import build_all

    paths = sorted(p for p in Path(args.targets_dir).glob("*.yaml") if not p.name.startswith("_"))
    targets = [target_from_args(args, BUILD_FLAGS, path=p) for p in paths]
    table, code = build_all(targets, **_run_options(args))
    print(table)
    return code


def add_build_all(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-all", help="build every target in targets/ and write one comparison table")
    _add_build_options(p)


def run_validate(args: argparse.Namespace) -> int:
    from edgeresnext.config import build_folder
    from edgeresnext.pipeline import deepstream_lines
    from edgeresnext.pipeline.choose import STAGE_FOLDERS
    from edgeresnext.report import write_report
    from edgeresnext.validate import validate_target

    target = target_from_args(args, VALIDATE_FLAGS)
    root = build_folder(check_output(args.build, "--build"), target.name)
    built = root / "config.json"
    if not args.artifact and built.is_file():
        # A finished build is validated as it was built (its own data, model and gates, e.g. a user's photo folder
        # given to `build --data`): its resolved target, with this command's flags on top.
        target = target_from_args(args, VALIDATE_FLAGS, path=built)
        print(f"target: {built} (as built; flags override it)", file=sys.stderr)
    out = check_output(args.out, "--out") if args.out else root / STAGE_FOLDERS["validate"]
    items, model_path, sensitivity = _what_to_validate(args, target, root, out)
    report = validate_target(
        target,
        items,
        model_path,
        primary=args.primary,
        threads=args.threads,
        sensitivity_json=sensitivity,
        command="edgeresnext " + " ".join(sys.argv[1:]),
        progress=not args.quiet,
    )
    if not args.artifact:  # a finished build: its report's DeepStream section too, as the build measured it
        from edgeresnext.models import read_checkpoint
        from edgeresnext.pipeline.choose import BuildFiles, measure_serving_exports
        from edgeresnext.validate import target_threads

        meta = read_checkpoint(model_path).meta
        files = BuildFiles.in_folder(root, target)
        report.deepstream = measure_serving_exports(files, target, meta, args.threads or target_threads(target))
    paths = write_report(report, out, html_report=not args.no_html)
    print_table(VALIDATE_COLUMNS, [_validate_row(a) for a in report.artifacts])
    for line in deepstream_lines(report):
        print(line)
    for note in report.notes:
        print(f"note: {note}")
    for gate in report.gates:
        print(f"{gate.verdict.upper()} {gate.message}")
    print(f"report: {', '.join(str(p) for p in paths.values())}")
    code = exit_code(report.gates)
    if code == EXIT_GATE_FAILED:
        failed = "; ".join(g.message for g in report.gates if not g.passed)
        print(f"edgeresnext validate: gate failed: {failed}", file=sys.stderr)
    elif code == EXIT_UNPROVEN:
        print(f"edgeresnext validate: {UNPROVEN_LINE}", file=sys.stderr)
    return code


def _what_to_validate(args: argparse.Namespace, target, root: Path, out: Path):
    """(rows, FP32 checkpoint, sensitivity record): the files named by --artifact, else the finished build in
    ``root`` as the build's own validate stage chose its rows (:func:`~.pipeline.choose.choose_artifacts`)."""
    from edgeresnext.models.shipped import resolve_checkpoint
    from edgeresnext.pipeline.choose import MODEL_FILE, STAGE_FOLDERS, BuildFiles, choose_artifacts
    from edgeresnext.validate import artifacts_from_specs

    if args.artifact:
        staged = root / STAGE_FOLDERS["model"] / MODEL_FILE
        fallback = staged if staged.is_file() else resolve_checkpoint(target.model.checkpoint)
        model = resolve_checkpoint(args.checkpoint) if args.checkpoint else fallback
        return artifacts_from_specs(args.artifact, target, args.threads), model, None
    files = BuildFiles.in_folder(root, target)
    items = choose_artifacts(files, target, baseline_dir=out / "baseline", threads=args.threads)
    model = resolve_checkpoint(args.checkpoint) if args.checkpoint else files.model
    return items, model, files.sensitivity_json


VALIDATE_COLUMNS = "artifact precision top-1 drop agreement cosine p50-ms p90-ms p99-ms speed-up size".split()


def _validate_row(a) -> list[str]:
    if not a.ok:
        return [a.name, a.precision, f"skipped: {a.skip_reason}"]
    lat = a.latency
    size = "-" if a.size_bytes is None else f"{a.size_bytes / 1e6:.2f} MB"
    return [
        a.name,
        a.precision,
        f"{a.top1 * 100:.2f} %",
        f"{a.top1_drop * 100:+.2f} pt",
        f"{a.agreement * 100:.2f} %",
        f"{a.cosine_mean:.5f}",
        f"{lat.p50_ms:.3f}",
        f"{lat.p90_ms:.3f}",
        f"{lat.p99_ms:.3f}",
        "-" if a.speedup is None else f"{a.speedup:.2f}x",  # against the same runtime's float build
        size,
    ]


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Left-aligned columns sized to their content (a short row's last cell may run across the rest)."""
    widths = [max(len(row[i]) for row in [header, *rows] if i < len(row)) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def add_validate(sub: argparse._SubParsersAction) -> None:
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
        type=int_in(1, MAX_THREADS),
        default=None,
        help="threads for every runtime (default: the target's, else each runtime's own default, as the build)",
    )
    p.add_argument("--out", default=None, help="report folder (default build/<target>/validate, the stage's folder)")
    p.add_argument("--no-html", action="store_true", help="skip report.html (no matplotlib needed)")


def run_compare(args: argparse.Namespace) -> int:
    from edgeresnext.config import DataSpec
    from edgeresnext.data.validation import load_validation_data
    from edgeresnext.models import read_checkpoint
    from edgeresnext.models.shipped import resolve_checkpoint
    from edgeresnext.validate import compare_artifacts

    if args.json:
        check_output(args.json, "--json", folder=False)
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
    for row in result["worst"]:  # class names come from the checkpoint, image names from a folder: a user's files
        say(
            f"    {row['image']:<24s} label {names[row['label']]:<12s} a: {names[row['pred_a']]:<12s} "
            f"b: {names[row['pred_b']]:<12s} max abs {row['max_abs_error']:.4g}  cosine {row['cosine']:.6f}"
        )
    if args.json:
        from edgeresnext.atomic import write_json_atomic

        write_json_atomic(args.json, result)
        print(f"  written to {args.json}")
    return 0 if result["passed"] else 1


def add_compare(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--limit", type=int_in(1, MAX_IMAGES), default=512, help="number of images (default 512)")
    p.add_argument(
        "--atol",
        type=float_in(0, MAX_TOLERANCE, inclusive=True),
        default=1e-3,
        help="absolute tolerance per logit (default 1e-3)",
    )
    p.add_argument(
        "--rtol",
        type=float_in(0, MAX_TOLERANCE, inclusive=True),
        default=1e-3,
        help="relative tolerance per logit (default 1e-3)",
    )
    p.add_argument("--worst", type=int_in(0, MAX_IMAGES), default=10, help="how many worst images to list")
    p.add_argument("--json", default=None, help="also write the comparison as JSON to this file")


def run_compile(args: argparse.Namespace) -> int:
    if args.on_device:
        return _compile_on_device(Path(args.on_device))
    from edgeresnext.backends import Artifact, get_backend
    from edgeresnext.config import build_folder
    from edgeresnext.pipeline import build

    target = target_from_args(args, ())
    check_output(args.build, "--build")
    if args.out:
        check_output(args.out, "--out")
    if args.onnx or args.out:
        # A given ONNX, or another output folder: the backend compiles here, outside the stage cache.
        onnx_path = Path(args.onnx) if args.onnx else None
        if onnx_path is None:
            before = "lint" if target.precision == "int8" else "export"
            summary = build(target, args.build, progress=not args.quiet, stop_after=before, install=True)
            onnx_path = summary.context.compile_source
        out = Path(args.out) if args.out else build_folder(args.build, target.name) / "compile"
        artifact = get_backend(target.backend).compile(onnx_path, target, out)
        artifact.save(out / "artifact.json")
    else:
        summary = build(target, args.build, progress=not args.quiet, stop_after="compile", install=True)
        onnx_path = summary.context.compile_source
        artifact = Artifact.load(summary.context.folder("compile") / "artifact.json")
    print(f"{target.name}: {artifact.backend} {artifact.precision} {artifact.kind} from {onnx_path}")
    for path in artifact.files:
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        print(f"  {path}  {size / 1e6:.2f} MB")
    backend = get_backend(artifact.backend)
    reason = backend.awaits_device(artifact)
    if reason is not None:
        print(f"no engine built here: {reason}")
        print("build it on the device (copy the folder there first):")
        for line in backend.device_commands(artifact):
            print(f"  {line}")
    return 0


def _compile_on_device(on_device: Path) -> int:
    """``compile --on-device``: build an on-device kit here with the package's own build (TensorRT: its Python API).
    A bundle, or the kit inside one, gets what was built recorded in its manifest, as ``bundle build-engine`` does."""
    from edgeresnext.backends import kit_backends, kit_owner
    from edgeresnext.errors import ConfigError

    bundle = next((p for p in (on_device, on_device.parent) if (p / "manifest.json").is_file()), None)
    if bundle is not None:
        from edgeresnext.bundle import finish_on_device
        from edgeresnext.cli.bundle import sealed_exit_code

        return sealed_exit_code(bundle, finish_on_device(bundle, python_api=True))
    kits, owner = kit_backends(), kit_owner(on_device)
    if owner is None:
        kinds = " or ".join(f"{b.display_name or b.name} build kit (no {b.kit_file})" for b in kits)
        raise ConfigError(
            f"{on_device}: not a {kinds or 'build kit'}; make one with `edgeresnext compile --target TARGET` "
            "(a target built on the device, e.g. targets/jetson.yaml)"
        )
    for line in owner.build_kit_here(on_device):
        print(line)
    return 0


def add_compile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile", help="turn the (Q/DQ) ONNX into what one target runs; or build a TensorRT kit on the device"
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--target", help="target name (targets/<name>.yaml) or path to a YAML file")
    what.add_argument(
        "--on-device",
        metavar="KIT",
        help="build the engine of a TensorRT build kit here (on the Jetson/GPU host, with TensorRT's Python API); "
        "a kit inside a bundle (or the bundle) is recorded in the bundle's manifest, as `bundle build-engine` does",
    )
    p.add_argument(
        "--onnx",
        default=None,
        help="ONNX to compile (default: made by the cached model/export/quantize stages under --build)",
    )
    p.add_argument("--out", default=None, help="output folder (default build/<target>/compile)")
    p.add_argument("--build", default="build", help="build root for the stages that make the ONNX (default build/)")


# This module's commands: name -> (add the sub-parser, run it).
COMMANDS = {
    "build": (add_build, run_build),
    "build-all": (add_build_all, run_build_all),
    "validate": (add_validate, run_validate),
    "compare": (add_compare, run_compare),
    "compile": (add_compile, run_compile),
}
