"""Hostile inputs, round two (issue 23): files that are not what their name says, images the device is handed,
races between builds, and data folders that drop or read things silently.

Each case is one clear error of our own type (one line, exit 2 from the CLI) naming the file and what is accepted,
raised before any runtime parses the file, leaving nothing half-written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import SUMMARY, TINY_ARCH, fp32_target, tiny_meta
from PIL import Image

from edgeresnext.cli import main
from edgeresnext.data.calibration import load_calibration_images
from edgeresnext.data.folder import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    decode_image,
    images_at_model_size,
    list_images,
    load_folder_arrays,
    load_image_folder,
    scan_image_folder,
)
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import ConfigError, DataError, ExportError
from edgeresnext.export import onnx_from_torch
from edgeresnext.lint import lint_onnx
from edgeresnext.models import create
from edgeresnext.onnx_io import check_onnx_file
from edgeresnext.runtime import load_bundle


# --------------------------------------------------------------------------------------------- ONNX files
@pytest.fixture(scope="module")
def good_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real FP32 ONNX of an untrained tiny ResNeXt (Fashion-MNIST-sized input)."""
    model = create(TINY_ARCH, num_classes=10, in_channels=1)
    model.meta = tiny_meta()
    return onnx_from_torch(model, tmp_path_factory.mktemp("onnx") / "good.onnx")


def _broken_onnx(folder: Path, kind: str, good: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "png":
        from PIL import Image

        Image.new("L", (8, 8)).save(path, format="PNG")
    elif kind == "text":
        path.write_text("not a model\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "outside":  # the good model with its weights said to lie in ../secret.bin
        import onnx
        from onnx import TensorProto

        (folder.parent / "secret.bin").write_bytes(bytes(64))
        model = onnx.load(str(good))
        weight = model.graph.initializer[0]
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "16")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
        path.write_bytes(model.SerializeToString())
    return path


BROKEN_ONNX = {
    "empty": r"empty file \(0 bytes\); expected an ONNX model file",
    "truncated": "not a readable ONNX model .*; expected an ONNX model file",
    "png": "(not a readable ONNX model|not an ONNX model).*; expected an ONNX model file",
    "text": "(not a readable ONNX model|not an ONNX model).*; expected an ONNX model file",
    "directory": "not a file; expected an ONNX model file",
    "outside": r"keeps its data in '\.\./secret\.bin': '\.\.' leaves the model's folder",
}


@pytest.mark.parametrize("kind", sorted(BROKEN_ONNX))
def test_a_broken_onnx_file_is_one_line_everywhere_it_is_read(tmp_path, kind, good_onnx, capsys):
    """`lint`, `compare` and `validate --artifact` run the same file check as `compile` (issue 23, item 6): a
    0-byte file is no TensorRT rule violation, a truncated one no DecodeError traceback, external data outside the
    folder is our refusal before ONNX Runtime or OpenVINO open the file."""
    path = _broken_onnx(tmp_path / kind, kind, good_onnx)
    expected = BROKEN_ONNX[kind]
    with pytest.raises(ExportError, match=expected):
        check_onnx_file(path)
    with pytest.raises(ExportError, match=expected):
        lint_onnx(path)
    commands = {
        "lint": ["lint", str(path)],
        "compare": ["compare", str(path), str(good_onnx), "--limit", "4"],
        "compare-openvino": ["compare", f"openvino:{path}", str(good_onnx), "--limit", "4"],
        "validate": [
            *("validate", "--target", "cpu", "--build", str(tmp_path / "build"), "--limit", "4"),
            *("--artifact", f"bad={path}", "--out", str(tmp_path / "report")),
        ],
    }
    for name, argv in commands.items():
        assert main(["-q", *argv]) == 2, name
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], (name, captured.err)
        assert "violation" not in captured.out + captured.err, (name, captured.out)
    assert not (tmp_path / "report").exists()


def test_an_empty_artifact_is_refused_before_a_runtime_parses_it(tmp_path):
    from edgeresnext.backends import Artifact, get_backend

    for backend, name in (("onnxruntime", "model.onnx"), ("openvino", "model.xml")):
        path = tmp_path / name
        path.write_bytes(b"")
        kind = "onnx" if name.endswith(".onnx") else "ir"
        artifact = Artifact(backend=backend, precision="fp32", kind=kind, path=path, files=[path])
        with pytest.raises(ConfigError, match=rf"{name}: empty file \(0 bytes\)"):
            get_backend(backend).load(artifact)


def test_the_file_check_accepts_a_real_onnx(good_onnx):
    assert check_onnx_file(good_onnx) == []  # no external data
    assert all(v.rule != "unsupported-op" for v in lint_onnx(good_onnx))


# --------------------------------------------------------------------------------------------- images
# The preprocessing of an image-folder model at Fashion-MNIST size: resize and crop, so any image size is taken.
FOLDER_28 = Preprocess(channels="L", resize=28, crop=28, mean=(0.286,), std=(0.353,))
# Every format the build lists and the runtime decodes, saved losslessly (JPEG aside) from one garment.
FORMAT_FILES = {
    "png": {},
    "jpg": {"quality": 95},
    "jpeg": {"quality": 95},
    "bmp": {},
    "webp": {"lossless": True},
    "gif": {},
    "tif": {},
    "tiff": {},
    "pgm": {},
    "ppm": {},
    "pbm": {},
    "pnm": {},
}


@pytest.fixture(scope="module")
def resize_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX Runtime bundle whose preprocessing resizes and crops to 28 (as an image-folder model's does)."""
    import torch

    from edgeresnext.backends import get_backend
    from edgeresnext.bundle import bundle_from_artifacts

    work = tmp_path_factory.mktemp("resize-bundle")
    torch.manual_seed(0)
    model = create(TINY_ARCH, num_classes=10, in_channels=1).eval()
    onnx_path = onnx_from_torch(model, work / "model.onnx", input_shape=(1, 28, 28))
    target = fp32_target("onnxruntime")
    artifact = get_backend("onnxruntime").compile(onnx_path, target, work / "compile")
    meta = replace(tiny_meta(), preprocess=FOLDER_28)
    return bundle_from_artifacts(work / "bundle", artifact, meta, SUMMARY, target)


def test_bundle_predict_refuses_a_decompression_bomb_like_the_build(resize_bundle, tmp_path, capsys):
    """A 182 KB PNG of 15000x12500 pixels: the build's "too large (N pixels, limit M)", exit 2, no traceback."""
    bomb = tmp_path / "bomb.png"
    Image.new("1", (15000, 12500)).save(bomb)
    expected = f"{bomb}: too large (187,500,000 pixels, limit {MAX_PIXELS:,})"
    with pytest.raises(DataError) as build_error:
        decode_image(bomb)
    assert str(build_error.value).startswith(expected)
    with load_bundle(resize_bundle) as clf, pytest.raises(DataError) as runtime_error:
        clf.predict(bomb)
    assert str(runtime_error.value) == str(build_error.value)
    assert main(["-q", "bundle", "predict", str(resize_bundle), str(bomb)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err


def _garment() -> Image.Image:
    from edgeresnext.data import load_dataset

    return Image.fromarray(load_dataset("fashion-mnist", split="test").images[0])


def test_build_and_runtime_read_the_same_image_formats(resize_bundle, tmp_path):
    """GIF, TIFF and netpbm were read by `bundle predict` but skipped by the build: now one list serves both."""
    assert set(IMAGE_SUFFIXES) == {f".{suffix}" for suffix in FORMAT_FILES}
    garment = _garment()
    folder = tmp_path / "calib" / "shirt"
    folder.mkdir(parents=True)
    for suffix, options in FORMAT_FILES.items():
        image = garment.convert("1") if suffix == "pbm" else garment
        image.save(folder / f"garment.{suffix}", **options)
    files = list_images(tmp_path / "calib")
    assert sorted(path.suffix for path in files) == sorted(IMAGE_SUFFIXES)
    arrays, kept = load_folder_arrays(files, FOLDER_28)
    assert len(kept) == len(FORMAT_FILES)
    with load_bundle(resize_bundle) as clf:
        for path, array in zip(files, arrays, strict=True):
            np.testing.assert_array_equal(clf.preprocess_images([path])[0], array)
    # A format outside the list is refused by both, whatever its name says.
    icon = folder / "icon.png"
    garment.save(icon, format="ICO")
    with pytest.raises(DataError, match=r"icon\.png: not a readable image; accepted formats: \.png, \.jpg"):
        decode_image(icon)
    with load_bundle(resize_bundle) as clf, pytest.raises(DataError, match=r"icon\.png: not a readable image"):
        clf.predict(icon)


def test_an_empty_class_folder_is_named(tmp_path):
    root = tmp_path / "photos"
    for name in ("boots", "coats"):
        (root / name).mkdir(parents=True)
    _garment().save(root / "boots" / "a.png")
    with pytest.raises(DataError, match=r"photos/coats: class folder 'coats' holds no images"):
        scan_image_folder(root)
    with pytest.raises(DataError, match=r"coats: class folder 'coats' holds no images"):
        scan_image_folder(root, class_names=["boots", "coats"])
    (root / "coats" / ".hidden").mkdir()  # hidden entries are no images either
    with pytest.raises(DataError, match="holds no images"):
        load_image_folder(root, split="test", preprocess=FOLDER_28)


def test_a_tiny_image_is_refused_or_skipped_never_upscaled(resize_bundle, tmp_path, caplog):
    """A 1x1 image would be blown up to 28x28 of one colour and calibrated on."""
    root = tmp_path / "calib"
    (root / "shirt").mkdir(parents=True)
    for index in range(3):
        _garment().save(root / "shirt" / f"{index}.png")
    tiny = root / "shirt" / "1a-tiny.png"
    Image.new("L", (1, 1), 200).save(tiny)
    expected = r"1a-tiny\.png: image of 1x1 is too small: preprocess\.resize=28 would enlarge it more than 8x"
    with pytest.raises(DataError, match=expected):
        load_calibration_images(root, FOLDER_28)
    skipped: list[tuple[str, str]] = []
    images = load_calibration_images(root, FOLDER_28, on_bad_image="skip", skipped=skipped)
    assert len(images) == 3 and [path for path, _ in skipped] == [str(tiny)]
    assert "at least 4 pixels" in skipped[0][1]
    with pytest.raises(DataError, match=expected):
        images_at_model_size([tiny], FOLDER_28)
    from edgeresnext.data.loaders import ImageFolderDataset  # training decodes lazily, in DataLoader workers

    with pytest.raises(DataError, match=expected):
        ImageFolderDataset([tiny], np.zeros(1), FOLDER_28)[0]
    with load_bundle(resize_bundle) as clf, pytest.raises(DataError, match=expected):
        clf.predict(tiny)
    small_enough = tmp_path / "four.png"  # 4 * 8 >= 28: enlarged 7x, accepted
    Image.new("L", (4, 6), 200).save(small_enough)
    assert images_at_model_size([small_enough], FOLDER_28)[0].shape == (1, 28, 28)


@pytest.mark.promise("docs/reliability.md", "data folders do not follow links out")
def test_data_folders_do_not_follow_links_out(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _garment().save(outside / "secret.png")
    root = tmp_path / "calib" / "shirt"
    root.mkdir(parents=True)
    _garment().save(root / "real.png")
    (root / "inside.png").symlink_to(root / "real.png")  # a link that stays in the folder is read
    assert [path.name for path in list_images(root.parent)] == ["inside.png", "real.png"]
    (root / "link.png").symlink_to(outside / "secret.png")
    with pytest.raises(DataError, match=r"link\.png: a symlink to .*secret\.png, outside the data folder"):
        list_images(root.parent)
    (root / "link.png").unlink()
    (root.parent / "more").symlink_to(outside, target_is_directory=True)  # a linked folder: not silently dropped
    with pytest.raises(DataError, match=r"more: a symlink to .*elsewhere, outside the data folder"):
        list_images(root.parent)


# --------------------------------------------------------------------------------------------- concurrent builds
# One build's setup in its own process: wait for the start signal, set up the inputs, read the calibration set.
_BUILD_SETUP = """
import json, sys, time
from pathlib import Path
from edgeresnext.config import load_target
from edgeresnext.data.calibration import load_calibration_images
from edgeresnext.data.fashion_mnist import PREPROCESS
from edgeresnext.pipeline import prepare_inputs

target = load_target(sys.argv[1])
start = Path(sys.argv[2])
while not start.exists():
    time.sleep(0.002)
said = []
prepare_inputs(target, said.append)
images = load_calibration_images(target.quant.calib_dir, PREPROCESS)
print(json.dumps({"said": said, "images": len(images), "checksum": float(images.astype("float64").sum())}))
"""


def test_two_targets_built_at_once_on_a_fresh_clone_share_one_calibration_set(tmp_path):
    """Both builds find calib_data/ empty: one writes it under the folder's lock, the other waits and reads the
    finished set (before: both wrote, and one deleted the images the other was reading)."""
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    start = tmp_path / "start"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    builds = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILD_SETUP, str(repo / "targets" / f"{name}.yaml"), str(start)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("cpu", "onnxruntime")
    ]
    import time

    time.sleep(4)  # both processes imported and waiting on the start signal
    start.touch()
    results = []
    for process in builds:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    writers = [r for r in results if any("writing 500" in line for line in r["said"])]
    assert len(writers) == 1, results
    assert [r["images"] for r in results] == [500, 500]
    assert results[0]["checksum"] == results[1]["checksum"]
    assert (tmp_path / "calib_data" / ".complete").is_file()
