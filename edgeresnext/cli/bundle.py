"""``edgeresnext bundle verify | extract | predict | build-engine | sign | triton``: check, unpack or run a bundle as a
device app would; on the device, build a TensorRT bundle's engine and record it in the manifest; sign a bundle; write a
Triton model repository for it."""

from __future__ import annotations

import argparse

from edgeresnext.cli.common import check_output, int_in, say
from edgeresnext.errors import MAX_CLASSES


def _extract(args: argparse.Namespace) -> int:
    from edgeresnext.bundle import extract_bundle

    manifest = extract_bundle(args.archive, check_output(args.dest, "DEST"))
    say(f"OK {args.dest}: extracted from {args.archive}, {len(manifest.files)} files, sha256 verified")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgeresnext.backends import get_backend
    from edgeresnext.bundle import verify_bundle
    from edgeresnext.bundle.signature import check_signature, public_key_from, signature_status

    key = public_key_from(args.verify_key)
    manifest = verify_bundle(args.bundle) if key is None else check_signature(args.bundle, key)
    backend = manifest.backend
    say(
        f"OK {args.bundle}: {manifest.model.arch} {manifest.precision} for {backend.name} "
        f"{backend.version} ({manifest.device.target_device}), {len(manifest.files)} files, "
        "sha256 verified"
    )
    primary = manifest.primary
    for line in get_backend(primary.backend).bundle_status(Path(args.bundle), primary.to_json()):
        say(line)
    say(signature_status(args.bundle, key))
    return 0


def _build_engine(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgeresnext.bundle import finish_on_device

    manifest = finish_on_device(
        args.bundle,
        trtexec=args.trtexec,
        python_api=args.python_api,
        trtexec_args=args.trtexec_args,
        public_key=args.verify_key,
        sign_key=args.sign_key,
    )
    signature = []
    if args.sign_key:
        signature.append(
            f"signature: signed with {args.sign_key}: {args.bundle}/bundle.sig covers every file, the engine included"
        )
    elif (Path(args.bundle) / "bundle.sig").is_file():
        signature.append(
            f"signature: NOT renewed: {args.bundle}/bundle.sig covers the bundle as it was before this step, not the "
            f"engine; sign the sealed bundle here with `edgeresnext bundle sign {args.bundle} --sign-key KEY`"
        )
    return sealed_exit_code(args.bundle, manifest, signature)


def sealed_exit_code(bundle, manifest: dict, extra: list[str] = ()) -> int:
    """Print what the device step sealed (and ``extra`` lines) and return its exit code, as the bundle's backend says
    it (TensorRT: as the kit's build_engine.sh, seal.py, does): 0 the device gate is proven, 1 the check failed, 3 the
    engine is sealed but its gate is NOT PROVEN or unchecked. The lines carry a manifest's strings: through
    :func:`say`."""
    import sys

    from edgeresnext.bundle import device_step_outcome
    from edgeresnext.errors import EXIT_GATE_FAILED, EXIT_UNPROVEN

    outcome = device_step_outcome(bundle, manifest)
    for line in [*outcome.lines, *extra]:
        say(line)
    if outcome.exit_code == EXIT_GATE_FAILED:  # sealed as failed
        say(f"edgeresnext: error: {outcome.message}", file=sys.stderr)
    elif outcome.exit_code == EXIT_UNPROVEN:
        say(f"edgeresnext: {outcome.message}", file=sys.stderr)
    return outcome.exit_code


def _predict(args: argparse.Namespace) -> int:
    import json

    from edgeresnext.runtime import load_bundle

    classifier = load_bundle(args.bundle, backend=args.backend, public_key=args.verify_key)
    results = classifier.predict(list(args.images), top_k=args.top_k)
    for image, result in zip(args.images, results, strict=True):
        if args.json:
            say(json.dumps({"image": image, **result.to_dict()}))
            continue
        say(image)
        for rank, (index, label, score) in enumerate(
            zip(result.indices, result.labels, result.scores, strict=True), start=1
        ):
            say(f"  {rank}. {label:20s} {score:.6f}  (class {index})")
    return 0


def _triton(args: argparse.Namespace) -> int:
    from edgeresnext.serving import triton_repository

    repo = triton_repository(args.bundle, args.out, name=args.name, backend=args.backend, stand_in=args.stand_in)
    print(f"OK {repo.path}: Triton model repository of {args.bundle}, {len(repo.record['files'])} files")
    print(f"  {repo.native}: {repo.record['bundle']['backend']['name']} artifact (float32 NCHW in, logits out)")
    said = " (the artifact's host stand-in)" if args.stand_in else ""
    print(f"  {repo.images}: image bytes in, top-k labels and scores out{said}")
    print(f"start: tritonserver --model-repository={repo.path}   (docs: serving)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from edgeresnext.bundle.signature import check_signature, private_key_password, public_key_from, sign_bundle

    password = private_key_password(args.sign_key)
    key = public_key_from(args.verify_key) if args.verify_key else None
    if key is not None:  # the signature it has must hold before it is replaced
        check_signature(args.bundle, key)
    signature = sign_bundle(args.bundle, args.sign_key, password)
    say(f"OK {args.bundle}: signed with {args.sign_key}: {signature} covers every file, manifest.json included")
    return 0


def run_bundle(args: argparse.Namespace) -> int:
    commands = {
        "extract": _extract,
        "verify": _verify,
        "build-engine": _build_engine,
        "sign": _sign,
        "triton": _triton,
    }
    return commands.get(args.bundle_command, _predict)(args)


def add_bundle(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="check a bundle (manifest + sha256) or classify images with it")
    actions = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check manifest.json and the sha256 of every file; exit 2 if not")
    verify.add_argument("bundle", help="bundle folder, e.g. build/cpu/bundle")
    _add_verify_key(verify)
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
    predict.add_argument("--top-k", type=int_in(1, MAX_CLASSES), default=5)
    predict.add_argument("--backend", default=None, help="which of the bundle's artifacts to run (default: primary)")
    predict.add_argument("--json", action="store_true", help="one JSON line per image")
    _add_verify_key(predict)
    build = actions.add_parser(
        "build-engine",
        help="on the device: build the TensorRT engine from the bundle's kit and record it in the manifest "
        "(all or nothing; the same as BUNDLE/kit/build_engine.sh without edgeresnext)",
    )
    build.add_argument("bundle", help="a bundle with a TensorRT kit, e.g. the copied build/jetson/bundle")
    how = build.add_mutually_exclusive_group()
    how.add_argument("--trtexec", default=None, help="trtexec to run (default: $TRTEXEC, PATH, JetPack's)")
    how.add_argument("--python-api", action="store_true", help="build with TensorRT's Python API, not trtexec")
    _add_verify_key(build)
    build.add_argument(
        "--sign-key",
        default=None,
        metavar="KEY",
        help="sign the sealed bundle with this PEM private key (its password: $EDGERESNEXT_SIGN_KEY_PASSWORD); "
        "without it, a signature the bundle had no longer covers it once the engine is sealed",
    )
    build.add_argument("trtexec_args", nargs="*", metavar="-- TRTEXEC_FLAG", help="extra trtexec flags, after --")
    sign = actions.add_parser(
        "sign", help="sign a bundle with a private key: bundle.sig covers every file, manifest.json included"
    )
    sign.add_argument("bundle", help="bundle folder, e.g. build/cpu/bundle")
    sign.add_argument(
        "--sign-key",
        required=True,
        metavar="KEY",
        help="PEM elliptic-curve private key (its password: $EDGERESNEXT_SIGN_KEY_PASSWORD)",
    )
    _add_verify_key(sign, "first check the signature the bundle has with this public key (default: not checked)")
    _add_triton(actions)


def _add_verify_key(parser: argparse.ArgumentParser, what: str = "") -> None:
    parser.add_argument(
        "--verify-key",
        default=None,
        metavar="PUB",
        help=what
        or "check the bundle's signature (bundle.sig) with this PEM public key; an unsigned bundle or a mismatch is "
        "refused (default: $EDGERESNEXT_BUNDLE_PUBLIC_KEY)",
    )


def _add_triton(actions: argparse._SubParsersAction) -> None:
    triton = actions.add_parser(
        "triton",
        help="write a Triton model repository for the bundle: its artifact (native backend) and an end-to-end entry "
        "(image bytes in, top-k out, Python backend)",
    )
    triton.add_argument("bundle", help="bundle folder, e.g. build/cpu/bundle")
    triton.add_argument("out", help="repository folder to write (new, empty, or one this command wrote)")
    triton.add_argument("--name", default=None, help="model name (default: the bundle's target name)")
    triton.add_argument("--backend", default=None, help="which of the bundle's artifacts to serve (default: primary)")
    triton.add_argument(
        "--stand-in",
        action="store_true",
        help="the end-to-end entry runs the artifact's host stand-in (a Jetson engine's FP16 Q/DQ ONNX in ONNX "
        "Runtime), to try a Jetson bundle's repository on a workstation",
    )


# This module's commands: name -> (add the sub-parser, run it).
COMMANDS = {
    "bundle": (add_bundle, run_bundle),
}
