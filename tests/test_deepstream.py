"""DeepStream on the Jetson: the bundle's deepstream/ folder (nvinfer configs checked key by key against nvinfer's own
key list, labels in its classifier format), the variant ONNX DeepStream's engine is built from (normalization inside,
Softmax out), and the emulation of nvinfer's preprocessing against the bundle's own."""

from __future__ import annotations

import configparser
import dataclasses
import json

import numpy as np
import pytest
from jetson_helpers import jetson_bundle
from PIL import Image

from edgeresnext.bundle import BundleError, verify_bundle
from edgeresnext.data.nvinfer import NvinferPreprocess, closest_scale
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.serving.deepstream import CONFIGS, NVINFER_KEYS, OUTPUT, VARIANT_ENGINE, VARIANT_ONNX, deepstream_onnx

IMAGENET = Preprocess(channels="RGB", resize=256, crop=224)


@pytest.fixture(scope="module")
def built(tmp_path_factory, calib_dir):
    return jetson_bundle(tmp_path_factory, calib_dir)


def _config(path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # nvinfer's keys are case-sensitive
    parser.read_string(path.read_text())
    assert parser.sections() == ["property"]
    return dict(parser["property"])


@pytest.mark.promise("docs/serving.md", "Every key of both configs is one nvinfer reads")
@pytest.mark.parametrize("mode", ["primary", "secondary"])
def test_every_config_key_is_one_nvinfer_reads(built, mode):
    config = _config(built / "deepstream" / CONFIGS[mode])
    assert set(config) <= NVINFER_KEYS, set(config) - NVINFER_KEYS
    manifest = verify_bundle(built)
    plan = json.loads((built / "kit" / "kit.json").read_text())["plan"]
    assert config["process-mode"] == {"primary": "1", "secondary": "2"}[mode] and config["network-type"] == "1"
    assert config["infer-dims"] == "1;28;28" == ";".join(map(str, manifest.input.shape[1:]))
    assert config["model-color-format"] == "2"  # the shipped model is grayscale (L): nvinfer's GRAY
    assert (config["net-scale-factor"], config["offsets"]) == ("1.0", "0")  # the normalization is in the engine
    assert config["model-engine-file"] == f"../kit/{VARIANT_ENGINE}" and config["onnx-file"] == f"../kit/{VARIANT_ONNX}"
    assert config["batch-size"] == str(plan["batch"]["max"]) and config["strongly-typed"] == "1"
    assert config["output-blob-names"] == OUTPUT and config["maintain-aspect-ratio"] == "0"
    assert config["scaling-filter"] in ("0", "1")
    if mode == "secondary":
        assert {"operate-on-gie-id", "operate-on-class-ids", "classifier-async-mode"} <= set(config)


@pytest.mark.parametrize("source", ["dataset", "folder"])
def test_the_section_reads_the_validation_set_s_own_images(source, fmnist_test, tmp_path):
    """The images nvinfer's emulation starts from are the validation set's, in its order: a named dataset's and an
    image folder's class-stratified sample under data.limit and data.sample_seed (not the first N)."""
    from edgeresnext.config import DataSpec
    from edgeresnext.data.validation import load_validation_pixels, validation_images

    names = list(fmnist_test.class_names)
    if source == "dataset":
        spec = DataSpec(dataset="fashion-mnist", split="test", limit=50, sample_seed=7)
    else:
        names = ["ankle", "bag", "coat"]  # folder names (Fashion-MNIST's own hold a '/')
        for label, name in enumerate(names):
            (tmp_path / name).mkdir()
            for k, index in enumerate(np.flatnonzero(fmnist_test.labels == label)[:6]):
                Image.fromarray(fmnist_test.images[index]).save(tmp_path / name / f"{k}.png")
        spec = DataSpec(dataset=str(tmp_path), limit=9, sample_seed=7)
    preprocess = Preprocess(channels="L", mean=(0.5,), std=(0.5,))
    expected = load_validation_pixels(spec, preprocess, names)
    images = validation_images(spec, names)
    assert images.labels.tolist() == expected.labels.tolist() and len(images) == len(expected.labels)
    decoded = np.stack([np.asarray(images.image(i)) for i in range(len(images))])
    assert np.array_equal(decoded, expected.pixels[:, 0])  # 28x28 already: model size is the image as stored
    first = fmnist_test.labels[: len(images)] if source == "dataset" else np.repeat([0, 1, 2], 6)[: len(images)]
    assert expected.labels.tolist() != first.tolist()  # a sample, not the first N: the test can tell them apart


def test_labels_are_one_semicolon_separated_line(built):
    assert (built / "deepstream" / "labels.txt").read_text() == ";".join(
        (built / "labels.txt").read_text().splitlines()
    ) + "\n"


def test_the_manifest_says_what_was_exported_and_verify_covers_it(built, tmp_path):
    import shutil

    manifest = verify_bundle(built)
    export = manifest.exports.deepstream
    listed = {entry.path for entry in manifest.files}
    assert set(export.files) <= listed and f"kit/{VARIANT_ONNX}" in listed
    assert export.normalization == "in_model" and export.softmax is True
    assert export.scaling_filter in ("nearest", "bilinear") and len(export.measured) >= 3
    plan = json.loads((built / "kit" / "kit.json").read_text())["plan"]
    assert plan["variants"] == [VARIANT_ONNX]  # the device step builds it (tests/test_jetson_bundle.py)
    copy = shutil.copytree(built, tmp_path / "bundle")
    (copy / "deepstream" / "config_infer_primary.txt").write_text("[property]\nnet-scale-factor=0.017\n")
    with pytest.raises(BundleError, match=r"deepstream/config_infer_primary\.txt: \d+ bytes, the manifest says"):
        verify_bundle(copy)


@pytest.mark.promise("docs/serving.md", "equal to softmax(model((x/255 − mean)/std)) to 1e-5")
def test_the_variant_onnx_is_softmax_of_the_model_on_bundle_normalized_pixels(tmp_path, shipped_model, fmnist_test):
    """(x - 255 mean) / (255 std) inside the graph equals the bundle's (x / 255 - mean) / std to float32 rounding:
    the inputs differ by a few ulps of values up to |(0 - 0.2860) / 0.3530| = 0.81 (shipped model's mean/std),
    which moves probabilities by far less than 1e-5."""
    import onnxruntime as ort

    from edgeresnext.export import onnx_from_torch

    source = onnx_from_torch(shipped_model, tmp_path / "model.onnx")
    variant = deepstream_onnx(source, tmp_path / VARIANT_ONNX, shipped_model.meta.preprocess)
    pixels = fmnist_test.images[:16]
    normalized = np.stack([shipped_model.meta.preprocess.image_to_array(image) for image in pixels])
    (logits,) = ort.InferenceSession(str(source)).run(None, {"input": normalized})
    session = ort.InferenceSession(str(variant))
    assert [o.name for o in session.get_outputs()] == [OUTPUT]
    (probabilities,) = session.run(None, {"input": pixels[:, None].astype(np.float32)})
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert np.abs(probabilities - expected).max() < 1e-5
    assert (probabilities.argmax(1) == logits.argmax(1)).all()


def test_emulated_nvinfer_on_an_image_at_network_size_is_the_bundle_s_preprocessing():
    """No geometry (the image already 224x224): stretching is the identity for both filters, and the in-model
    normalization is the bundle's own to float32 rounding (|y| <= 2.64 for ImageNet's mean/std: 2 ulps < 1e-6)."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    own = Preprocess(channels="RGB", resize=224, crop=224).image_to_array(image)
    for scaling_filter in ("nearest", "bilinear"):
        emulated = NvinferPreprocess(IMAGENET, (224, 224), scaling_filter).image_to_array(image)
        assert np.abs(emulated - own).max() < 1e-6
    # The closest scalar: within 1.1 % of each channel's std (ImageNet), so within 1.1 % of |y| everywhere.
    scalar = NvinferPreprocess(IMAGENET, (224, 224), "nearest", "scalar").image_to_array(image)
    assert closest_scale(IMAGENET.std) == pytest.approx(0.2265)
    assert np.abs(scalar - own).max() <= 0.011 * np.abs(own).max() + 1e-5
    bgr = NvinferPreprocess(IMAGENET, (224, 224), "nearest", color="BGR").image_to_array(image)
    assert not np.allclose(bgr, own)


def test_emulated_stretch_maps_pixel_centres():
    """Nearest picks the source pixel under each output pixel's centre; bilinear of a linear ramp is linear."""
    ramp = np.tile(np.arange(8, dtype=np.uint8)[None, :, None] * 10, (4, 1, 3))
    nearest = NvinferPreprocess(IMAGENET, (4, 4), "nearest").stretch(ramp)
    assert nearest[0, :, 0].tolist() == [10, 30, 50, 70]  # output centres 0.5..3.5 -> source 1, 3, 5, 7
    bilinear = NvinferPreprocess(IMAGENET, (4, 4), "bilinear").stretch(ramp)
    assert bilinear[0, :, 0].tolist() == pytest.approx([5, 25, 45, 65])  # source positions 0.5, 2.5, 4.5, 6.5


def test_emulated_padding_fits_the_crop_and_pads_black_as_nvinfer_does():
    """maintain-aspect-ratio: a 5x9 crop is cut to 4x8 (even sizes), scaled to 4x8 inside 8x8 (the largest size of its
    aspect ratio), then padded with 0: on both sides with symmetric-padding (2 rows above, 2 below), else below."""
    crop = np.full((5, 9, 1), 200, np.uint8)
    gray = Preprocess(channels="L", resize=8, crop=8, mean=(0.5,), std=(0.5,))
    fitted = NvinferPreprocess(gray, (8, 8), "nearest", maintain_aspect_ratio=True, symmetric_padding=True)
    assert (
        fitted.scaled_size(4, 8) == (4, 8) and fitted.scaled_size(8, 4) == (8, 4) and fitted.scaled_size(3, 8) == (3, 8)
    )
    placed = fitted.geometry(crop)[:, :, 0]
    assert placed[2:6].tolist() == [[200] * 8] * 4 and not placed[:2].any() and not placed[6:].any()
    below = NvinferPreprocess(gray, (8, 8), "nearest", maintain_aspect_ratio=True).geometry(crop)[:, :, 0]
    assert below[:4].tolist() == [[200] * 8] * 4 and not below[4:].any()
    stretched = NvinferPreprocess(gray, (8, 8), "nearest").geometry(crop)[:, :, 0]
    assert stretched.tolist() == [[200] * 8] * 8


@pytest.mark.promise("docs/serving.md", "emulated exactly")
def test_nvinfer_s_parser_is_emulated_exactly():
    """Every output row over {-1, 0, 0.25, 1} for 3 classes (64 rows) and thresholds 0 and 0.25 against a line-by-line
    port of parseAttributesFromSoftmaxLayers (running maximum from 0, strict '>' for both comparisons)."""
    import itertools

    from edgeresnext.validate.deepstream import nvinfer_classifier_top1

    rows = np.asarray(list(itertools.product([-1.0, 0.0, 0.25, 1.0], repeat=3)), np.float32)
    for threshold in (0.0, 0.25):
        expected = []
        for outputs in rows:
            best, running = -1, 0.0
            for c, probability in enumerate(outputs):
                if probability > threshold and probability > running:
                    best, running = c, probability
            expected.append(best)
        assert nvinfer_classifier_top1(rows, threshold).tolist() == expected
    assert nvinfer_classifier_top1(np.asarray([[-3.0, -1.0]], np.float32)).tolist() == [-1]  # logits below 0: none


@pytest.mark.promise("docs/serving.md", "the pair with the best agreement, bilinear and then stretched on a tie")
def test_the_deepstream_section_scores_each_row_and_takes_the_best(tmp_path, shipped_model, fmnist_test):
    """Fashion-MNIST items centred in 28x56 frames: the bundle's preprocessing (resize 28, center crop 28) cuts the
    item back out, nvinfer stretches or fits the frame.
    Each row's counts equal its preprocessing run on its own, the chosen filter and geometry have the best agreement
    (ties by the stated rule), and the no-Softmax row is nvinfer's parser on the chosen row's logits. 70 images: two
    full batches of 32 and a partial one."""
    import onnxruntime as ort

    from edgeresnext.data.validation import ValidationImages
    from edgeresnext.export import onnx_from_torch
    from edgeresnext.validate.deepstream import GEOMETRIES, measure_deepstream, nvinfer_classifier_top1

    source = onnx_from_torch(shipped_model, tmp_path / "model.onnx")
    frames = np.zeros((70, 28, 56), np.uint8)
    frames[:, :, 14:42] = fmnist_test.images[:70]
    labels = fmnist_test.labels[:70].astype(np.int64)
    preprocess = dataclasses.replace(shipped_model.meta.preprocess, resize=28, crop=28)  # the centre, cut back out
    section = measure_deepstream(source, ValidationImages(labels=labels, arrays=frames), preprocess)

    session = ort.InferenceSession(str(source))

    def logits(convert) -> np.ndarray:
        return session.run(None, {"input": np.stack([convert(frame) for frame in frames])})[0]

    reference = logits(preprocess.image_to_array).argmax(1)
    pairs = [r for r in section.rows if r.output == "softmax"]
    assert len(section.rows) == 1 + len(pairs) + 1 and len(pairs) == 6  # grayscale, one std: no scalar, no BGR
    for row in pairs:
        keep, symmetric = GEOMETRIES[row.geometry]
        emulated = NvinferPreprocess(
            preprocess, (28, 28), row.scaling_filter, row.normalization, row.color, keep, symmetric
        )
        top = logits(emulated.image_to_array).argmax(1)
        assert (row.agree, row.correct, row.images) == (int((top == reference).sum()), int((top == labels).sum()), 70)
    assert min(r.agree for r in pairs) < 70  # the frames' geometry matters: the measurement tells the rows apart
    order = list(GEOMETRIES)
    best = max(pairs, key=lambda r: (r.agree, r.scaling_filter == "bilinear", -order.index(r.geometry)))
    assert (section.scaling_filter, section.geometry) == (best.scaling_filter, best.geometry)
    assert all(choice.chosen == best.name for choice in section.choices)
    keep, symmetric = GEOMETRIES[best.geometry]
    chosen = NvinferPreprocess(preprocess, (28, 28), best.scaling_filter, "in_model", "L", keep, symmetric)
    parsed = nvinfer_classifier_top1(logits(chosen.image_to_array))
    no_softmax = section.rows[-1]
    assert no_softmax.output == "logits" and no_softmax.agree == int((parsed == reference).sum())
    assert no_softmax.unclassified == int((parsed < 0).sum())


def test_edgeresnext_validate_on_a_finished_jetson_build_measures_the_section_again(built, tmp_path, capsys):
    """`edgeresnext validate` on the build re-validates it as the build did: its report has the same DeepStream section
    (the same images, model and emulation: equal rows) and it prints each setting's figure."""
    from edgeresnext.cli import main
    from edgeresnext.validate import ValidationReport

    root = built.parent  # build/jetson-small
    target = root.parent.parent / "jetson-small.yaml"
    args = ["--quiet", "validate", "--target", str(target), "--build", str(root.parent), "--out", str(tmp_path)]
    assert main([*args, "--no-html", "--runs", "2"]) == 0
    again = ValidationReport.load(tmp_path / "report.json").deepstream
    assert again is not None and again == ValidationReport.load(root / "validate" / "report.json").deepstream
    printed = capsys.readouterr().out
    assert all(again.choice_text(choice) in printed for choice in again.choices)
