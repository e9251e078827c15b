"""The users' path: their own ResNeXt as a bare torchvision-format state dict (no class names, no preprocessing), a
folder of their photos (mixed sizes, JPEG and PNG, grayscale and RGBA), built for a CPU, ONNX Runtime and a Jetson,
then loaded by a few lines of Python.

The model is an ImageNet-topology ResNeXt (7x7 stem + max-pool, four stages, torchvision's parameter names) kept
tiny so the suite stays fast; the build treats it exactly as it treats resnext50_32x4d (``make test-slow`` and the
walkthrough in docs/byo.md runs that one). Its weights are random, so its reference is at chance: the report must say
so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeresnext.config import load_target
from edgeresnext.errors import ConfigError, DataError
from edgeresnext.pipeline import build

REPO = Path(__file__).resolve().parents[1]
ARCH = "resnext14_tiny_imagenet"
CLASSES = ["bird", "cat", "deer", "dog", "frog"]


@pytest.fixture(scope="module")
def tiny_imagenet_arch():
    """Register a tiny ImageNet-stem ResNeXt for this module only (the registry is an explicit dict)."""
    from edgeresnext.models import registry, resnext

    config = resnext.ResNeXtConfig(
        layers=(1, 1, 1, 1), groups=4, width_per_group=16, stem="imagenet", planes=(16, 32, 64, 128), stem_width=16
    )
    resnext.ARCHS[ARCH] = config
    registry.register_model(ARCH)(resnext._make_factory(ARCH, config))
    yield ARCH
    del resnext.ARCHS[ARCH], registry._MODELS[ARCH]


@pytest.fixture(scope="module")
def user_files(tiny_imagenet_arch, fmnist_test, tmp_path_factory) -> tuple[Path, Path]:
    """``(r_5cls.pth, photos/)``: a bare state dict of 5 classes, and 5 classes x 8 photos of mixed sizes/modes."""
    root = tmp_path_factory.mktemp("byo")
    torch.manual_seed(0)
    from edgeresnext.models import create

    checkpoint = root / "r_5cls.pth"
    torch.save(create(ARCH, num_classes=5).state_dict(), checkpoint)  # what torchvision users save
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / "photos" / name
        folder.mkdir(parents=True)
        for k, index in enumerate(np.flatnonzero(fmnist_test.labels == label)[:8]):
            size = (int(rng.integers(60, 300)), int(rng.integers(60, 300)))
            gray = Image.fromarray(fmnist_test.images[index]).resize(size)
            rgb = Image.fromarray((np.asarray(gray)[..., None] * rng.uniform(0.5, 1.0, 3)).astype(np.uint8), "RGB")
            if k == 0:
                gray.save(folder / f"{k:02d}.png")  # grayscale
            elif k == 1:
                rgb.convert("RGBA").save(folder / f"{k:02d}.png")  # with an alpha channel
            else:
                rgb.save(folder / f"{k:02d}.{'jpg' if k % 2 else 'png'}", **({"quality": 90} if k % 2 else {}))
    return checkpoint, root / "photos"


def _target(name: str, checkpoint: Path, photos: Path, **overrides):
    """``make build TARGET=<name> CHECKPOINT=... MODEL=... DATA=photos CALIB=photos``, with quick latency runs."""
    return load_target(
        REPO / "targets" / f"{name}.yaml",
        overrides={
            "model.checkpoint": str(checkpoint),
            "model.arch": ARCH,
            "data.dataset": str(photos),
            "quant.calib_dir": str(photos),
            "validate.latency_runs": 3,
            "validate.warmup_runs": 1,
            **overrides,
        },
    )


@pytest.fixture(scope="module")
def cpu_build(user_files, tmp_path_factory):
    checkpoint, photos = user_files
    root = tmp_path_factory.mktemp("byo-build")
    return build(_target("cpu", checkpoint, photos), out_root=root, progress=False), root


def test_a_bare_checkpoint_and_a_photo_folder_build_for_the_cpu(cpu_build):
    summary, _root = cpu_build
    notes = "\n".join(summary.notes)
    # Class names from the folder, sorted as torchvision's ImageFolder does, and the build says so.
    assert "sub-folder names" in notes and "bird, cat, deer, dog, frog" in notes
    # No preprocessing in a bare state dict: torchvision's ImageNet recipe for an ImageNet-stem arch, said.
    assert "torchvision's ImageNet inference recipe" in notes
    # 40 photos, fewer than quant.subset_size=300: calibrated on all of them, with a note.
    assert "40 usable image(s)" in notes and "fewer than quant.subset_size=300" in notes
    assert "is also the validation set" in notes
    # The fallback is not decided on the images the gate scores: there are no others here, and the build says so.
    assert "fallback not run: no labelled images disjoint from the validation set" in notes
    report = summary.report
    assert report is not None and report.data.count == 40 and report.data.class_names == CLASSES
    # A random model: the reference is at chance, said loudly in the summary and the report.
    assert any(n.startswith("WARNING: the FP32 reference is not a working model") for n in report.notes)
    assert "WARNING: the FP32 reference is not a working model" in summary.render()
    manifest = json.loads((summary.root / "bundle" / "manifest.json").read_text())
    assert manifest["preprocess"]["resize"] == 256 and manifest["preprocess"]["crop"] == 224
    # ... and the bundle says where both came from.
    assert "torchvision's ImageNet inference recipe" in manifest["model"]["provenance"]["preprocess"]
    assert "sorted as torchvision's ImageFolder does" in manifest["model"]["provenance"]["class_names"]
    assert (summary.root / "bundle" / "labels.txt").read_text().split() == CLASSES


def test_the_cpu_bundle_predicts_what_validation_measured(cpu_build, user_files):
    from edgeresnext.runtime import load_bundle

    summary, _root = cpu_build
    _checkpoint, photos = user_files
    files = sorted(p for p in photos.rglob("*") if p.is_file())
    with load_bundle(summary.root / "bundle") as classifier:  # the few lines a device app has
        predicted = [result.label for result in classifier.predict(files, top_k=1)]
    truth = [path.parent.name for path in files]
    top1 = float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    assert top1 == summary.report.primary_result.top1  # the same Runner, the same images, the same preprocessing


@pytest.fixture(scope="module")
def jetson_build(user_files, tmp_path_factory):
    checkpoint, photos = user_files
    return build(_target("jetson", checkpoint, photos), out_root=tmp_path_factory.mktemp("byo-jetson"), progress=False)


def test_the_same_command_builds_for_onnx_runtime(user_files, tmp_path):
    checkpoint, photos = user_files
    summary = build(_target("onnxruntime", checkpoint, photos), out_root=tmp_path, progress=False)
    # ONNX Runtime's own INT8 form, validated as its own artifact.
    artifact = summary.report.result("onnxruntime-int8")
    assert artifact.info["runtime"]["integer_conv_fraction"] >= 0.9, artifact.info
    # The summary and the report say what really ran, read from ONNX Runtime's optimised graph.
    convs = f"{artifact.info['runtime']['integer_convs']}/{artifact.info['runtime']['convs']}"
    assert f"(int8 kernels: {convs} convs)" in summary.render()
    assert f"int8 ({convs} convs int8)" in (summary.root / "validate" / "report.md").read_text()


def test_the_same_command_builds_for_the_jetson(jetson_build):
    names = [a.name for a in jetson_build.report.artifacts]
    assert "tensorrt-int8" in names and (jetson_build.root / "bundle" / "kit" / "build_engine.sh").is_file()
    assert any("bundle build-engine" in note for note in jetson_build.notes)


@pytest.mark.promise("docs/serving.md", "each preprocessing setting of the DeepStream configs is a row of the report")
def test_each_deepstream_setting_is_a_measured_row_of_the_validation_report(jetson_build):
    """The photos (mixed sizes, RGB model, ImageNet's per-channel std): the report's DeepStream section scores every
    scaling filter with every geometry, the closest scalar, the other color order and the logits through nvinfer's
    parser; report.json, report.md, report.html and the build summary show it, and the configs set what it chose."""
    import configparser

    from edgeresnext.validate import ValidationReport
    from edgeresnext.validate.deepstream import BUNDLE_ROW, GEOMETRIES

    root = jetson_build.root
    section = ValidationReport.load(root / "validate" / "report.json").deepstream
    assert section == jetson_build.report.deepstream and section is not None
    assert section.images == 40 and section.network_size == (224, 224)
    assert section.rows[0].name == BUNDLE_ROW and len(section.rows) == 1 + 2 * 3 + 2 + 1
    assert {(r.scaling_filter, r.geometry) for r in section.rows if r.output == "softmax"} >= {
        (f, g) for f in ("nearest", "bilinear") for g in GEOMETRIES
    }
    assert {r.normalization for r in section.rows} >= {"in_model", "scalar"} and "BGR" in {
        r.color for r in section.rows
    }
    chosen = section.row(section.choices[0].chosen)
    pairs = [r for r in section.rows if r.output == "softmax" and r.normalization == "in_model" and r.color == "RGB"]
    assert chosen.agree == max(r.agree for r in pairs)  # the best agreement of every filter and geometry
    assert (chosen.scaling_filter, chosen.geometry) == (section.scaling_filter, section.geometry)
    for choice in section.choices:  # each setting names the row it runs as and the rows it was measured against
        assert choice.chosen == chosen.name and all(section.row(name) for name in choice.against)
    logits = section.row(section.choices[-1].against[0])
    # nvinfer's parser on logits keeps the top-1 where it is above 0, and no class where every logit is <= 0
    assert logits.output == "logits" and logits.agree <= chosen.agree <= logits.agree + logits.unclassified
    md = (root / "validate" / "report.md").read_text()
    html = (root / "validate" / "report.html").read_text()
    rendered = jetson_build.render()
    for choice in section.choices:
        assert choice.setting in md and section.choice_text(choice) in rendered
        assert choice.setting.replace("'", "&#x27;") in html
    config = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    config.read_string((root / "bundle" / "deepstream" / "config_infer_primary.txt").read_text())
    keep, symmetric = GEOMETRIES[section.geometry]
    assert config["property"]["scaling-filter"] == {"nearest": "0", "bilinear": "1"}[section.scaling_filter]
    assert config["property"]["maintain-aspect-ratio"] == str(int(keep))
    assert config["property"].get("symmetric-padding", "0") == str(int(symmetric))
    assert config["property"]["model-color-format"] == "0" and config["property"]["classifier-threshold"] == "0.0"
    manifest = json.loads((root / "bundle" / "manifest.json").read_text())
    assert manifest["exports"]["deepstream"]["choices"] == [section.choice_text(c) for c in section.choices]


def test_a_labels_file_that_does_not_fit_the_classifier_fails_before_any_stage(user_files, tmp_path):
    checkpoint, photos = user_files
    labels = tmp_path / "labels.txt"
    labels.write_text("bird\ncat\ndeer\n")
    with pytest.raises(ConfigError, match=r"labels.txt.*3 class names.*classifier has 5 outputs"):
        build(_target("cpu", checkpoint, photos, **{"model.class_names": str(labels)}), out_root=tmp_path / "b")
    assert not (tmp_path / "b" / "cpu").exists() or not any((tmp_path / "b" / "cpu").iterdir())


def test_a_class_folder_the_labels_do_not_name_fails_before_any_stage(user_files, tmp_path):
    checkpoint, photos = user_files
    labels = tmp_path / "labels.txt"
    labels.write_text("bird\ncat\ndeer\ndog\ntoad\n")  # the training order may differ; the names must match
    with pytest.raises(DataError, match=r"class folder 'frog' is not one of the model's classes"):
        build(_target("cpu", checkpoint, photos, **{"model.class_names": str(labels)}), out_root=tmp_path / "b")
    assert not (tmp_path / "b" / "cpu" / "export").exists()


@pytest.fixture(scope="module")
def class_sorted_photos(user_files, fmnist_test, tmp_path_factory) -> Path:
    """121 photos of the 5 classes, 30/25/24/22/20 per class folder (sorted paths list the classes in turn), mixed
    sizes, JPEG and PNG."""
    root = tmp_path_factory.mktemp("sorted") / "photos"
    rng = np.random.default_rng(1)
    for label, (name, count) in enumerate(zip(CLASSES, (30, 25, 24, 22, 20), strict=True)):
        (root / name).mkdir(parents=True)
        for k, index in enumerate(np.flatnonzero(fmnist_test.labels == label)[:count]):
            size = (int(rng.integers(60, 300)), int(rng.integers(60, 300)))
            image = Image.fromarray(fmnist_test.images[index]).resize(size).convert("RGB")
            image.save(root / name / f"{k:03d}.{'jpg' if k % 2 else 'png'}")
    return root


def test_the_jetson_check_set_of_a_class_sorted_folder_draws_every_class(user_files, class_sorted_photos, tmp_path):
    """The device check set is a seeded class-stratified sample, not the folder's first files (60 of these would be
    30 birds, 25 cats and 5 deer), and the build summary shows its class counts and what it proves."""
    import json

    from edgeresnext.backends.tensorrt.checkset import check_set_size

    checkpoint, _photos = user_files
    target = _target("jetson", checkpoint, class_sorted_photos, **{"backend_options.tensorrt.device_check_images": 60})
    summary = build(target, out_root=tmp_path, progress=False)
    check = json.loads((summary.root / "bundle" / "kit" / "check" / "check.json").read_text())
    counts = check["class_counts"]
    assert sum(counts.values()) == 60 and set(counts) == set(CLASSES) and min(counts.values()) >= 9, counts
    assert check["sample"]["seed"] == 0 and check["sample"]["of"] == 121
    shown = ", ".join(f"{name} {count}" for name, count in counts.items())
    rendered = summary.render()
    assert f"device check set: 60 images, a class-stratified random sample of 121 (data.sample_seed 0): {shown};" in (
        rendered
    )
    assert "device check set: proves max_device_disagreement <= 5 % when at most 0 of 60 images disagree" in rendered
    # By default the set is derived from the gate (124 images), so here it is all 121 photos: <= 5 % when at most 1
    # of 121 disagrees.
    default = _target("jetson", checkpoint, class_sorted_photos)
    assert check_set_size(default, (3, 224, 224), 5, 121).images == 121


@pytest.mark.slow
@pytest.mark.promise("docs/byo.md", "stays under 64 MB")
def test_a_resnext50_jetson_bundle_of_incompressible_photos_stays_under_64_mb(tmp_path):
    """The worst case of the bundle's size: a real ``resnext50_32x4d`` (no all-zero tensor, so nothing is shared by
    chance) and 130 noise photos, which no compression shrinks, so the default 124-image check set is as large as it
    gets. ResNeXt-50's INT8 weights are in the kit once (kit/model.weights) and the check set is raw uint8 at most:
    the whole bundle, kit included, stays under 64 MB. About 5 minutes on 2 cores (``make test-slow``)."""
    from edgeresnext.models import create

    torch.manual_seed(0)
    model = create("resnext50_32x4d", num_classes=5)
    state = model.state_dict()
    generator = torch.Generator().manual_seed(1)
    for key, value in state.items():  # BN weights away from torchvision's zero init: no two weights alike
        if key.endswith(".weight") and value.ndim == 1:
            state[key] = 1 + 0.2 * torch.randn(value.shape, generator=generator)
    checkpoint = tmp_path / "r50_5cls.pth"
    torch.save(state, checkpoint)
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    for name in CLASSES:
        (photos / name).mkdir(parents=True)
        for k in range(26):
            pixels = rng.integers(0, 256, (int(rng.integers(256, 400)), int(rng.integers(256, 400)), 3), dtype=np.uint8)
            Image.fromarray(pixels).save(photos / name / f"{k:03d}.png")
    target = _target("jetson", checkpoint, photos, **{"model.arch": "resnext50_32x4d", "quant.subset_size": 20})
    summary = build(target, out_root=tmp_path / "build", progress=False)
    bundle = summary.root / "bundle"
    check = json.loads((bundle / "kit" / "check" / "check.json").read_text())
    assert len(check["ids"]) == 124 and check["sample"]["size_reason"].startswith("derived from the gate")
    size = sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())
    weights = (bundle / "kit" / "model.weights").stat().st_size
    assert 22e6 < weights < 24e6, weights  # ResNeXt-50's ~23 M weights as INT8, once
    assert size < 64e6, size
