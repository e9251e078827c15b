"""Triton model repositories (`edgeresnext bundle triton`): configs parsed strictly with Triton's own schema
(tritonclient's model_config_pb2), and the end-to-end entry served by a real tritonserver (the nvidia-pytriton
wheel's) whose answers are compared with load_bundle(...).predict on the same images.

The wheel has no ONNX Runtime, OpenVINO or TensorRT backend: native entries are checked against the manifest and the
schema, the end-to-end entry (Python backend) is served for real.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import make_bundles
from jetson_helpers import copy_bundle, fake_trtexec, jetson_bundle, run_device_command
from PIL import Image
from triton_helpers import server_problem, triton_server

from edgeresnext.bundle import BundleError, verify_bundle
from edgeresnext.cli import main
from edgeresnext.errors import ConfigError
from edgeresnext.runtime import load_bundle
from edgeresnext.serving import RECORD, triton_repository

SERVER_REASON = server_problem()
needs_server = pytest.mark.skipif(SERVER_REASON is not None, reason=f"no Triton server here: {SERVER_REASON}")
# Triton's classification extension prints each score with 6 decimals ("0.104667": C's %f), so a printed score is
# within 5e-7 of the float32 the model returned, which is within 2**-24 (float32's half step below 1) of predict's
# float64 probability.
PRINTED_SCORE_TOLERANCE = 5e-7 + 2**-24


def _parse(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())  # an unknown field is a ParseError


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 57-byte PNG whose header claims width x height pixels (10 gigapixels): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _rows(images: list[bytes]) -> np.ndarray:
    """The IMAGE tensor of one request: one row per image file, zero-padded to the longest."""
    rows = np.zeros((len(images), max(map(len, images))), np.uint8)
    for row, data in zip(rows, images, strict=True):
        row[: len(data)] = np.frombuffer(data, np.uint8)
    return rows


@pytest.fixture(scope="module")
def bundles(shipped_model, tmp_path_factory) -> dict[str, Path]:
    return make_bundles(shipped_model, tmp_path_factory.mktemp("triton-bundles"))


@pytest.fixture(scope="module")
def sealed_jetson(tmp_path_factory, calib_dir) -> Path:
    """The jetson bundle after the device step on the stand-in trtexec (tests/jetson_helpers.py)."""
    built = jetson_bundle(tmp_path_factory, calib_dir)
    bundle = copy_bundle(built, tmp_path_factory.mktemp("triton-jetson") / "bundle")
    done = run_device_command(bundle, fake_trtexec(tmp_path_factory.mktemp("trtexec-triton")))
    assert done.returncode == 0, done.stdout + done.stderr
    return bundle


@pytest.fixture(scope="module")
def repos(bundles, sealed_jetson, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("triton-repos")
    return {
        "onnxruntime": triton_repository(bundles["onnxruntime"], out / "onnxruntime", name="fmnist_ort").path,
        "openvino": triton_repository(bundles["openvino"], out / "openvino", name="fmnist_ov").path,
        "jetson": triton_repository(sealed_jetson, out / "jetson", name="fmnist_trt", stand_in=True).path,
    }


@pytest.fixture(scope="module")
def images(fmnist_test) -> list[bytes]:
    return [_png(image) for image in fmnist_test.images[:24]]


# ------------------------------------------------------------------------------------------ the repository
@pytest.mark.promise("docs/serving.md", "every `config.pbtxt` parses with Triton's own schema")
@pytest.mark.parametrize(
    ("which", "native", "platform", "files"),
    [
        ("onnxruntime", "fmnist_ort", ("platform", "onnxruntime_onnx"), ["model.onnx"]),
        ("openvino", "fmnist_ov", ("backend", "openvino"), ["model.bin", "model.xml"]),
        ("jetson", "fmnist_trt", ("platform", "tensorrt_plan"), ["model.plan"]),
    ],
)
def test_native_entry_matches_the_manifest_and_parses_strictly(
    repos, bundles, sealed_jetson, which, native, platform, files
):
    bundle = sealed_jetson if which == "jetson" else bundles[which]
    manifest = verify_bundle(bundle)
    config = _parse(repos[which] / native / "config.pbtxt")
    assert getattr(config, platform[0]) == platform[1] and config.name == native
    batch = manifest.input.batch
    assert manifest.input.shape[0] == -1 and config.max_batch_size == batch.max == 8
    assert config.HasField("dynamic_batching")
    (inp,) = config.input
    (out,) = config.output
    assert (inp.name, list(inp.dims)) == (manifest.input.name, manifest.input.shape[1:]) == ("input", [1, 28, 28])
    assert (out.name, list(out.dims)) == (manifest.output.name, manifest.output.shape[1:])
    assert inp.data_type == out.data_type == 11  # TYPE_FP32: the manifest's float32
    assert out.label_filename == "labels.txt"
    assert (repos[which] / native / "labels.txt").read_bytes() == (bundle / "labels.txt").read_bytes()
    assert sorted(p.name for p in (repos[which] / native / "1").iterdir()) == files
    artifact = manifest.artifacts[0]
    source = {"model.onnx": artifact.path, "model.xml": artifact.path, "model.plan": artifact.path}
    assert (repos[which] / native / "1" / files[-1]).read_bytes() == (bundle / source[files[-1]]).read_bytes()
    if which == "jetson":  # a plan runs only on the compute capability that built it
        assert dict(config.cc_model_filenames) == {"8.7": "model.plan"} and config.instance_group[0].kind == 1


def test_images_entry_parses_strictly_and_carries_the_verified_bundle(repos, bundles):
    repo = repos["onnxruntime"]
    config = _parse(repo / "fmnist_ort_images" / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 8
    (inp,) = config.input
    (out,) = config.output
    assert (inp.name, inp.data_type, list(inp.dims), inp.allow_ragged_batch) == ("IMAGE", 2, [-1], True)  # UINT8
    assert (out.name, out.data_type, list(out.dims), out.label_filename) == ("SCORES", 11, [10], "labels.txt")
    assert verify_bundle(repo / "fmnist_ort_images" / "1" / "bundle") == verify_bundle(bundles["onnxruntime"])
    model_py = (repo / "fmnist_ort_images" / "1" / "model.py").read_text()
    from edgeresnext.serving import triton

    assert model_py == triton.MODEL_PY.read_text()
    record = json.loads((repo / RECORD).read_text())
    assert record["models"] == {"native": "fmnist_ort", "images": "fmnist_ort_images"}
    listed = {entry["path"] for entry in record["files"]}
    assert listed == {p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file() and p.name != RECORD}


@pytest.mark.promise("docs/serving.md", "The command refuses a bundle whose artifact Triton cannot run yet")
def test_a_kit_without_its_engine_and_a_foreign_folder_are_refused(bundles, tmp_path, tmp_path_factory, calib_dir):
    kit_bundle = jetson_bundle(tmp_path_factory, calib_dir)
    with pytest.raises(BundleError, match=r"tensorrt kit artifact is nothing Triton runs yet; .*build-engine"):
        triton_repository(kit_bundle, tmp_path / "repo")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me\n")
    with pytest.raises(ConfigError, match=r"mine: a folder with files that `edgeresnext bundle triton` did not write"):
        triton_repository(bundles["onnxruntime"], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me\n"
    with pytest.raises(ConfigError, match="inside the bundle"):
        triton_repository(bundles["onnxruntime"], bundles["onnxruntime"] / "triton")
    assert not (tmp_path / "repo").exists()


def test_cli_bundle_triton_rewrites_its_own_repository(bundles, tmp_path, capsys):
    out = tmp_path / "repo"
    for _ in range(2):  # a second run replaces the repository it wrote
        assert main(["bundle", "triton", str(bundles["openvino"]), str(out), "--name", "shoes"]) == 0
    said = capsys.readouterr().out
    assert f"OK {out}: Triton model repository of" in said and "shoes_images: image bytes in" in said
    assert sorted(p.name for p in out.iterdir()) == [RECORD, "shoes", "shoes_images"]
    assert main(["bundle", "triton", str(bundles["openvino"]), str(tmp_path / "x"), "--name", "../up"]) == 2
    assert "--name '../up'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ a real server
@pytest.fixture(scope="module")
def server(repos, tmp_path_factory):
    if SERVER_REASON is not None:
        pytest.skip(f"no Triton server here: {SERVER_REASON}")
    models = ["fmnist_ort_images", "fmnist_ov_images", "fmnist_trt_images"]
    with triton_server(list(repos.values()), models, tmp_path_factory.mktemp("tritonserver")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    import tritonclient.http as http

    return http.InferenceServerClient(server.url)


def _infer(client, model: str, rows: np.ndarray, dtype: str = "UINT8", class_count: int = 0):
    import tritonclient.http as http

    tensor = http.InferInput("IMAGE", list(rows.shape), dtype)
    tensor.set_data_from_numpy(rows)
    output = http.InferRequestedOutput("SCORES", class_count=class_count)
    return client.infer(model, [tensor], outputs=[output]).as_numpy("SCORES")


def _check_top5(printed: np.ndarray, prediction) -> None:
    """Triton's top-5 ("score:index:label") is predict's: labels in order, scores to the printed precision."""
    rows = [item.decode().split(":", 2) for item in printed]
    assert [int(index) for _, index, _ in rows] == prediction.indices
    assert [label for _, _, label in rows] == prediction.labels
    assert np.abs(np.array([float(score) for score, _, _ in rows]) - prediction.scores).max() <= PRINTED_SCORE_TOLERANCE


@pytest.mark.promise("docs/serving.md", "the same top-5 labels in the same order")
@needs_server
@pytest.mark.parametrize(
    ("model", "which", "stand_in"),
    [
        ("fmnist_ort_images", "onnxruntime", False),
        ("fmnist_ov_images", "openvino", False),
        ("fmnist_trt_images", "jetson", True),
    ],
)
def test_served_top5_equals_load_bundle_at_batch_1_and_the_largest_batch(client, repos, model, which, stand_in, images):
    bundle = repos[which] / model / "1" / "bundle"
    decoded = [Image.open(io.BytesIO(data)) for data in images]
    # The reference runs the same batches as the server: kernels may round differently at another batch size (the
    # FP16 stand-in does), so batch 1 is compared with predict on one image, batch 8 with predict on the same 8.
    with load_bundle(bundle, stand_in=stand_in) as classifier:
        singles = [classifier.predict(image, top_k=5) for image in decoded[:8]]
        eights = [classifier.predict(decoded[start : start + 8], top_k=5) for start in range(0, len(decoded), 8)]
        full = classifier.predict(decoded[:8], top_k=10)
    for data, prediction in zip(images[:8], singles, strict=True):  # batch 1, one request at a time
        (printed,) = _infer(client, model, _rows([data]), class_count=5)
        _check_top5(printed, prediction)
    for start, expected in zip(range(0, len(images), 8), eights, strict=True):  # the largest batch: 8 per request
        printed = _infer(client, model, _rows(images[start : start + 8]), class_count=5)
        for row, prediction in zip(printed, expected, strict=True):
            _check_top5(row, prediction)
    scores = _infer(client, model, _rows(images[:8]))  # every class's float32 score: predict's, rounded once
    for row, prediction in zip(scores, full, strict=True):
        assert row[prediction.indices].tolist() == np.float32(prediction.scores).tolist()


@pytest.mark.promise("docs/serving.md", "Bad requests get Triton's error and the server stays ready")
@needs_server
@pytest.mark.parametrize(
    ("rows", "dtype", "status", "said"),
    [
        (np.zeros((1, 2, 3), np.uint8), "UINT8", 400, "unexpected shape for input 'IMAGE'"),
        (np.zeros((9, 4), np.uint8), "UINT8", 400, "batch-size must be <= 8 for 'fmnist_ort_images'"),
        (
            np.zeros((1, 16), np.float32),
            "FP32",
            400,
            "data-type is 'FP32', but model 'fmnist_ort_images' expects 'UINT8'",
        ),
        (_rows([b"this is no image, only words"]), "UINT8", 400, "IMAGE[0]: not a readable image; accepted formats"),
        (_rows([_bomb_png()]), "UINT8", 400, "IMAGE[0]: too large (10,000,000,000 pixels, limit 64,000,000)"),
    ],
    ids=["shape", "batch", "dtype", "non-image", "bomb"],
)
def test_bad_requests_get_triton_s_error_and_the_server_stays_healthy(
    client, server, images, rows, dtype, status, said
):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as refused:
        _infer(client, "fmnist_ort_images", rows, dtype=dtype)
    assert said in refused.value.message() and refused.value.status() == str(status)
    assert server.ready() and client.is_model_ready("fmnist_ort_images")
    assert _infer(client, "fmnist_ort_images", _rows(images[:1]), class_count=1).shape == (1, 1)


@needs_server
def test_serving_writes_nothing_to_home_and_keeps_the_repository(server, repos, client, images):
    _infer(client, "fmnist_ort_images", _rows(images[:2]))
    # The server runs with a HOME of its own, and the model's `import edgeresnext` turns the runtimes' telemetry off
    # before they load (environment.keep_home_clean): not even ONNX Runtime's device id or OpenVINO's client id lands.
    written = {p.relative_to(server.home).as_posix() for p in server.home.rglob("*")}
    assert written == set(), written
    repo = repos["onnxruntime"]
    record = json.loads((repo / RECORD).read_text())
    for entry in record["files"]:
        assert (repo / entry["path"]).stat().st_size == entry["bytes"]
    unlisted = {p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()}
    unlisted -= {entry["path"] for entry in record["files"]} | {RECORD}
    assert all("__pycache__" in name for name in unlisted), unlisted  # Python's bytecode of model.py, nothing else
