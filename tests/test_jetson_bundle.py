"""The Jetson bundle on the device: one command builds the engine from the bundle's kit and records it in the
manifest, after which `bundle verify`, `load_bundle()` and the C++ reader accept it.

A real jetson.yaml build makes the bundle; a stand-in trtexec (tests/jetson_helpers.py) stands in for TensorRT,
which cannot run here. The device command runs as on a Jetson without edgeresnext: the kit's build_engine.sh and a
python3 started with -I -S (standard library only). Real engines: the `gpu`/`tensorrt` test at the end.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import reseal
from jetson_helpers import (
    copy_bundle,
    jetson_fixtures,
    run_device_command,
    sealed_copy,
    snapshot,
    stand_in_python_api_build,
)

from edgeresnext.backends import get_backend
from edgeresnext.backends.tensorrt import read_kit
from edgeresnext.bundle import BundleError, finish_on_device, read_manifest, verify_bundle
from edgeresnext.cli import main
from edgeresnext.errors import BackendUnavailable
from edgeresnext.runtime import load_bundle

GPU_REASON = get_backend("tensorrt").available()
# The engine, its record, trtexec's log, the timing cache, and DeepStream's engine (tests/test_deepstream.py).
ENGINE_FILES = [
    "kit/model.engine",
    "kit/model.engine.json",
    "kit/build_engine.log",
    "kit/timing.cache",
    "kit/model.deepstream.engine",
]


# built: the bundle `make build TARGET=jetson` writes (small data), never changed by a test; bin_dir: the stand-in
built, bin_dir = jetson_fixtures()


@pytest.fixture
def bundle(built, tmp_path) -> Path:
    """The bundle as copied to the device."""
    return copy_bundle(built, tmp_path / "device" / "bundle")


@pytest.fixture(scope="module")
def sealed_once(built, bin_dir, tmp_path_factory) -> Path:
    return sealed_copy(built, bin_dir, tmp_path_factory.mktemp("sealed"))


@pytest.fixture
def sealed(sealed_once, tmp_path) -> Path:
    """A bundle after the device command, private to the test."""
    return copy_bundle(sealed_once, tmp_path / "device-sealed" / "bundle")


# ------------------------------------------------------------------------------------------ before the device step
def test_the_built_bundle_carries_the_kit_and_says_what_to_run(built, capsys):
    manifest = verify_bundle(built)
    assert [(a.kind, a.path) for a in manifest.artifacts] == [("kit", "kit")]
    assert {"kit/build_engine.sh", "kit/seal.py", "kit/kit.json"} <= {f.path for f in manifest.files}
    assert main(["bundle", "verify", str(built)]) == 0
    out = capsys.readouterr().out
    assert f"engine: not built yet; on the device run `edgeresnext bundle build-engine {built}`" in out
    with pytest.raises(BackendUnavailable) as refused:
        load_bundle(built)
    assert f"build the engine on the device first: `edgeresnext bundle build-engine {built}`" in str(refused.value)


@pytest.mark.promise("docs/jetson.md", "the bundle carries the weights once")
def test_the_kits_three_models_keep_their_weights_once_in_one_file(built, fmnist_batch):
    """The Q/DQ ONNX, its FP16 variant and DeepStream's hold the same INT8 weights: they keep every tensor of 1 KB or
    more in kit/model.weights, once, and each still runs from the kit exactly as it does with its tensors inside."""
    from onnx import TensorProto

    from edgeresnext.onnx_io import SHARED_MIN_BYTES, load_onnx_safely, ort_session

    kit = built / "kit"
    models = sorted(kit.glob("*.onnx"))
    assert [p.name for p in models] == ["model.deepstream.onnx", "model.qdq-fp16.onnx", "model.qdq.onnx"]
    weights = kit / "model.weights"
    batch = np.ascontiguousarray(fmnist_batch[:8], dtype=np.float32)
    inline_bytes, payloads = 0, set()
    for path in models:
        external = load_onnx_safely(path, load_external_data=False)
        large = [t for t in external.graph.initializer if t.data_location == TensorProto.EXTERNAL]
        assert large and {e.value for t in large for e in t.external_data if e.key == "location"} == {weights.name}
        whole = load_onnx_safely(path)  # the tensors read back in
        assert all(len(t.raw_data) < SHARED_MIN_BYTES for t in external.graph.initializer if t.HasField("raw_data"))
        payloads |= {t.raw_data for t in whole.graph.initializer if len(t.raw_data) >= SHARED_MIN_BYTES}
        inline = whole.SerializeToString()
        inline_bytes += len(inline)
        # The same graph and the same tensor bytes in one process: ONNX Runtime computes the same bits.
        name = whole.graph.input[0].name
        from_kit = ort_session(path, 1, "all").run(None, {name: batch})[0]
        from_bytes = ort_session(inline, 1, "all").run(None, {name: batch})[0]
        np.testing.assert_array_equal(from_kit, from_bytes)
    # Each distinct tensor once (at most 63 bytes of alignment before each), so the three models with their weights
    # weigh under half of what they did with their tensors inside (a third, plus the small tensors each keeps).
    distinct = sum(len(data) for data in payloads)
    assert distinct <= weights.stat().st_size < distinct + 64 * len(payloads)
    kit_bytes = sum(p.stat().st_size for p in models) + weights.stat().st_size
    assert kit_bytes < 0.5 * inline_bytes, (kit_bytes, inline_bytes)
    manifest = verify_bundle(built)
    assert "kit/model.weights" in {f.path for f in manifest.files}
    # The validation's precision report read ONNX Runtime's optimised graph of the stand-in, whose tensors name the
    # weights file relative to the kit (it once failed there, and the row said nothing of what runs in INT8).
    report = json.loads((kit / "check" / "host_report.json").read_text(encoding="utf-8"))
    row = next(a for a in report["artifacts"] if a["name"] == "qdq-int8-fp16 (onnxruntime)")
    assert row["info"]["runtime"]["convs"] > 0


def test_seal_py_is_the_package_module_and_needs_only_the_standard_library(built):
    from edgeresnext.backends.tensorrt import seal

    source = Path(seal.__file__).read_text(encoding="utf-8")
    assert (built / "kit" / "seal.py").read_text(encoding="utf-8") == source
    ast.parse(source, feature_version=(3, 8))  # JetPack 5's Python reads it too (JetPack 6 has 3.10)
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


# ------------------------------------------------------------------------------------------ the device command
@pytest.mark.promise("docs/jetson.md", "and it says so after sealing")
def test_device_command_without_edgeresnext_seals_the_engine(bundle, bin_dir, capsys):
    from edgeresnext.backends.tensorrt import seal

    done = run_device_command(bundle, bin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert (
        seal.unchecked_structure_note() in lines
        and "NOT CHECKED: the rest of the manifest's JSON Schema" in done.stdout
    )
    assert lines[0].startswith("+ ") and "--stronglyTyped" in lines[0]  # TensorRT 10 (the banner's v100300)
    assert lines[-3:] == [
        f"engine: {bundle.resolve()}/kit/model.engine  (strongly typed, TensorRT 10.3.0, Orin SM 8.7, built with "
        "trtexec)",
        f"from: kit/model.qdq-fp16.onnx  (sha256 {_sha(bundle, 'kit/model.qdq-fp16.onnx')[:16]}...)",
        f"OK {bundle.resolve()}: sealed, 31 files, sha256 verified; the engine is the primary artifact, the kit stays "
        "listed for rebuilding on another device",
    ]
    typed = verify_bundle(bundle)
    engine, kit = typed.artifacts
    assert engine.engine.gpu_sm == "8.7" and engine.engine.check().status == "checked"  # typed: EngineRecord
    manifest = typed.to_json()  # as the device wrote it
    engine, kit = manifest["artifacts"]
    assert (engine["kind"], engine["path"], engine["files"]) == ("engine", "kit/model.engine", ENGINE_FILES)
    assert (kit["kind"], kit["path"]) == ("kit", "kit") and "kit/build_engine.sh" in kit["files"]
    assert engine["engine"] == {
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "gpu_sm": "8.7",
        "build_mode": "strongly_typed",
        "onnx": {"path": "kit/model.qdq-fp16.onnx", "sha256": _sha(bundle, "kit/model.qdq-fp16.onnx")},
        "record": "kit/model.engine.json",
        "built_with": "trtexec",
        "sealed_by": "seal.py",
        "built_at": engine["info"]["built_at"],
        "device_check": engine["engine"]["device_check"],  # tests/test_device_check.py reads it
    }
    assert engine["engine"]["device_check"]["status"] == "checked"
    assert manifest["backend"] == {"name": "tensorrt", "version": "10.3.0"} and manifest["schema_version"] == 1
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert all(listed[name] == _sha(bundle, name) for name in ENGINE_FILES)
    assert main(["bundle", "verify", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "for tensorrt 10.3.0 (jetson-orin), 31 files, sha256 verified" in out
    assert "engine: kit/model.engine built with TensorRT 10.3.0 on Orin (SM 8.7, strongly typed) from kit/" in out


def test_edgeresnext_build_engine_is_the_same_step(bundle, bin_dir, sealed_once, capsys):
    assert main(["bundle", "build-engine", str(bundle), "--trtexec", str(bin_dir / "trtexec")]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith(f"OK {bundle.resolve()}: sealed, 31 files")
    mine, theirs = read_manifest(bundle).to_json(), read_manifest(sealed_once).to_json()
    assert mine["artifacts"][0]["engine"]["sealed_by"].startswith("edgeresnext ")
    for manifest in (mine, theirs):  # what differs: the time, who sealed it, and so the build record's bytes
        assert manifest["artifacts"][0]["engine"].pop("device_check")["status"] == "checked"  # timed: differs
        del manifest["artifacts"][0]["engine"]["sealed_by"], manifest["artifacts"][0]["engine"]["built_at"]
        del manifest["artifacts"][0]["info"]["built_at"]
        manifest["files"] = [f for f in manifest["files"] if f["path"] != "kit/model.engine.json"]
    assert mine == theirs


def test_the_python_api_builds_from_the_kits_plan(bundle, monkeypatch, capsys):
    """--python-api (and `compile --on-device` of a kit inside a bundle) build with the kit's own plan, in the copy."""
    import edgeresnext.backends.tensorrt.engine as tensorrt  # the Python API build the device step calls

    calls = []

    def engine_from_onnx(onnx_path, engine_path, plan, timing_cache=None):
        calls.append((Path(onnx_path), plan, timing_cache and Path(timing_cache)))
        Path(engine_path).write_bytes(b"stand-in engine")
        if timing_cache is not None:
            Path(timing_cache).write_bytes(b"stand-in cache")
        info = {"onnx": Path(onnx_path).name, "tensorrt_version": "10.7.0", "gpu_name": "NVIDIA H200"}
        info |= {"gpu_sm": "9.0", "build_mode": plan.build_mode, "built_with": "tensorrt-python"}
        Path(f"{engine_path}.json").write_text(json.dumps(info))
        return info

    monkeypatch.setattr(tensorrt, "engine_from_onnx", engine_from_onnx)
    manifest = finish_on_device(bundle, python_api=True)
    ((onnx_path, plan, cache), (variant, variant_plan, no_cache)) = calls
    assert plan == read_kit(bundle / "kit")["plan"] and onnx_path.name == plan.onnx == "model.qdq-fp16.onnx"
    assert onnx_path.parent.parent != bundle.resolve() and cache.name == "timing.cache"  # built in the staged copy
    # DeepStream's variant: the same plan, its own ONNX and engine, no timing cache
    assert (variant.name, variant_plan.engine, no_cache) == ("model.deepstream.onnx", "model.deepstream.engine", None)
    assert variant_plan.build_mode == plan.build_mode and variant_plan.batch == plan.batch
    engine = manifest["artifacts"][0]
    assert engine["files"] == [
        "kit/model.engine",
        "kit/model.engine.json",
        "kit/timing.cache",
        "kit/model.deepstream.engine",
        "kit/model.deepstream.engine.json",
    ]
    assert engine["engine"]["built_with"] == "tensorrt-python" and engine["engine"]["gpu_sm"] == "9.0"
    verify_bundle(bundle)
    # The kit's own command still works inside a bundle, and now records the engine too (a rebuild here); with no
    # trtexec to run the device check, the engine is sealed unchecked and the command exits 3, as build-engine does.
    assert main(["compile", "--on-device", str(bundle / "kit")]) == 3
    assert "OK" in capsys.readouterr().out and len(calls) == 4  # the engine and DeepStream's, twice
    assert [a.kind for a in verify_bundle(bundle).artifacts] == ["engine", "kit"]


def test_trtexec_version_from_the_banner_when_the_version_line_is_missing(bundle, bin_dir):
    done = run_device_command(bundle, bin_dir, FAKE_TRT_VERSION="", FAKE_BANNER="100701")
    assert done.returncode == 0, done.stderr
    assert read_manifest(bundle).artifacts[0].engine.tensorrt_version == "10.7.1"


def test_rebuilding_on_another_device_replaces_the_engine(sealed, bin_dir):
    done = run_device_command(sealed, bin_dir, FAKE_GPU="NVIDIA H200", FAKE_SM="9.0", FAKE_TRT_VERSION="10.7.0")
    assert done.returncode == 0, done.stderr
    manifest = verify_bundle(sealed)
    assert [a.kind for a in manifest.artifacts] == ["engine", "kit"]
    assert manifest.artifacts[0].engine.gpu_sm == "9.0" and manifest.backend.version == "10.7.0"
    assert sum(f.path == "kit/model.engine" for f in manifest.files) == 1
    assert b"SM 9.0" in (sealed / "kit" / "model.engine").read_bytes()


def test_an_engine_an_old_kit_built_in_place_is_rebuilt_and_sealed(bundle, bin_dir):
    """What happened before this step existed: build_engine.sh wrote the engine into the bundle, nothing sealed it."""
    assert run_device_command(bundle, bin_dir, EDGERESNEXT_SEAL="0").returncode == 0
    with pytest.raises(BundleError, match=r"kit/build_engine\.log: not listed.*kit/model\.engine: not listed"):
        verify_bundle(bundle)
    done = run_device_command(bundle, bin_dir)
    assert done.returncode == 0, done.stderr
    assert verify_bundle(bundle).artifacts[0].path == "kit/model.engine"


def test_a_rebuild_reuses_the_timing_cache(sealed, bin_dir):
    done = run_device_command(sealed, bin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Loaded timing cache from timing.cache" in done.stdout
    assert (sealed / "kit" / "timing.cache").read_text() == "stand-in timing cache\nreused by a build\n"
    assert verify_bundle(sealed).artifacts[0].files == ENGINE_FILES


def test_a_refused_timing_cache_is_dropped_said_and_rebuilt(sealed, bin_dir):
    done = run_device_command(sealed, bin_dir, FAKE_REFUSE_CACHE="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "seal.py: the build failed with the earlier build's timing cache kit/timing.cache (build_engine.sh failed "
        "(exit 1; its output is above)); building again without it"
    ) in done.stderr
    assert (sealed / "kit" / "timing.cache").read_text() == "stand-in timing cache\n"  # a new one
    verify_bundle(sealed)


def test_tensorrt_8_is_named_with_the_jetpack_that_brings_10(bundle, bin_dir, monkeypatch, capsys):
    """JetPack 6.0: trtexec's banner says [TensorRT v8602] (8.6.2); no tensorrt module in the device's python3."""
    before = snapshot(bundle)
    done = run_device_command(bundle, bin_dir, FAKE_BANNER="8602", FAKE_TRT_VERSION="8.6.2")
    assert done.returncode == 2
    assert (
        "build_engine.sh: TensorRT 8.6.2 found; needs TensorRT 10 or later (JetPack 6.1 and later)"
        in done.stderr.splitlines()
    )
    assert snapshot(bundle) == before
    monkeypatch.setenv("FAKE_BANNER", "8602")  # edgeresnext's own trtexec build tells the version the same way
    assert main(["bundle", "build-engine", str(bundle), "--trtexec", str(bin_dir / "trtexec")]) == 2
    assert capsys.readouterr().err == (
        "edgeresnext bundle: error: TensorRT 8.6.2 found; needs TensorRT 10 or later (JetPack 6.1 and later); the "
        "bundle is unchanged\n"
    )
    assert snapshot(bundle) == before


def test_the_kit_file_carries_no_build_host_paths(built):
    text = (built / "kit" / "kit.json").read_text()
    kit = json.loads(text)
    host_root = built.parents[2]  # the folder holding the build and the calibration images' parent
    assert str(host_root) not in text and str(Path.home()) not in text and "build/" not in text
    assert kit["build_trtexec"] == "./build_engine.sh" and kit["build_python"] == "edgeresnext compile --on-device ."
    assert kit["host_paths_omitted"] == ["quant.calib_dir"]
    calib_dir = Path(read_manifest(built).target.config["quant"]["calib_dir"])
    assert calib_dir.is_absolute() and kit["target_config"]["quant"]["calib_dir"] == calib_dir.name


def test_without_tensorrt_load_bundle_names_both_packages(sealed):
    if GPU_REASON is None:
        pytest.skip("TensorRT runs here")
    with pytest.raises(BackendUnavailable) as refused:
        load_bundle(sealed)
    said = str(refused.value)
    assert "TensorRT engines run with the tensorrt and cuda-python packages (import names tensorrt and cuda)" in said
    assert "the tensorrt Python package is not installed" in said and "cuda-python is not installed" in said


def test_the_host_stand_in_runs_for_the_kit_and_for_the_sealed_engine(built, sealed):
    """load_bundle(..., stand_in=True): the FP16 Q/DQ ONNX in ONNX Runtime, found among the kit's files, and for the
    sealed engine as the ONNX its engine section records it was built from (the engine's own files do not list it)."""
    for bundle in (built, sealed):
        with load_bundle(bundle, stand_in=True) as clf:
            assert clf.stand_in == "qdq-int8-fp16 (onnxruntime)" and clf.backend == "tensorrt"
            assert Path(clf.runner.artifact.path).resolve() == (bundle / "kit" / "model.qdq-fp16.onnx").resolve()
            assert clf.predict(np.zeros((1, 28, 28), np.float32)).label in clf.labels
    assert "kit/model.qdq-fp16.onnx" not in read_manifest(sealed).artifacts[0].files


# ------------------------------------------------------------------------------------------ refusals
def test_a_flipped_byte_in_the_engine_is_refused(sealed, capsys):
    engine = sealed / "kit" / "model.engine"
    data = bytearray(engine.read_bytes())
    data[3] ^= 0x01
    engine.write_bytes(bytes(data))
    assert main(["bundle", "verify", str(sealed)]) == 2
    assert "kit/model.engine: sha256 differs from the manifest (modified or corrupt)" in capsys.readouterr().err
    with pytest.raises(BundleError, match=r"kit/model\.engine: sha256 differs"):
        load_bundle(sealed)


def test_an_engine_claiming_another_onnx_is_refused(sealed):
    manifest = json.loads((sealed / "manifest.json").read_text())
    manifest["artifacts"][0]["engine"]["onnx"]["sha256"] = "0" * 64
    (sealed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"kit/model\.engine: built from kit/model\.qdq-fp16\.onnx with sha256 0{16}"):
        verify_bundle(sealed)


@pytest.mark.parametrize(
    ("here", "differs"),
    [
        ({"tensorrt_version": "10.7.0", "gpu_name": "Orin", "gpu_sm": "8.7"}, "the TensorRT version differs"),
        ({"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H200", "gpu_sm": "9.0"}, "the GPU's SM differs"),
        (
            {"tensorrt_version": "11.0.0", "gpu_name": "NVIDIA H200", "gpu_sm": "9.0"},
            "the TensorRT version and the GPU's SM differ",
        ),
    ],
)
def test_a_foreign_engine_is_refused_before_it_is_deserialised(sealed, monkeypatch, here, differs):
    from edgeresnext.backends.tensorrt import backend

    monkeypatch.setattr(backend.TensorRTBackend, "available", lambda self: None)
    monkeypatch.setattr(backend, "device_facts", lambda: here)
    monkeypatch.setattr(backend, "TensorRTRunner", _must_not_deserialise)
    with pytest.raises(BackendUnavailable) as refused:
        load_bundle(sealed)
    assert str(refused.value) == (
        f"{sealed}: {sealed}/kit/model.engine: this engine cannot run here: built with TensorRT 10.3.0 for Orin "
        f"(SM 8.7), but this device runs TensorRT {here['tensorrt_version']} on {here['gpu_name']} "
        f"(SM {here['gpu_sm']}): {differs}. Engines run only with the TensorRT version and GPU that built them; "
        f"rebuild it on this device: `edgeresnext bundle build-engine {sealed}` (or `{sealed}/kit/build_engine.sh` "
        "without edgeresnext)"
    )


def test_an_engine_for_this_device_reaches_tensorrt(sealed, monkeypatch):
    """Same TensorRT release (10.3.0 and 10.3.0.30 are one release) and SM: the check lets the runner load it."""
    from edgeresnext.backends.tensorrt import backend

    monkeypatch.setattr(backend.TensorRTBackend, "available", lambda self: None)
    monkeypatch.setattr(backend, "device_facts", lambda: {"tensorrt_version": "10.3.0.30", "gpu_sm": "8.7"})
    monkeypatch.setattr(backend, "TensorRTRunner", _must_not_deserialise)
    with pytest.raises(AssertionError, match=r"deserialise kit/model\.engine built with TensorRT 10\.3\.0"):
        load_bundle(sealed)


def _must_not_deserialise(artifact, options):
    raise AssertionError(
        f"deserialise {Path(artifact.path).parent.name}/{Path(artifact.path).name} built with TensorRT "
        f"{artifact.info.extra['tensorrt_version']}"
    )


def test_the_command_wants_the_bundle_folder(bundle, tmp_path):
    with pytest.raises(BundleError, match=r"kit: not a bundle \(no manifest\.json\); give the bundle folder"):
        finish_on_device(bundle / "kit")
    (bundle / "manifest.json").write_text(json.dumps({"files": [{"path": "labels.txt"}], "artifacts": []}))
    # the manifest's structure is checked as `bundle verify` checks it, naming the key (tests/test_parity.py)
    with pytest.raises(BundleError, match=r"manifest\.json: missing required key 'format'; the bundle is unchanged"):
        finish_on_device(bundle)


def test_a_stray_file_is_refused_before_and_after_the_step(bundle, sealed, bin_dir):
    (bundle / "notes.txt").write_text("not from the build\n")
    before = snapshot(bundle)
    done = run_device_command(bundle, bin_dir)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"seal.py: error: {bundle.resolve()}: bundle does not match its manifest: notes.txt: not listed in the "
        "manifest; the bundle is unchanged"
    )
    assert snapshot(bundle) == before
    (sealed / "kit" / "extra.engine").write_bytes(b"someone else's engine")
    with pytest.raises(BundleError, match=r"kit/extra\.engine: not listed in the manifest"):
        verify_bundle(sealed)
    with pytest.raises(BundleError, match=r"kit/extra\.engine: not listed in the manifest"):
        load_bundle(sealed)


@pytest.mark.parametrize(
    ("fake", "message"),
    [
        ({"FAKE_FAIL": "1"}, "build_engine.sh failed (exit 1; its output is above)"),
        (
            {"FAKE_SM": ""},
            "kit/model.engine.json does not say the GPU's SM (tensorrt_version='10.3.0', gpu_sm='unknown'; trtexec "
            "prints them as 'TensorRT version:' and 'Compute Capability:'); an engine whose TensorRT version and SM "
            "are unknown cannot be checked before it is loaded, so it is not sealed",
        ),
        (
            {"FAKE_STRAY": "notes.txt"},
            "the engine build left files it is not known to make: kit/notes.txt; only kit/build_engine.log, "
            "kit/model.deepstream.engine, kit/model.deepstream.engine.json, kit/model.engine, kit/model.engine.json, "
            "kit/timing.cache are sealed",
        ),
    ],
)
def test_a_failed_build_leaves_the_bundle_exactly_as_it_was(bundle, sealed, bin_dir, fake, message, capsys):
    for folder in (bundle, sealed):  # before any engine, and with one to be replaced
        before = snapshot(folder)
        done = run_device_command(folder, bin_dir, **fake)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines()[-1] == f"seal.py: error: {message}; the bundle is unchanged"
        assert snapshot(folder) == before
        verify_bundle(folder)
    before = snapshot(bundle)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in fake.items():
            patch.setenv(name, value)
        assert main(["bundle", "build-engine", str(bundle), "--trtexec", str(bin_dir / "trtexec")]) == 2
    said = message.replace("build_engine.sh failed", "trtexec failed")  # edgeresnext runs trtexec, not the script
    assert capsys.readouterr().err.strip().endswith(f"error: {said}; the bundle is unchanged")
    assert snapshot(bundle) == before


PLANTED = {  # a line in each kit file that would touch its own marker if edgeresnext ran that file
    "kit/build_engine.sh": "touch {marker}\n",
    "kit/seal.py": "\nopen({marker!r}, 'w').close()\n",
    "kit/device_check.py": "\nopen({marker!r}, 'w').close()\n",
    "kit/check/stats.py": "\nopen({marker!r}, 'w').close()\n",
}


def test_edgeresnext_never_runs_code_from_the_bundle(bundle, bin_dir, tmp_path, monkeypatch):
    """Tampered, resealed kit files (sha256 and size updated in manifest.json: `verify` passes) are data to edgeresnext:
    `bundle build-engine` and `compile --on-device` run the package's own code and the device's trtexec."""

    markers = {name: tmp_path / f"ran-{Path(name).name}" for name in PLANTED}
    for name, marker in markers.items():
        path = bundle / name
        if name.endswith(".sh"):  # before the script's first command
            head, _, body = path.read_text().partition("set -euo pipefail\n")
            path.write_text(head + "set -euo pipefail\n" + PLANTED[name].format(marker=marker) + body)
        else:
            path.write_text(path.read_text() + PLANTED[name].format(marker=str(marker)))
        reseal(bundle, name)
    verify_bundle(bundle)  # the sha256 values catch accidents, not this
    assert main(["bundle", "build-engine", str(bundle), "--trtexec", str(bin_dir / "trtexec")]) == 0
    assert read_manifest(bundle).artifacts[0].engine.device_check.status == "checked"
    assert [name for name, marker in markers.items() if marker.exists()] == []

    stand_in_python_api_build(monkeypatch)
    monkeypatch.setenv("TRTEXEC", str(bin_dir / "trtexec"))  # the device check runs the engine with it
    assert main(["compile", "--on-device", str(bundle / "kit")]) == 0
    assert read_manifest(bundle).artifacts[0].engine.device_check.status == "checked"
    assert [name for name, marker in markers.items() if marker.exists()] == []


def test_python_api_without_tensorrt_leaves_the_bundle_as_it_was(bundle):
    if GPU_REASON is None:
        pytest.skip("TensorRT runs here")
    before = snapshot(bundle)
    with pytest.raises(BackendUnavailable, match=r"tensorrt.*; the bundle is unchanged"):
        finish_on_device(bundle, python_api=True)
    assert snapshot(bundle) == before


# ------------------------------------------------------------------------------------------ GPU host
@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(GPU_REASON is not None, reason=f"TensorRT cannot run here: {GPU_REASON}")
def test_a_real_engine_built_into_the_bundle_runs(bundle, fmnist_batch):
    """The device step with TensorRT's Python API on whatever GPU runs the tests, then the device app."""
    import onnxruntime as ort

    manifest = finish_on_device(bundle, python_api=True)
    assert manifest["artifacts"][0]["engine"]["built_with"] == "tensorrt-python"
    session = ort.InferenceSession(str(bundle / "kit" / "model.qdq-fp16.onnx"), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input": fmnist_batch})[0]
    with load_bundle(bundle) as clf:
        assert clf.backend == "tensorrt" and clf.artifact.kind == "engine"
        logits = clf.logits(fmnist_batch)
    assert float((logits.argmax(1) == reference.argmax(1)).mean()) >= 0.97
    assert np.isfinite(logits).all()


def _sha(bundle: Path, name: str) -> str:
    import hashlib

    return hashlib.sha256((bundle / name).read_bytes()).hexdigest()
