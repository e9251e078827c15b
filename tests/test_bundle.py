"""Bundles: manifest schema, sha256 of every file, tamper detection, atomic replacement, CLI ``bundle verify``."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import pytest
from bundle_helpers import SUMMARY, make_bundles

from edgeresnext.backends.base import Artifact, Backend
from edgeresnext.bundle import MANIFEST, SCHEMA_PATH, BundleError, bundle_from_artifacts, verify_bundle
from edgeresnext.cli import main
from edgeresnext.errors import ConfigError
from edgeresnext.records import DeviceRecord, json_schema, key


@pytest.fixture(scope="module")
def bundles(shipped_model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_bundles(shipped_model, tmp_path_factory.mktemp("bundles"))


@pytest.fixture
def bundle_copy(bundles: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the OpenVINO bundle that a test may damage."""
    return Path(shutil.copytree(bundles["openvino"], tmp_path / "bundle"))


# What the device step records about an engine (tests/test_jetson_bundle.py makes real ones).
ENGINE_SECTION = {
    "tensorrt_version": "10.3.0",
    "gpu_name": "Orin",
    "gpu_sm": "8.7",
    "build_mode": "strongly_typed",
    "onnx": {"path": "model.onnx", "sha256": "0" * 64},
    "record": "kit/model.engine.json",
}


def _rewrite_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    change(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def test_manifest_describes_model_input_preprocessing_and_backend(bundles, shipped_model):
    manifest = verify_bundle(bundles["openvino"])  # typed: edgeresnext.bundle.model.Manifest
    meta = shipped_model.meta
    assert manifest.format == "edgeresnext-bundle" and manifest.schema_version == 1
    assert manifest.model.arch == meta.arch and manifest.model.num_classes == meta.num_classes
    assert manifest.input.to_json() == {
        "name": "input",
        "shape": [-1, meta.in_channels, 28, 28],
        "dtype": "float32",
        "layout": "NCHW",
        "batch": {"min": 1, "opt": 1, "max": 8},
    }
    pre = manifest.preprocess
    assert (pre.channels, pre.resize, pre.crop) == (meta.preprocess.channels, None, None)
    assert pre.mean == list(meta.preprocess.mean) and pre.std == list(meta.preprocess.std)
    assert pre.scale == pytest.approx(1 / 255)
    assert manifest.output.meaning == "logits" and manifest.output.shape == [-1, meta.num_classes]
    assert manifest.precision == "fp32"
    assert manifest.backend.to_json() == {"name": "openvino", "version": metadata.version("openvino")}
    assert manifest.device.target_device == "CPU"
    assert manifest.validation == {"top1": float(SUMMARY["top1"]), "top1_drop": 0.0, "latency_ms_p50": 0.4}
    assert [a.kind for a in manifest.artifacts] == ["ir", "onnx"]
    assert manifest.artifacts[0].files == ["model.xml", "model.bin"]
    assert manifest.target.name == "test-openvino-fp32"
    labels = (bundles["openvino"] / "labels.txt").read_text().splitlines()
    assert labels == meta.class_names


def test_manifest_lists_every_file_with_its_sha256(bundles):
    bundle = bundles["openvino"]
    manifest = json.loads((bundle / MANIFEST).read_text())
    on_disk = sorted(p.name for p in bundle.iterdir() if p.name != MANIFEST)
    assert (
        [entry["path"] for entry in manifest["files"]]
        == on_disk
        == ["labels.txt", "model.bin", "model.onnx", "model.xml"]
    )
    for entry in manifest["files"]:
        data = (bundle / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)


def test_schema_file_is_the_one_verify_enforces(bundle_copy):
    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(schema["required"]) <= set(json.loads((bundle_copy / MANIFEST).read_text()))
    _rewrite_manifest(bundle_copy, lambda m: m.pop("precision"))
    with pytest.raises(BundleError, match="missing required key 'precision'"):
        verify_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["input"].update(shape=[1, 28, 28]), r"input\.shape: needs at least 4 items"),
        (lambda m: m["input"].update(layout="NHWC"), r"input\.layout: 'NHWC' is not one of \['NCHW'\]"),
        (lambda m: m["input"].update(colour="RGB"), r"input: unknown key 'colour'"),
        (lambda m: m.update(precision="int4"), r"precision: 'int4' is not one of"),
        (lambda m: m["model"].update(num_classes="ten"), r"model\.num_classes: expected integer"),
        (lambda m: m["files"][0].update(sha256="XYZ"), r"files\[0\]\.sha256: 'XYZ' does not match"),
        (lambda m: m.update(schema_version=99), r"schema_version 99 was written by a newer edgeresnext"),
        # An engine section (an engine built on the device) must say what it runs on: runtimes compare it.
        (
            lambda m: m["artifacts"][0].update(engine={**ENGINE_SECTION, "gpu_sm": "unknown"}),
            r"artifacts\[0\]\.engine\.gpu_sm: 'unknown' does not match",
        ),
        (
            lambda m: m["artifacts"][0].update(engine={k: v for k, v in ENGINE_SECTION.items() if k != "onnx"}),
            r"artifacts\[0\]\.engine: missing required key 'onnx'",
        ),
        (
            lambda m: m["artifacts"][0].update(engine=ENGINE_SECTION),
            r"model\.xml: its build record, kit/model\.engine\.json, is not in the manifest's file list",
        ),
    ],
)
def test_malformed_manifest_is_one_clear_error(bundle_copy, change, message):
    _rewrite_manifest(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        verify_bundle(bundle_copy)


def test_a_flipped_byte_is_caught(bundle_copy):
    weights = bundle_copy / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.bin: sha256 differs from the manifest"):
        verify_bundle(bundle_copy)


def test_missing_added_and_resized_files_are_caught(bundle_copy):
    (bundle_copy / "model.onnx").unlink()
    (bundle_copy / "extra.so").write_bytes(b"\x7fELF")
    with open(bundle_copy / "labels.txt", "a") as handle:
        handle.write("Sock\n")
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle_copy)
    message = str(info.value)
    assert "model.onnx: missing" in message
    assert "extra.so: not listed in the manifest" in message
    assert re.search(r"labels\.txt: \d+ bytes, the manifest says \d+", message)


def test_paths_outside_the_bundle_are_refused(bundle_copy):
    _rewrite_manifest(bundle_copy, lambda m: m["files"][0].update(path="../outside.txt"))
    with pytest.raises(BundleError, match="must stay inside the bundle"):
        verify_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder"):
        verify_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="not a bundle"):
        verify_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        verify_bundle(tmp_path)


def test_rebundling_replaces_the_folder_whole(bundles, shipped_model, tmp_path):
    manifest = json.loads((bundles["onnxruntime"] / MANIFEST).read_text())
    onnx_file = tmp_path / "model.onnx"
    shutil.copyfile(bundles["onnxruntime"] / "model.onnx", onnx_file)
    artifact = Artifact(backend="onnxruntime", precision="fp32", kind="onnx", path=onnx_file, files=[onnx_file])
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "stale.engine").write_bytes(b"old")
    bundle_from_artifacts(out, artifact, shipped_model.meta, None)
    assert sorted(p.name for p in out.iterdir()) == ["labels.txt", "manifest.json", "model.onnx"]
    assert verify_bundle(out).validation is None
    assert verify_bundle(out).input.name == manifest["input"]["name"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left


def test_bad_artifacts_and_metadata_are_config_errors(bundles, shipped_model, tmp_path):
    missing = Artifact(backend="openvino", precision="fp32", kind="ir", path=tmp_path / "model.xml")
    with pytest.raises(ConfigError, match=r"model\.xml: file of the openvino artifact not found"):
        bundle_from_artifacts(tmp_path / "bundle", missing, shipped_model.meta)
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"not a protobuf")
    artifact = Artifact(backend="onnxruntime", precision="fp32", kind="onnx", path=onnx_file)
    with pytest.raises(ConfigError, match=r"model\.onnx: cannot read the onnxruntime onnx artifact"):
        bundle_from_artifacts(tmp_path / "bundle", artifact, shipped_model.meta)
    shutil.copyfile(bundles["onnxruntime"] / "model.onnx", onnx_file)
    short = replace(shipped_model.meta, class_names=["a", "b"])
    with pytest.raises(ConfigError, match="2 class names for 10 classes"):
        bundle_from_artifacts(tmp_path / "bundle", artifact, short)
    with pytest.raises(ConfigError, match="not JSON data"):
        bundle_from_artifacts(tmp_path / "bundle", artifact, shipped_model.meta, {"report": object()})
    assert not (tmp_path / "bundle").exists()


def test_cli_bundle_verify(bundles, bundle_copy, capsys):
    assert main(["bundle", "verify", str(bundles["openvino"])]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "openvino" in out and "4 files" in out
    (bundle_copy / "labels.txt").write_text("tampered\n" * 10)
    assert main(["bundle", "verify", str(bundle_copy)]) == 2
    assert "labels.txt" in capsys.readouterr().err


def test_tensorrt_kit_bundle_keeps_the_kit_folder(bundles, shipped_model, tmp_path):
    """Without TensorRT here the backend writes an on-device build kit; the bundle carries it as a folder."""
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed: the backend would build an engine, not a kit")
    from bundle_helpers import fp32_target

    from edgeresnext.backends import get_backend

    target = fp32_target("tensorrt")
    kit = get_backend("tensorrt").compile(bundles["onnxruntime"] / "model.onnx", target, tmp_path / "kit")
    assert kit.kind == "kit"
    bundle = bundle_from_artifacts(tmp_path / "bundle", kit, shipped_model.meta, None, target)
    manifest = verify_bundle(bundle)
    assert manifest.artifacts[0].path == "kit"
    assert {f.path for f in manifest.files} == {"labels.txt"} | {
        f"kit/{p.relative_to(kit.path).as_posix()}" for p in kit.files
    }
    assert (bundle / "kit" / "build_engine.sh").stat().st_mode & 0o111


def test_the_committed_schema_is_the_one_the_model_generates():
    """edgeresnext/schemas/manifest.schema.json is generated from edgeresnext.bundle.model (the shipped backends'
    device sections composed in); an edit of either alone fails here."""
    from edgeresnext.bundle.model import shipped_schema_text

    assert SCHEMA_PATH.read_text(encoding="utf-8") == shipped_schema_text(), (
        f"{SCHEMA_PATH} differs from what edgeresnext.bundle.model generates; run `make schema` and commit it"
    )


# The oldest manifest schema version 1 accepts: its required keys only (no target, exports, validation, batch range,
# preprocessing words, artifact info, built_on; an engine section without sealed_by, built_at or device check).
OPTIONAL = {
    "": ("target", "exports", "validation"),
    "model": ("dataset", "recipe", "metrics", "provenance"),
    "input": ("batch",),
    "preprocess": ("resize_mode", "crop_mode", "order"),
    "output": ("scores",),
    "device": ("built_on",),
}


def _oldest(manifest: dict) -> dict:
    for section, keys in OPTIONAL.items():
        for name in keys:
            (manifest[section] if section else manifest).pop(name, None)
    for artifact in manifest["artifacts"]:
        artifact.pop("info", None)
    return manifest


def test_an_old_manifest_of_required_keys_only_verifies_loads_and_reads_back_unchanged(bundles, tmp_path, fmnist_test):
    """Old bundles stay valid: the typed manifest reads one with only the keys version 1 requires, device apps load it,
    and it is written back key for key (null stays null, an absent key stays absent, the keys' order is kept)."""
    from edgeresnext.bundle.model import Manifest
    from edgeresnext.runtime import load_bundle

    bundle = Path(shutil.copytree(bundles["onnxruntime"], tmp_path / "bundle"))
    _rewrite_manifest(bundle, _oldest)
    raw = json.loads((bundle / MANIFEST).read_text())
    manifest = verify_bundle(bundle)
    assert manifest.target is None and manifest.exports is None and manifest.input.batch is None
    assert manifest.to_json() == raw and list(manifest.to_json()) == list(raw)
    with load_bundle(bundle) as clf:
        assert clf.batch_range == (1, 1) and clf.manifest == manifest and clf.device_check is None
        assert clf.predict(fmnist_test.images[0]).label in clf.labels
    # A manifest as the writer writes it today reads back byte for byte.
    text = (bundles["openvino"] / MANIFEST).read_text()
    assert json.dumps(Manifest.from_json(json.loads(text)).to_json(), indent=2) + "\n" == text


def test_an_engine_section_without_a_device_check_reads_as_unchecked(bundle_copy):
    """An engine sealed before the device check existed: the TensorRT record says unchecked, as runtimes treat it."""
    from edgeresnext.backends.tensorrt.record import EngineRecord
    from edgeresnext.bundle.model import ArtifactEntry
    from edgeresnext.runtime import device_check_status

    entry = {"backend": "tensorrt", "precision": "int8", "kind": "engine", "path": "m.engine", "files": ["m.engine"]}
    artifact = ArtifactEntry.from_json({**entry, "engine": ENGINE_SECTION})
    assert isinstance(artifact.engine, EngineRecord) and artifact.engine.onnx.sha256 == "0" * 64
    assert artifact.engine.check().status == "unchecked" and device_check_status(artifact) == "unchecked"
    assert artifact.to_json() == {**entry, "engine": ENGINE_SECTION}
    assert device_check_status(ArtifactEntry.from_json(entry)) is None


@dataclass(kw_only=True)
class BoardRecord(DeviceRecord):
    """A second on-device backend's record: the board it was built on and the file it was built from."""

    board: str
    source: str
    source_sha256: str = key(pattern="^[0-9a-f]{64}$")

    def sources(self):
        return [("the file it is built from", self.source, self.source_sha256)]


class BoardBackend(Backend):
    name = "board"
    kinds = ("blob",)
    device_record = BoardRecord


def test_each_backends_device_record_is_composed_into_the_schema_and_read_back_typed(monkeypatch):
    """The manifest's device sections come from the registry: a second backend with its own record adds its section's
    schema (one of them must hold, the key named when none does) and its artifacts' sections read back as its type."""
    from edgeresnext.backends.tensorrt.record import EngineRecord
    from edgeresnext.bundle.manifest import check_schema, manifest_schema
    from edgeresnext.bundle.model import ArtifactEntry
    from edgeresnext.registry import BACKENDS

    monkeypatch.setitem(BACKENDS, "board", f"{__name__}:BoardBackend")
    item = manifest_schema()["properties"]["artifacts"]["items"]
    assert "board" in item["properties"]["backend"]["enum"] and "blob" in item["properties"]["kind"]["enum"]
    sections = item["properties"]["engine"]["anyOf"]
    assert [sorted(s["required"]) for s in sections] == [
        sorted(json_schema(BoardRecord)["required"]),
        sorted(json_schema(EngineRecord)["required"]),
    ]
    section = {"board": "npu-1", "source": "model.onnx", "source_sha256": "a" * 64}
    check_schema(section, item["properties"]["engine"], "manifest.artifacts[0].engine")
    with pytest.raises(BundleError, match=r"manifest\.artifacts\[0\]\.engine: missing required key"):
        check_schema({"board": "npu-1"}, item["properties"]["engine"], "manifest.artifacts[0].engine")
    entry = {"backend": "board", "precision": "int8", "kind": "blob", "path": "m.blob", "files": ["m.blob"]}
    artifact = ArtifactEntry.from_json({**entry, "engine": section})
    assert isinstance(artifact.engine, BoardRecord) and artifact.engine.sources()[0][1] == "model.onnx"
    assert artifact.to_json() == {**entry, "engine": section}


def test_the_device_step_names_what_is_wrong_with_a_damaged_manifest(bundle_copy, capsys):
    """Before the device step picks a backend, the manifest is read as `bundle verify` reads it: a damaged one is
    refused naming its key, whatever its backend (it once fell back to TensorRT: "no TensorRT build kit in this bundle
    (it has: openvino ir)"), and nothing is touched."""
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    manifest["input"]["shape"] = "x"
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in bundle_copy.rglob("*") if p.is_file()}
    assert main(["bundle", "build-engine", str(bundle_copy)]) == 2
    said = capsys.readouterr().err
    assert "manifest.json.input.shape: expected array" in said and "; the bundle is unchanged" in said, said
    assert {p.name: p.read_bytes() for p in bundle_copy.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("export", ["bar", {}, {"files": [1]}, {"files": "labels.txt"}])
def test_an_export_that_is_not_a_file_list_is_refused_naming_its_key(bundle_copy, export):
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    manifest["exports"] = {"foo": export}
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest\.json\.exports\.foo: expected an object with files: \[path"):
        verify_bundle(bundle_copy)


@pytest.mark.parametrize("key", ["labels", "artifact path", "file entry"])
def test_a_bundle_loaded_unverified_is_never_read_outside_its_folder(bundle_copy, tmp_path, key):
    """load_bundle(..., verify=False) skips the hashes, not the rule that every path the manifest names stays inside
    the bundle: a '..' path is refused before anything is read through it."""
    from edgeresnext.runtime import load_bundle

    outside = tmp_path / "outside.txt"
    outside.write_text("T-shirt/top\n")
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    name = "../outside.txt"
    if key == "labels":
        manifest["labels"] = name
    elif key == "artifact path":
        manifest["artifacts"][0]["path"] = name
    else:
        manifest["files"][0]["path"] = name
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"file path '\.\./outside\.txt' must stay inside the bundle"):
        load_bundle(bundle_copy, verify=False)
