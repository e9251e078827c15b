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


# ------------------------------------------------------------------------------------------ a re-sealed Jetson bundle
# What the TensorRT sample does with a bundle before it touches TensorRT: verify it, pick the engine, read what the
# engine was built for, compare that with the running TensorRT and GPU (given on the command line here).
ENGINE_READER = r"""
#include <iostream>
#include "edgeresnext_bundle.hpp"
int main(int argc, char** argv) {
  if (argc != 5) return 2;  // <bundle> <running TensorRT version> <running SM> <running GPU name>
  try {
    edgeresnext::Bundle bundle = edgeresnext::load_bundle(argv[1], true);
    const edgeresnext::Json& artifact = bundle.artifact("tensorrt", {"engine"});
    edgeresnext::EngineRecord r = edgeresnext::engine_record(artifact);
    std::cout << artifact["path"].str() << "\n" << r.tensorrt_version << "\n" << r.gpu_name << "\n" << r.gpu_sm
              << "\n" << r.build_mode << "\n" << r.onnx_path << "\n" << r.onnx_sha256 << "\n";
    edgeresnext::DeviceCheck check = edgeresnext::device_check(artifact);
    std::cout << "device check: " << check.status << ": " << check.message << "\n";
    std::string mismatch = edgeresnext::engine_mismatch(r, argv[2], argv[3], argv[4]);
    if (!mismatch.empty()) {
      std::cerr << mismatch << "; " << edgeresnext::rebuild_hint(argv[1], bundle.manifest) << "\n";
      return 3;
    }
  } catch (const std::exception& err) {
    std::cerr << err.what() << "\n";
    return 1;
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def engine_reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("engine-reader")
    (folder / "reader.cpp").write_text(ENGINE_READER)
    compiled = subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(SAMPLE.parent / "common"),
            "reader.cpp",
            "-o",
            "reader",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stderr
    return folder / "reader"


@pytest.fixture(scope="module")
def sealed_jetson(tmp_path_factory: pytest.TempPathFactory, calib_dir: Path) -> Path:
    """A real jetson.yaml bundle after the device command (stand-in trtexec: TensorRT 10.3.0, Orin, SM 8.7)."""
    from jetson_helpers import copy_bundle, fake_trtexec, jetson_bundle, run_device_command

    bundle = copy_bundle(jetson_bundle(tmp_path_factory, calib_dir), tmp_path_factory.mktemp("jetson") / "bundle")
    done = run_device_command(bundle, fake_trtexec(tmp_path_factory.mktemp("trtexec")))
    assert done.returncode == 0, done.stderr
    return bundle


def test_header_reads_the_engine_of_a_resealed_jetson_bundle(engine_reader, sealed_jetson, tmp_path):
    manifest = json.loads((sealed_jetson / "manifest.json").read_text())
    onnx_sha = next(f["sha256"] for f in manifest["files"] if f["path"] == "kit/model.qdq-fp16.onnx")
    done = subprocess.run(
        [str(engine_reader), str(sealed_jetson), "10.3.0", "8.7", "Orin"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    *lines, check = done.stdout.splitlines()
    assert check.startswith("device check: checked: max_device_disagreement: the engine disagrees with the ")
    assert lines == [
        "kit/model.engine",
        "10.3.0",
        "Orin",
        "8.7",
        "strongly_typed",
        "kit/model.qdq-fp16.onnx",
        onnx_sha,
    ]
    # A device with another TensorRT release and GPU: refused before deserialising, with what to do.
    done = subprocess.run(
        [str(engine_reader), str(sealed_jetson), "10.7.0", "9.0", "NVIDIA H200"], capture_output=True, text=True
    )
    assert done.returncode == 3
    assert done.stderr.strip() == (
        "built with TensorRT 10.3.0 for Orin (SM 8.7), but this device runs TensorRT 10.7.0 on NVIDIA H200 (SM 9.0): "
        f"the TensorRT version and the GPU's SM differ; rebuild it on this device: edgeresnext bundle build-engine "
        f"{sealed_jetson} (or {sealed_jetson}/kit/build_engine.sh without edgeresnext)"
    )
    # getInferLibVersion() gives no build number: 10.3.0 on a 10.3.0.30 record is the same release.
    assert subprocess.run([str(engine_reader), str(sealed_jetson), "10.3", "8.7", ""]).returncode == 0
    tampered = Path(shutil.copytree(sealed_jetson, tmp_path / "bundle"))
    data = bytearray((tampered / "kit" / "model.engine").read_bytes())
    data[0] ^= 0x01
    (tampered / "kit" / "model.engine").write_bytes(bytes(data))
    done = subprocess.run([str(engine_reader), str(tampered), "10.3.0", "8.7", "Orin"], capture_output=True, text=True)
    assert done.returncode == 1 and "kit/model.engine: sha256 differs from the manifest" in done.stderr


# The declarations main.cpp uses, as the TensorRT 10 (NvInfer.h, NvInferRuntime.h) and CUDA runtime API references
# give them: enough to compile the sample's own code here, where TensorRT and CUDA cannot be installed. It proves
# that main.cpp and the header fit together, not that the real headers agree (the first device build does that).
TENSORRT_STUB = {
    "NvInfer.h": r"""
#pragma once
#include <cstddef>
#include <cstdint>
#include "cuda_runtime_api.h"
extern "C" int32_t getInferLibVersion() noexcept;
namespace nvinfer1 {
class ILogger {
 public:
  enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
  virtual void log(Severity severity, const char* msg) noexcept = 0;
  virtual ~ILogger() = default;
};
enum class DataType : int32_t { kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3 };
enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };
class Dims64 {
 public:
  static constexpr int32_t MAX_DIMS{8};
  int32_t nbDims;
  int64_t d[MAX_DIMS];
};
using Dims = Dims64;
class Dims4 : public Dims {
 public:
  Dims4(int64_t d0, int64_t d1, int64_t d2, int64_t d3);
};
class IExecutionContext {
 public:
  virtual ~IExecutionContext() noexcept;
  bool setInputShape(const char* tensorName, const Dims& dims) noexcept;
  Dims getTensorShape(const char* tensorName) const noexcept;
  bool setTensorAddress(const char* tensorName, void* data) noexcept;
  bool enqueueV3(cudaStream_t stream) noexcept;
};
class ICudaEngine {
 public:
  virtual ~ICudaEngine() noexcept;
  IExecutionContext* createExecutionContext() noexcept;
  int32_t getNbIOTensors() const noexcept;
  const char* getIOTensorName(int32_t index) const noexcept;
  TensorIOMode getTensorIOMode(const char* tensorName) const noexcept;
  DataType getTensorDataType(const char* tensorName) const noexcept;
};
class IRuntime {
 public:
  virtual ~IRuntime() noexcept;
  ICudaEngine* deserializeCudaEngine(const void* blob, std::size_t size) noexcept;
};
IRuntime* createInferRuntime(ILogger& logger) noexcept;
}  // namespace nvinfer1
""",
    "cuda_runtime_api.h": r"""
#pragma once
#include <cstddef>
typedef struct CUstream_st* cudaStream_t;
enum cudaError { cudaSuccess = 0 };
typedef enum cudaError cudaError_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
struct cudaDeviceProp { char name[256]; int major; int minor; };
extern "C" {
const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaMalloc(void** devPtr, size_t size);
cudaError_t cudaFree(void* devPtr);
cudaError_t cudaStreamCreate(cudaStream_t* pStream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device);
}
""",
}


def test_tensorrt_sample_compiles_against_the_api_it_uses(tmp_path):
    for name, text in TENSORRT_STUB.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-fsyntax-only",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(tmp_path),
            "-I",
            str(SAMPLE.parent / "common"),
            str(SAMPLE.parent / "tensorrt" / "main.cpp"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def test_header_tells_a_checked_engine_from_an_unchecked_or_failed_one(engine_reader, sealed_jetson, tmp_path):
    """What a C++ device app reads from the sealed manifest: the device check's status and what it said."""
    from jetson_helpers import copy_bundle, fake_trtexec, run_device_command

    def status(bundle: Path) -> str:
        done = subprocess.run(
            [str(engine_reader), str(bundle), "10.3.0", "8.7", "Orin"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    assert status(sealed_jetson).startswith("device check: checked: max_device_disagreement: the engine disagrees")
    failed = copy_bundle(sealed_jetson, tmp_path / "failed")
    done = run_device_command(failed, fake_trtexec(tmp_path / "bin"), FAKE_FLIP="0.05")
    assert done.returncode == 1, done.stdout + done.stderr
    assert status(failed) == (
        "device check: failed: max_device_disagreement: the engine disagrees with the host's INT8 stand-in on 4 of 64 "
        "images (6.25 %), over the 5.00 % limit by 1.25 pt (95 % upper bound 13.73 %; 64 images prove <= 5.00 % when "
        "at most 0 disagree)"
    )
    unchecked = copy_bundle(sealed_jetson, tmp_path / "unchecked")  # sealed before device checks existed
    manifest = json.loads((unchecked / "manifest.json").read_text())
    del manifest["artifacts"][0]["engine"]["device_check"]
    (unchecked / "manifest.json").write_text(json.dumps(manifest))
    assert status(unchecked) == "device check: unchecked: no device check recorded"
