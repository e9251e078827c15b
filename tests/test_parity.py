"""Parity across the device boundary: where the Jetson runs its own standard-library code (the kit's ``seal.py`` and
``device_check.py``) and the host runs another implementation of the same check, both get the same inputs and must
give the same answer.

- the device gate (``device_check.gate``, ``gates.max_device_disagreement``) against the host's ``min_agreement``
  gate (``validate.gates``): every count ``(agree, n)`` up to n = 300, same verdict, same bound, same provability;
- ``seal.py``'s bundle check (its manifest structure check and ``check_files``) against ``bundle verify``
  (``bundle.manifest.verify_bundle``): one table of planted faults on a real Jetson bundle, each run through both;
  same verdict, and the same file named with the same reason.

The device side is loaded as the device runs it: the kit's files, by path, never through ``edgeresnext``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from jetson_helpers import copy_bundle, jetson_fixtures

from edgeresnext.backends.tensorrt.kit import DEVICE_CHECK_SOURCE, SEAL_SOURCE, STATS_SOURCE
from edgeresnext.bundle import BundleError, verify_bundle
from edgeresnext.config import Gates
from edgeresnext.validate.gates import evaluate_gates
from edgeresnext.validate.results import ArtifactResult, Uncertainty

LARGEST = 300  # every (agree, n) with n up to this


def _load(path: Path, name: str) -> ModuleType:
    """A kit file as a module of its own (the device loads them by path, beside edgeresnext's copies here)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> tuple[ModuleType, ModuleType]:
    """(``device_check``, ``check/stats.py``) of a kit, copied as kit.py copies them and loaded as the device does."""
    kit = tmp_path_factory.mktemp("kit")
    (kit / "check").mkdir()
    shutil.copy(DEVICE_CHECK_SOURCE, kit / "device_check.py")
    shutil.copy(STATS_SOURCE, kit / "check" / "stats.py")
    device_check = _load(kit / "device_check.py", "parity_kit_device_check")
    return device_check, device_check.load_stats(kit)


# ------------------------------------------------------------------------------------------ the gates
class _Agreement(Uncertainty):
    """The report's uncertainty, its ``n`` summed without building a checked ``PairedCounts`` on every read (the host's
    gate reads it four times: 60 % of the enumeration's time)."""

    @property
    def n(self) -> int:
        return self.a + self.b + self.c + self.d


@functools.cache
def _host_gates(limit: float, confidence: float | None, unproven: str) -> Gates:
    return Gates(min_agreement=1 - limit, confidence=confidence, unproven=unproven)


def _host_gate(limit: float, confidence: float | None, unproven: str, agree: int, n: int):
    """The host's ``min_agreement`` gate at ``1 - limit`` on an artifact that agrees with its reference on ``agree`` of
    ``n`` images (validate.metrics.paired_uncertainty's fields; the drop's are not read by this gate)."""
    gates = _host_gates(limit, confidence, unproven)
    agreement = agree / n  # proportion_interval's point, as paired_uncertainty records it
    uncertainty = _Agreement(
        confidence=confidence or 0.95,
        a=agree,
        b=0,
        c=0,
        d=n - agree,
        agree=agree,
        drop=0.0,
        drop_interval=(0.0, 0.0),
        drop_upper_bound=0.0,
        mcnemar_p=1.0,
        agreement=agreement,
        agreement_interval=(0.0, 1.0),
        agreement_lower_bound=0.0,
    )
    result = ArtifactResult("engine", "tensorrt", "int8", [], agreement=agreement, uncertainty=uncertainty)
    (verdict,) = evaluate_gates(gates, [result], "engine")
    return verdict


def _gate_differences(device_check, kit_stats, limit, confidence, unproven, counts) -> list[str]:
    """Where the device gate and the host's gate differ, for each ``(agree, n)`` of ``counts``."""
    spec = {"max_device_disagreement": limit, "confidence": confidence, "unproven": unproven}
    differences = []
    for agree, n in counts:
        ours = device_check.gate(kit_stats, spec, agree, n)
        host = _host_gate(limit, confidence, unproven, agree, n)
        mine = (ours["passed"], ours["basis"], ours.get("provable"), ours.get("min_images"))
        theirs = (host.passed, host.basis, host.provable, host.min_images)
        # The bound: the device reports the disagreement's upper bound, 1 - the agreement's lower bound the host
        # compares; both come from the same float by the same subtraction, so they are compared exactly.
        if confidence is not None:
            mine, theirs = (*mine, ours["upper_bound"]), (*theirs, 1 - host.value)
        if mine != theirs:
            differences.append(f"agree={agree} n={n}: device {mine}, host {theirs}")
            if len(differences) == 5:
                break
    return differences


def _every_count(largest: int = LARGEST) -> list[tuple[int, int]]:
    return [(agree, n) for n in range(1, largest + 1) for agree in range(n + 1)]


@pytest.fixture(scope="module")
def bound_table() -> dict[float, dict[tuple[int, int], float]]:
    """The exact one-sided Clopper-Pearson lower bound of every ``(agree, n)`` up to :data:`LARGEST`, from scipy's
    inverse incomplete beta function (the closed form ``(1 - confidence)^(1/n)`` at ``agree == n``, 0 at 0), at 95 %
    and 99 %. The stats module's own bisection takes about 3 minutes for these 45,450 counts; the enumeration below
    feeds both gates this table instead (the same values on both sides: what it compares is what each gate does with
    a bound), and :func:`test_the_gates_agree_with_the_stats_modules_own_bounds` runs both unpatched on small sets."""
    from scipy.special import betaincinv

    tables: dict[float, dict[tuple[int, int], float]] = {}
    for confidence in (0.95, 0.99):
        alpha = 1.0 - confidence
        table = {}
        for n in range(1, LARGEST + 1):
            inner = list(range(1, n))
            bounds = betaincinv(inner, [n - a + 1 for a in inner], alpha) if inner else []
            table.update({(a, n): float(bound) for a, bound in zip(inner, bounds, strict=True)})
            table[(0, n)], table[(n, n)] = 0.0, alpha ** (1.0 / n)
        tables[confidence] = table
    return tables


# (max_device_disagreement, gates.confidence, gates.unproven): the default gate; a 1 % gate, which 95 % proves from
# 299 images on (NOT PROVEN below, failed by gates.unproven: fail); a 2 % gate at 99 % (NOT PROVEN below 228 images,
# decided on the measured value); and confidence null (the measured value alone).
GATE_SETTINGS = [(0.05, 0.95, "warn"), (0.01, 0.95, "fail"), (0.02, 0.99, "warn"), (0.05, None, "warn")]


@pytest.mark.promise("docs/jetson.md", "give the same verdict, the same bound and the same set size needed")
@pytest.mark.parametrize(("limit", "confidence", "unproven"), GATE_SETTINGS)
def test_the_device_gate_and_the_hosts_agree_on_every_count_up_to_300(
    device, bound_table, monkeypatch, limit, confidence, unproven
):
    """Same verdict (passed, bound or measured value, provable), same minimum set size and the same bound, for all
    45,450 counts ``(agree, n)``, n = 1..300 (the device gate is ``min_agreement = 1 - max_device_disagreement``)."""
    from edgeresnext import stats

    device_check, kit_stats = device

    def bound(agree: int, n: int, confidence: float = 0.95) -> float:
        return bound_table[confidence][(agree, n)]

    monkeypatch.setattr(stats, "agreement_lower_bound", bound)  # the host's gate, and its min_images_for_agreement
    monkeypatch.setattr(kit_stats, "agreement_lower_bound", bound)  # the device's, and its max_disagreements
    counts = _every_count()
    assert len(counts) == 45_450
    assert _gate_differences(device_check, kit_stats, limit, confidence, unproven, counts) == []


def test_the_gates_agree_with_the_stats_modules_own_bounds(device, monkeypatch):
    """The same comparison on each side's own stats module (its bound, memoized), on every count up to 30 images and the
    counts near full agreement where the gates change their minds: 59, 124, 299 and 300 images."""
    from edgeresnext import stats

    device_check, kit_stats = device
    for module in (stats, kit_stats):  # each module's own function, computed once per count for the four settings
        monkeypatch.setattr(module, "agreement_lower_bound", functools.cache(module.agreement_lower_bound))
    counts = _every_count(30) + [(agree, n) for n in (59, 124, 299, 300) for agree in range(n - 6, n + 1)]
    for limit, confidence, unproven in GATE_SETTINGS:
        assert _gate_differences(device_check, kit_stats, limit, confidence, unproven, counts) == []


@pytest.mark.promise("docs/jetson.md", "1 of 20 images is 5 %, within a 5 % gate")
def test_the_gate_decides_a_tie_at_the_limit_as_the_host_does(device):
    """1 of 20 images is 5 %: within a 5 % gate on both sides (computed as ``1 - 19 / 20 <= 0.05`` it is 5.000...04 %,
    which the device gate once failed while the host passed it)."""
    device_check, kit_stats = device
    spec = {"max_device_disagreement": 0.05, "confidence": None}
    assert 1 - 19 / 20 > 0.05 and 19 / 20 >= 1 - 0.05
    assert device_check.gate(kit_stats, spec, 19, 20)["passed"] and _host_gate(0.05, None, "warn", 19, 20).passed
    assert not device_check.gate(kit_stats, spec, 18, 20)["passed"]


# ------------------------------------------------------------------------------------------ the bundle checks
def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def _edit(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """A fault that edits manifest.json (``change`` edits the parsed manifest in place)."""

    def plant(bundle: Path) -> None:
        manifest = _manifest(bundle)
        change(manifest)
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    return plant


def _entry(manifest: dict, name: str) -> dict:
    return next(entry for entry in manifest["files"] if entry["path"] == name)


def _index(bundle_manifest: dict, name: str) -> int:
    return [entry["path"] for entry in bundle_manifest["files"]].index(name)


def _flip(name: str, at: int = -1) -> Callable[[Path], None]:
    """A byte of ``name`` changed, its size kept."""

    def plant(bundle: Path) -> None:
        data = bytearray((bundle / name).read_bytes())
        data[at] ^= 0x01
        (bundle / name).write_bytes(bytes(data))

    return plant


def _resize(name: str, size: Callable[[int], int]) -> Callable[[Path], None]:
    def plant(bundle: Path) -> None:
        data = (bundle / name).read_bytes()
        (bundle / name).write_bytes((data + b"x" * len(data))[: size(len(data))])

    return plant


def _remove(name: str) -> Callable[[Path], None]:
    def plant(bundle: Path) -> None:
        path = bundle / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return plant


def _add(name: str, data: bytes = b"not in the manifest\n") -> Callable[[Path], None]:
    def plant(bundle: Path) -> None:
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_bytes(data)

    return plant


def _fifo(bundle: Path) -> None:
    os.mkfifo(bundle / "kit" / "pipe")


def _link(name: str, target: str) -> Callable[[Path], None]:
    """``name`` made a symlink to ``target`` (a path relative to the bundle's parent folder, or absolute)."""

    def plant(bundle: Path) -> None:
        path = bundle / name
        if path.is_dir():
            shutil.copytree(path, bundle.parent / target)
            shutil.rmtree(path)
        elif path.is_file():
            shutil.copy2(path, bundle.parent / target)  # an identical copy: the sha256 would match
            path.unlink()
        path.symlink_to(target if target.startswith("/") else bundle.parent / target)

    return plant


def _both(*plants: Callable[[Path], None]) -> Callable[[Path], None]:
    def plant(bundle: Path) -> None:
        for each in plants:
            each(bundle)

    return plant


def _engine_section(bundle: Path, **changes) -> Callable[[dict], None]:
    """The kit artifact given an engine record (as the device step writes one), with ``changes``."""
    fp16 = "kit/model.qdq-fp16.onnx"
    record = {"path": fp16, "sha256": hashlib.sha256((bundle / fp16).read_bytes()).hexdigest()}
    section = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "gpu_sm": "8.7", "build_mode": "strongly_typed"}
    section |= {"onnx": record, "record": "kit/kit.json", **changes}
    return lambda manifest: manifest["artifacts"][0].update(engine=section)


def _engine(**changes) -> Callable[[Path], None]:
    return lambda bundle: _edit(_engine_section(bundle, **changes))(bundle)


def _reseal(name: str, data: bytes) -> Callable[[Path], None]:
    """``name`` rewritten with ``data`` and its size and sha256 updated in the manifest: the hashes agree."""

    def plant(bundle: Path) -> None:
        (bundle / name).write_bytes(data)
        _edit(lambda m: _entry(m, name).update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))(bundle)

    return plant


M = "manifest.json"
SHA = "sha256 differs from the manifest (modified or corrupt)"
INSIDE = "must stay inside the bundle (relative, no '..')"
UNLISTED = "not listed in the manifest"


def _first(manifest: dict) -> dict:
    return manifest["files"][0]


def _labels(manifest: dict) -> dict:
    return _entry(manifest, "labels.txt")


def _kit(manifest: dict) -> dict:
    return manifest["artifacts"][0]


def _top(manifest: dict) -> dict:
    return manifest


def _set(part: Callable[[dict], dict], **changes) -> Callable[[Path], None]:
    """A fault that sets keys of a part of the manifest (:func:`_first` files entry, :func:`_kit` artifact...)."""
    return _edit(lambda manifest: part(manifest).update(changes))


def _pop(part: Callable[[dict], dict], key: str) -> Callable[[Path], None]:
    return _edit(lambda manifest: part(manifest).pop(key))


def _append(*keys: str, item) -> Callable[[Path], None]:
    """A fault that appends ``item`` to the list at ``keys`` (``0`` picks the first artifact)."""

    def change(manifest: dict) -> None:
        for key in keys:
            manifest = manifest["artifacts"][0] if key == "0" else manifest[key]
        manifest.append(item)

    return _edit(change)


def _write(text: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / M).write_text(text, encoding="utf-8")


PIXELS, FP16 = "kit/check/pixels-000.u8.z", "kit/model.qdq-fp16.onnx"
# (id, fault, what both messages say: the file or key, and the reason; "#" a number). None: both accept the bundle.
FAULTS: list[tuple[str, Callable[[Path], None], str | None]] = [
    # files changed, missing, added
    ("modified", _flip("labels.txt", 0), f"labels.txt: {SHA}"),
    ("modified-onnx", _flip("kit/model.qdq.onnx"), f"kit/model.qdq.onnx: {SHA}"),
    ("modified-seal-py", _flip("kit/seal.py", 100), f"kit/seal.py: {SHA}"),
    ("modified-kit-json", _flip("kit/kit.json", 1), f"kit/kit.json: {SHA}"),
    ("truncated", _resize(PIXELS, lambda n: n - 10), f"{PIXELS}: # bytes, the manifest says #"),
    ("oversized", _resize("labels.txt", lambda n: n + 7), "labels.txt: # bytes, the manifest says #"),
    ("emptied", _resize("deepstream/README.md", lambda n: 0), "deepstream/README.md: 0 bytes, the manifest says #"),
    ("size-mismatch", _set(_labels, bytes=77), "labels.txt: 76 bytes, the manifest says 77"),
    ("wrong-sha256", _set(_labels, sha256="0" * 64), f"labels.txt: {SHA}"),
    ("missing", _remove("labels.txt"), "labels.txt: missing"),
    ("missing-kit-json", _remove("kit/kit.json"), "kit/kit.json: missing"),
    ("missing-folder", _remove("deepstream"), "deepstream/README.md: missing; deepstream/config_infer_primary.txt"),
    ("unlisted", _add("extra.so"), f"extra.so: {UNLISTED}"),
    ("unlisted-in-kit", _add("kit/model.extra.onnx"), f"kit/model.extra.onnx: {UNLISTED}"),
    ("unlisted-hidden", _add(".hidden"), f".hidden: {UNLISTED}"),
    ("unlisted-nested", _add("new/folder/file.bin"), f"new/folder/file.bin: {UNLISTED}"),
    ("unlisted-fifo", _fifo, f"kit/pipe: {UNLISTED}"),
    # links: a bundle holds regular files only, even where the sha256 matches
    ("symlinked", _link("labels.txt", "labels-copy.txt"), "labels.txt: a symlink; bundles hold regular files only"),
    (
        "symlinked-folder",
        _link("kit/check", "check-copy"),
        "kit/check/check.json: a symlink; bundles hold regular files only",
    ),
    ("unlisted-link-out", _link("etc", "/etc"), f"etc: {UNLISTED}"),
    ("unlisted-dangling-link", _link("gone", "/nonexistent/file"), f"gone: {UNLISTED}"),
    # outside the bundle
    (
        "dotdot-path",
        _both(_add("../out.txt"), _set(_labels, path="../out.txt")),
        f"{{M}}: file path '../out.txt' {INSIDE}",
    ),
    ("dotdot-inside-path", _set(_first, path="kit/../../seal.py"), f"{{M}}: file path 'kit/../../seal.py' {INSIDE}"),
    ("absolute-path", _set(_first, path="/etc/hostname"), "{M}.files[0].path: '/etc/hostname' does not match ^[^/"),
    ("artifact-outside", _set(_kit, path="../kit"), f"{{M}}: file path '../kit' {INSIDE}"),
    ("artifact-file-absolute", _append("0", "files", item="/etc/passwd"), f"{{M}}: file path '/etc/passwd' {INSIDE}"),
    (
        "export-outside",
        _append("exports", "deepstream", "files", item="../x.txt"),
        f"{{M}}: file path '../x.txt' {INSIDE}",
    ),
    # the file list
    (
        "duplicate-entry",
        _edit(lambda m: m["files"].append(dict(_labels(m)))),
        "labels.txt: listed twice in the manifest's files",
    ),
    (
        "duplicate-other-hash",
        _edit(lambda m: m["files"].append({**_labels(m), "sha256": "1" * 64})),
        "labels.txt: listed twice",
    ),
    ("negative-size", _set(_first, bytes=-1), "{M}.files[0].bytes: -1 is below the minimum 0"),
    ("size-as-text", _set(_first, bytes="12"), '{M}.files[0].bytes: expected integer, got "12"'),
    ("size-as-bool", _set(_first, bytes=True), "{M}.files[0].bytes: expected integer, got true"),
    ("sha256-short", _set(_first, sha256="abc"), "{M}.files[0].sha256: 'abc' does not match ^[0-9a-f]{64}$"),
    ("sha256-upper", _set(_first, sha256="AB" * 32), f"{{M}}.files[0].sha256: '{'AB' * 32}' does not match"),
    ("entry-without-size", _pop(_first, "bytes"), "{M}.files[0]: missing required key 'bytes'"),
    ("entry-unknown-key", _set(_first, mode=420), "{M}.files[0]: unknown key 'mode'; accepted: bytes, path, sha256"),
    (
        "entry-not-object",
        _edit(lambda m: m["files"].insert(0, "labels.txt")),
        '{M}.files[0]: expected object, got "labels.txt"',
    ),
    ("no-files", _set(_top, files=[]), "{M}.files: needs at least 1 items, has 0"),
    ("path-spelled-otherwise", _set(_labels, path="./labels.txt"), None),
    # the manifest's structure
    ("manifest-missing", _remove(M), "{B}: not a bundle (no manifest.json)"),
    (
        "manifest-not-json",
        _write("{not json"),
        "{M}: not valid JSON (Expecting property name enclosed in double quotes",
    ),
    ("manifest-a-list", _write("[1, 2]"), "{M}: expected object, got [1, 2]"),
    ("missing-key", _pop(_top, "files"), "{M}: missing required key 'files'"),
    (
        "unknown-key",
        _set(_top, signed_by="me"),
        "{M}: unknown key 'signed_by'; accepted: artifacts, backend, created_by,",
    ),
    ("wrong-format", _set(_top, format="other"), "{M}.format: 'other' is not one of ['edgeresnext-bundle']"),
    ("newer-version", _set(_top, schema_version=2), "{M}: schema_version 2 was written by a newer edgeresnext"),
    ("version-as-text", _set(_top, schema_version="1"), '{M}.schema_version: expected integer, got "1"'),
    ("version-zero", _set(_top, schema_version=0), "{M}.schema_version: 0 is below the minimum 1"),
    ("precision", _set(_top, precision="int4"), "{M}.precision: 'int4' is not one of ['int8', 'fp16', 'fp32']"),
    ("labels-not-text", _set(_top, labels=5), "{M}.labels: expected string, got 5"),
    ("labels-unlisted", _set(_top, labels="names.txt"), "names.txt: labels file not in the manifest's file list"),
    ("backend-without-version", _pop(lambda m: m["backend"], "version"), "{M}.backend: missing required key 'version'"),
    ("no-artifacts", _set(_top, artifacts=[]), "{M}.artifacts: needs at least 1 items, has 0"),
    ("artifact-files-not-a-list", _set(_kit, files="kit"), '{M}.artifacts[0].files: expected array, got "kit"'),
    ("artifact-precision", _set(_kit, precision="int2"), "{M}.artifacts[0].precision: 'int2' is not one of"),
    (
        "artifact-file-unlisted",
        _append("0", "files", item="kit/model.engine"),
        "artifact file kit/model.engine: not in",
    ),
    (
        "export-unlisted",
        _append("exports", "deepstream", "files", item="deepstream/x"),
        "exports.deepstream: deepstream/x is not",
    ),
    # an engine record (what the device step seals)
    ("engine-record", _engine(), None),
    (
        "engine-onnx-sha256",
        _engine(onnx={"path": FP16, "sha256": "f" * 64}),
        f"kit: built from {FP16} with sha256 {'f' * 16}..., but the bundle's file has",
    ),
    (
        "engine-onnx-sha256-short",
        _engine(onnx={"path": FP16, "sha256": "f"}),
        "{M}.artifacts[0].engine.onnx.sha256: 'f' does",
    ),
    (
        "engine-record-unlisted",
        _engine(record="kit/x.json"),
        "kit: its build record, kit/x.json, is not in the manifest's",
    ),
    ("engine-record-outside", _engine(record="../x.json"), f"{{M}}: file path '../x.json' {INSIDE}"),
    (
        "engine-without-gpu",
        _set(_kit, engine={"tensorrt_version": "10.3"}),
        "{M}.artifacts[0].engine: missing required key 'gpu_name'",
    ),
    # not part of the bundle's files
    ("signature-file", _add("bundle.sig", b"{}"), None),
]


built, _ = jetson_fixtures()


@pytest.fixture(scope="module")
def kit_seal(built) -> ModuleType:
    """The kit's ``seal.py``, loaded from the built bundle by path, as ``build_engine.sh`` runs it on the Jetson."""
    assert (built / "kit" / "seal.py").read_bytes() == SEAL_SOURCE.read_bytes()
    return _load(built / "kit" / "seal.py", "parity_kit_seal")


def verdicts(seal: ModuleType, bundle: Path) -> tuple[str | None, str | None]:
    """(what the kit's seal.py says of ``bundle`` before it builds, what ``bundle verify`` says): None for OK."""
    try:
        seal.check_bundle(bundle)
        device = None
    except seal.SealError as err:
        device = str(err)
    try:
        verify_bundle(bundle)
        host = None
    except BundleError as err:
        host = str(err)
    return device, host


def _says(expected: str, bundle: Path) -> re.Pattern:
    """``expected`` as a pattern: ``{M}`` the manifest's path, ``{B}`` the bundle's, ``#`` a number."""
    text = expected.replace("{M}", str(bundle / M)).replace("{B}", str(bundle))
    return re.compile(r"\d+".join(re.escape(part) for part in text.split("#")))


@pytest.mark.promise("docs/jetson.md", "A fault gets the very message `bundle verify` gives: the same file or key")
@pytest.mark.parametrize(("fault", "plant", "expected"), FAULTS, ids=[case[0] for case in FAULTS])
def test_seal_py_and_bundle_verify_give_the_same_verdict_on_a_planted_fault(
    built, kit_seal, tmp_path, fault, plant, expected
):
    """Each fault planted in a copy of a real Jetson bundle, then checked by the kit's seal.py (standard library only)
    and by ``bundle verify``: both refuse it with the very same message (the same file or key, the same reason), or
    both accept it."""
    bundle = copy_bundle(built, tmp_path / "bundle")
    assert verdicts(kit_seal, bundle) == (None, None)
    plant(bundle)
    device, host = verdicts(kit_seal, bundle)
    assert device == host
    if expected is None:
        assert host is None
    else:
        assert host is not None and _says(expected, bundle).search(host), host


def test_the_fault_table_covers_what_the_issue_lists():
    kinds = ("modified", "missing", "unlisted", "oversized", "symlinked", "dotdot", "absolute", "duplicate", "size")
    names = [case[0] for case in FAULTS]
    assert len(FAULTS) >= 30 and len(set(names)) == len(names)
    assert all(any(name.startswith(kind) for name in names) for kind in kinds)


# What only `bundle verify` checks: seal.py accepts these, and says in its output that it did not check them
# (seal.NOT_CHECKED), except an earlier engine build's output, which the device step rebuilds and so tolerates.
GAPS = [
    ("model-section", _edit(lambda m: m["model"].update(num_classes=0)), "model.num_classes: 0 is below", "model"),
    ("backend-name", _edit(lambda m: m["backend"].update(name="npu")), "backend.name: 'npu' is not one of", "backends"),
    ("labels-lines", _reseal("labels.txt", b"T-shirt/top\n\nTrouser\n"), "line 2 is blank", "labels file's lines"),
    ("earlier-engine-output", _add("kit/model.engine"), "kit/model.engine: not listed in the manifest", None),
]


@pytest.mark.promise("docs/jetson.md", "It does not check the rest of the manifest's JSON Schema")
@pytest.mark.promise("docs/reliability.md", "but not the rest of the JSON Schema or the labels file's lines")
@pytest.mark.parametrize(("gap", "plant", "host_says", "not_checked"), GAPS, ids=[case[0] for case in GAPS])
def test_what_only_bundle_verify_checks_seal_py_says_it_did_not(
    built, kit_seal, tmp_path, gap, plant, host_says, not_checked
):
    bundle = copy_bundle(built, tmp_path / "bundle")
    plant(bundle)
    device, host = verdicts(kit_seal, bundle)
    assert device is None and host is not None and host_says in host
    assert not_checked is None or not_checked in kit_seal.NOT_CHECKED


def test_the_kit_readme_says_what_seal_py_does_not_check(built):
    readme = " ".join((built / "kit" / "README.md").read_text(encoding="utf-8").split())
    assert "it checks the bundle as `edgeresnext bundle verify` does, with the same messages" in readme
    assert "It does not check the rest of the manifest's JSON Schema, the labels file's lines or a signature" in readme
