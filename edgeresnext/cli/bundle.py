"""``edgeresnext bundle verify | extract | predict``: check, unpack or run a bundle as a device app would."""

from __future__ import annotations

import argparse

from edgeresnext.cli.common import int_at_least


def run_bundle(args: argparse.Namespace) -> int:
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


def add_bundle(sub: argparse._SubParsersAction) -> None:
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


# This module's commands: name -> (add the sub-parser, run it).
COMMANDS = {
    "bundle": (add_bundle, run_bundle),
}
