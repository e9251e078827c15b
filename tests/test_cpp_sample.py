"""The OpenVINO C++ sample (examples/cpp/openvino): built with CMake against the OpenVINO Python package, run on
real bundles; its top-5 must equal the Python runtime's for the same image file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import make_bundles
from PIL import Image

from edgeresnext.backends.base import Artifact
from edgeresnext.bundle import bundle_from_artifacts
from edgeresnext.runtime import load_bundle

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cpp" / "openvino"
MISSING = [tool for tool in ("cmake", "g++") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"the C++ sample needs {' and '.join(MISSING)} on PATH")


@pytest.fixture(scope="module")
def classify(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's executable, configured and built in a temporary folder."""
    import openvino

    build = tmp_path_factory.mktemp("cpp-openvino-build")
    ov_cmake = Path(openvino.__file__).parent / "cmake"
    configure = subprocess.run(
        ["cmake", "-S", str(SAMPLE), "-B", str(build), f"-DOpenVINO_DIR={ov_cmake}", "-DCMAKE_BUILD_TYPE=Release"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    jobs = str(min(2, os.cpu_count() or 1))
    compiled = subprocess.run(["cmake", "--build", str(build), "-j", jobs], capture_output=True, text=True, timeout=600)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    return build / "edgeresnext_ov_classify"


@pytest.fixture(scope="module")
def bundles(shipped_model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("bundles")
    bundles = make_bundles(shipped_model, work)
    # Same IR, but preprocessing that resizes the shorter side to 32 and center-crops 28: exercises the sample's
    # Pillow-compatible resize, crop and RGB -> L conversion on images of other sizes.
    manifest = json.loads((bundles["openvino"] / "manifest.json").read_text())
    files = [work / "openvino" / "compile" / name for name in manifest["artifacts"][0]["files"]]
    ir = Artifact(backend="openvino", precision="fp32", kind="ir", path=files[0], files=files)
    meta = replace(shipped_model.meta, preprocess=replace(shipped_model.meta.preprocess, resize=32, crop=28))
    bundles["resize"] = bundle_from_artifacts(work / "resize" / "bundle", ir, meta)
    return bundles


def run_sample(classify: Path, bundle: Path, image: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(classify), str(bundle), str(image), *extra], capture_output=True, text=True, timeout=120)


def parse_top_k(stdout: str) -> tuple[list[int], list[float], list[str]]:
    rows = [line.split("\t") for line in stdout.strip().splitlines()]
    assert [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))
    return [int(row[1]) for row in rows], [float(row[2]) for row in rows], [row[3] for row in rows]


def assert_same_top5(classify: Path, bundle: Path, image: Path) -> None:
    done = run_sample(classify, bundle, image)
    assert done.returncode == 0, done.stderr
    indices, scores, labels = parse_top_k(done.stdout)
    expected = load_bundle(bundle).predict(image, top_k=5)
    assert indices == expected.indices
    assert labels == expected.labels
    # The same OpenVINO model, config and input (the preprocessing is float32 step for step like numpy's): the same
    # logits. Only the softmax in double and the 9 printed digits (%.9g) may differ.
    np.testing.assert_allclose(scores, expected.scores, rtol=1e-8, atol=0)


def test_cpp_top5_equals_python_on_test_images(classify, bundles, fmnist_test, tmp_path):
    for index in (0, 1, 2, 17, 42):
        image = tmp_path / f"{index}.pgm"
        Image.fromarray(fmnist_test.images[index]).save(image)
        assert_same_top5(classify, bundles["openvino"], image)


@pytest.mark.parametrize("shape", [(37, 45, 3), (45, 37, 3), (80, 64, 3), (29, 33), (100, 90)])
def test_cpp_preprocessing_matches_pillow_with_resize_and_crop(classify, bundles, fmnist_test, tmp_path, shape):
    """Real garments scaled up (Pillow bicubic) and coloured, so the sample must resize, crop and convert."""
    rng = np.random.default_rng(sum(shape))
    garment = Image.fromarray(fmnist_test.images[int(rng.integers(0, 512))]).resize(shape[1::-1], Image.BICUBIC)
    pixels = np.asarray(garment)
    if len(shape) == 3:
        tint = rng.uniform(0.3, 1.0, size=3)
        pixels = np.clip(pixels[:, :, None] * tint + rng.integers(0, 40, size=shape), 0, 255).astype(np.uint8)
    image = tmp_path / ("image.ppm" if len(shape) == 3 else "image.pgm")
    Image.fromarray(pixels).save(image)
    assert_same_top5(classify, bundles["resize"], image)


def test_cpp_sample_refuses_a_tampered_bundle(classify, bundles, fmnist_test, tmp_path):
    bundle = Path(shutil.copytree(bundles["openvino"], tmp_path / "bundle"))
    data = bytearray((bundle / "model.bin").read_bytes())
    data[100] ^= 0x01
    (bundle / "model.bin").write_bytes(bytes(data))
    image = tmp_path / "0.pgm"
    Image.fromarray(fmnist_test.images[0]).save(image)
    done = run_sample(classify, bundle, image)
    assert done.returncode == 1
    assert "model.bin: sha256 differs from the manifest" in done.stderr
    (bundle / "model.bin").unlink()
    assert "model.bin: missing" in run_sample(classify, bundle, image).stderr


def test_cpp_sample_rejects_images_it_cannot_use(classify, bundles, tmp_path):
    png = tmp_path / "image.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png)
    done = run_sample(classify, bundles["openvino"], png)
    assert done.returncode == 1 and "not a binary PGM (P5) or PPM (P6) image" in done.stderr
    wrong_size = tmp_path / "wrong.pgm"
    Image.fromarray(np.zeros((30, 28), np.uint8)).save(wrong_size)
    done = run_sample(classify, bundles["openvino"], wrong_size)
    assert done.returncode == 1 and "preprocessed image is 28x30, the model takes 28x28" in done.stderr


def test_tensorrt_sample_configures_or_says_why_it_is_skipped(tmp_path):
    """Without TensorRT the configure step succeeds, builds nothing and names what is missing."""
    done = subprocess.run(
        ["cmake", "-S", str(SAMPLE.parent / "tensorrt"), "-B", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if "build skipped:" in done.stderr:
        assert "TensorRT" in done.stderr or "CUDA toolkit" in done.stderr
        build = subprocess.run(["cmake", "--build", str(tmp_path)], capture_output=True, text=True, timeout=300)
        assert build.returncode == 0 and not (tmp_path / "edgeresnext_trt_classify").exists()
    else:
        assert "TensorRT" in done.stdout
