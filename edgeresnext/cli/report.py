"""``edgeresnext report BUNDLE``: the host's validation report with the device check's row beside the host rows, for
a bundle whose build finished on the device (a TensorRT engine built and checked there: the sealed manifest records
the check; the bundle's kit carries the host's report, ``kit/check/host_report.json``). The bundle's backend says
where the host's report is and what the device recorded (:meth:`~edgeresnext.backends.Backend.device_report`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from edgeresnext.cli.common import check_output, say

if TYPE_CHECKING:
    from edgeresnext.bundle.model import Manifest


def _device_report(bundle: Path, manifest: Manifest) -> dict:
    """What the bundle's backend says about its device step: the host report's path, the device row, the check."""
    from edgeresnext.backends import backend_facts
    from edgeresnext.errors import ConfigError

    for name in dict.fromkeys(a.backend for a in manifest.artifacts):
        backend = backend_facts(name)
        found = backend.device_report(bundle, manifest.to_json()) if backend is not None else None
        if found is not None and found["host_report"] in manifest.sha256():
            return found
        if found is not None:
            raise ConfigError(f"{bundle}: no host report in this bundle ({found['host_report']}); {_WHICH}")
    raise ConfigError(f"{bundle}: no host report in this bundle (no on-device build kit); {_WHICH}")


_WHICH = (
    "`edgeresnext report` reads a bundle that `make build` wrote for a target built on the device (its kit carries "
    "the check set and the host's report)"
)


def run_report(args: argparse.Namespace) -> int:
    from edgeresnext.bundle import verify_bundle
    from edgeresnext.report import write_report_record
    from edgeresnext.validate.results import upgrade_record

    bundle = Path(args.bundle)
    manifest = verify_bundle(bundle)
    device = _device_report(bundle, manifest)
    host = device["host_report"]
    report = upgrade_record(json.loads((bundle / host).read_text(encoding="utf-8")))  # a bundle of an older version
    check = device["device_check"]
    report["device_engine"] = device["device_engine"]
    report["device_check"] = check
    report["notes"] = [*report.get("notes", []), f"device check: {check['status']}"]
    out = check_output(args.out, "--out") if args.out else bundle.resolve().parent / "device-report"
    out.mkdir(parents=True, exist_ok=True)
    paths = write_report_record(report, out).values()
    said = check.get("reason") or (check.get("gate") or {}).get("message", "")
    say(f"device check: {check['status']}: {said}")
    for path in paths:
        say(f"wrote {path}")
    return _exit_code(report, check)


def _exit_code(report: dict, check: dict) -> int:
    """What the bundle proves, as build and validate say it: 1 when the device check or a host gate failed; 3 when
    all passed but the device check was NOT PROVEN or did not run, or a host gate is NOT PROVEN; else 0."""
    from edgeresnext.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_UNPROVEN, exit_code
    from edgeresnext.validate.results import GateResult

    host = exit_code(GateResult.from_dict(gate) for gate in report.get("gates", []))
    if check["status"] == "failed" or host == EXIT_GATE_FAILED:
        return EXIT_GATE_FAILED
    device_proven = check["status"] == "checked" and (check.get("gate") or {}).get("provable") is not False
    return EXIT_OK if device_proven and host == EXIT_OK else EXIT_UNPROVEN


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="the validation report of a TensorRT bundle back from the device: md, html and json, with the device "
        "check's row (the engine's own top-1, agreement and latency) beside the host rows",
    )
    p.add_argument("bundle", help="the bundle the device step sealed, copied back, e.g. build/jetson/bundle")
    p.add_argument("--out", default=None, help="folder for report.{json,md,html} (default: BUNDLE/../device-report)")


COMMANDS = {
    "report": (add_report, run_report),
}
