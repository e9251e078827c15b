"""edgeresnext.runtime: load a bundle, predict like the torch model, preprocess like training, import without torch."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import make_bundles
from PIL import Image
from tolerances import FP32_LOGIT_ATOL, FP32_SCORE_ATOL

from edgeresnext.data.loaders import normalize_array
from edgeresnext.errors import BackendUnavailable, ConfigError, DataError
from edgeresnext.runtime import BundleError, Prediction, load_bundle


@pytest.fixture(scope="module")
def bundles(shipped_model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_bundles(shipped_model, tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def image_files(fmnist_test, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight real test images saved as PNG, the way a device app receives them."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, image in enumerate(fmnist_test.images[:8]):
        paths.append(folder / f"{index}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_predict_matches_the_torch_model(bundles, backend, shipped_model, fmnist_test, image_files):
    clf = load_bundle(bundles[backend])
    results = clf.predict(image_files, top_k=5)
    inputs = normalize_array(fmnist_test.images[:8], fmnist_test.preprocess)
    with torch.no_grad():
        probs = torch.softmax(shipped_model(inputs).double(), dim=1).numpy()
    for result, row in zip(results, probs, strict=True):
        assert isinstance(result, Prediction) and len(result.labels) == 5
        # Neighbouring top-6 logits of these 8 images are >= 0.011 apart, beyond FP32 drift: the order is exact.
        assert result.indices == list(np.argsort(-row, kind="stable")[:5])
        assert result.labels == [fmnist_test.class_names[i] for i in result.indices]
        # Another runtime's float32 kernels (measured 2.8e-7 here); unnormalised or BF16 scores are caught.
        np.testing.assert_allclose(result.scores, row[result.indices], rtol=0, atol=FP32_SCORE_ATOL)
        assert result.scores == sorted(result.scores, reverse=True)


def test_preprocessing_matches_training(bundles, fmnist_test, image_files):
    """The runtime turns an image file into the very tensor the training loader fed the model."""
    clf = load_bundle(bundles["openvino"])
    runtime_batch = clf.preprocess_images(image_files)
    training_batch = normalize_array(fmnist_test.images[:8], fmnist_test.preprocess).numpy()
    assert runtime_batch.dtype == np.float32 and runtime_batch.shape == (8, 1, 28, 28)
    np.testing.assert_array_equal(runtime_batch, training_batch)  # the same numpy operations on the same pixels
    assert clf.preprocess == fmnist_test.preprocess


def test_every_input_form_gives_the_same_answer(bundles, fmnist_test, image_files):
    clf = load_bundle(bundles["onnxruntime"])
    image = fmnist_test.images[3]
    expected = clf.predict(image_files[3], top_k=3)
    assert clf.predict(image, top_k=3) == expected  # uint8 HW array
    assert clf.predict(Image.open(image_files[3]), top_k=3) == expected  # PIL image
    assert clf.predict(Image.fromarray(image).convert("RGB"), top_k=3) == expected  # converted to L as trained
    assert clf.predict([image_files[3]], top_k=3) == [expected]  # a list gives a list
    chw = fmnist_test.preprocess.image_to_array(image)
    assert clf.predict(chw, top_k=3) == expected  # preprocessed float32 CHW
    assert clf.predict(chw[None], top_k=3) == [expected]  # preprocessed float32 NCHW batch
    assert clf.predict([], top_k=3) == []


def test_batches_beyond_the_artifact_range_are_split(bundles, fmnist_test):
    clf = load_bundle(bundles["openvino"])
    assert clf.batch_range == (1, 8)
    batch = np.stack([fmnist_test.preprocess.image_to_array(img) for img in fmnist_test.images[:19]])
    whole = clf.logits(batch)
    one_by_one = np.concatenate([clf.logits(batch[i : i + 1]) for i in range(19)])
    assert whole.shape == (19, 10)
    # Equal here; a CPU may pick other kernels for batch 8 than for batch 1. Mixed-up or padded rows differ by > 1.
    np.testing.assert_allclose(whole, one_by_one, rtol=0, atol=FP32_LOGIT_ATOL)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_the_runtime_runs_the_runner_validation_runs(bundles, backend, fmnist_test):
    """load_bundle is a thin layer on the backend's own Runner: same class, same options, same logits."""
    from edgeresnext.backends import Artifact, get_backend

    with load_bundle(bundles[backend]) as clf:
        entry = clf.artifact  # the manifest's entry (edgeresnext.bundle.model.ArtifactEntry)
        artifact = Artifact(entry.backend, entry.precision, entry.kind, bundles[backend] / entry.path, info=entry.info)
        with get_backend(backend).load(artifact) as validated:
            assert type(clf.runner) is type(validated) and clf.runner.options == validated.options
            batch = np.stack([fmnist_test.preprocess.image_to_array(img) for img in fmnist_test.images[:19]])
            np.testing.assert_array_equal(clf.logits(batch), validated(batch))
    assert clf.runner.request is None if backend == "openvino" else clf.runner.session is None  # closed on exit


def test_a_static_batch_ir_takes_any_batch(shipped_model, fmnist_test, tmp_path):
    from bundle_helpers import fp32_target

    from edgeresnext.backends import get_backend
    from edgeresnext.bundle import bundle_from_artifacts
    from edgeresnext.export import onnx_from_torch

    target = fp32_target("openvino")
    target.input.batch.min = target.input.batch.opt = target.input.batch.max = 1
    onnx_path = onnx_from_torch(shipped_model, tmp_path / "model.onnx")
    artifact = get_backend("openvino").compile(onnx_path, target, tmp_path / "compile")
    bundle = bundle_from_artifacts(tmp_path / "bundle", artifact, shipped_model.meta, None, target)
    with load_bundle(bundle, threads=1) as clf:
        assert clf.batch_range == clf.runner.batch_range == (1, 1) and clf.runner.options.threads == 1
        batch = np.stack([fmnist_test.preprocess.image_to_array(img) for img in fmnist_test.images[:5]])
        whole = clf.logits(batch)
        assert whole.shape == (5, 10)
        np.testing.assert_allclose(whole, np.concatenate([clf.logits(batch[i : i + 1]) for i in range(5)]), atol=1e-6)


def test_second_artifact_selected_by_backend(bundles, image_files):
    primary = load_bundle(bundles["openvino"])
    other = load_bundle(bundles["openvino"], backend="onnxruntime")
    assert (primary.backend, other.backend) == ("openvino", "onnxruntime")
    a, b = primary.predict(image_files[0]), other.predict(image_files[0])
    assert a.indices == b.indices
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=FP32_SCORE_ATOL)  # two runtimes: 1.1e-9 here
    with pytest.raises(ConfigError, match="no 'tensorrt' artifact; the bundle has onnxruntime, openvino"):
        load_bundle(bundles["openvino"], backend="tensorrt")


def test_bad_input_is_one_clear_error(bundles, tmp_path):
    clf = load_bundle(bundles["onnxruntime"])
    with pytest.raises(ConfigError, match="top_k=0"):
        clf.predict(np.zeros((28, 28), np.uint8), top_k=0)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(big)
    with pytest.raises(DataError, match=r"shape \(1, 32, 40\), the model takes \(1, 28, 28\)"):
        clf.predict(big)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png: not a readable image; accepted formats: \.png"):
        clf.predict(broken)
    with pytest.raises(DataError, match="uint8 pixels"):
        clf.predict(np.zeros((28, 28), np.float64))


def test_tampered_bundle_is_refused_on_load(bundles, tmp_path):
    bundle = Path(shutil.copytree(bundles["onnxruntime"], tmp_path / "bundle"))
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 differs"):
        load_bundle(bundle)


def test_kit_bundle_says_to_build_on_device(bundles, tmp_path):
    bundle = Path(shutil.copytree(bundles["onnxruntime"], tmp_path / "bundle"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][0].update(backend="tensorrt", kind="kit")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendUnavailable) as refused:
        load_bundle(bundle)
    assert f"build the engine on the device first: `edgeresnext bundle build-engine {bundle}`" in str(refused.value)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_an_engine_bundle_without_tensorrt_says_why_and_what_else_runs(bundles, tmp_path):
    bundle = Path(shutil.copytree(bundles["openvino"], tmp_path / "bundle"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][0].update(backend="tensorrt", kind="engine")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendUnavailable, match=r"tensorrt Python package is not installed.*also has: onnxruntime"):
        load_bundle(bundle)


# Blocks heavy packages the device runtime must not need: importing any of them fails like a missing package.
_BLOCKED_IMPORT = """
import sys
BLOCKED = ("torch", "torchvision", "nncf", "pydantic", "yaml", "onnx", "tqdm")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)")
        return None
sys.meta_path.insert(0, Block())
"""


def test_runtime_works_without_torch(bundles, image_files):
    """A device app's process: no torch, nncf, pydantic or onnx; both runtimes load and run a bundle."""
    paths = {backend: str(bundles[backend]) for backend in ("openvino", "onnxruntime")}
    code = (
        _BLOCKED_IMPORT
        + f"""
import json
from edgeresnext.runtime import load_bundle
results = {{}}
for backend, path in {paths!r}.items():
    with load_bundle(path) as clf:
        results[backend] = clf.predict({str(image_files[0])!r}, top_k=5).to_dict()
try:
    import torch
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the block did not hold")
assert not {{"torch", "nncf", "pydantic", "onnx"}} & set(sys.modules), sorted(sys.modules)
print(json.dumps(results))
"""
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for backend, path in paths.items():
        assert results[backend] == load_bundle(path).predict(image_files[0], top_k=5).to_dict()


def test_python_example_prints_the_runtime_top5(bundles, image_files):
    example = Path(__file__).resolve().parents[1] / "examples" / "python" / "classify.py"
    assert len(example.read_text().splitlines()) <= 10
    done = subprocess.run(
        [sys.executable, str(example), str(bundles["openvino"]), str(image_files[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    expected = load_bundle(bundles["openvino"]).predict(image_files[0])
    pairs = "  ".join(f"{label} {score:.3f}" for label, score in zip(expected.labels, expected.scores, strict=True))
    assert done.stdout.strip() == f"{image_files[0]} {pairs}"
