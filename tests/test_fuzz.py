"""Property-based tests: whatever bytes or structures reach the config loader, the manifest reader, the image
decoding path, the bundle extractor or the checkpoint reader, the answer is a valid object or one of our own
errors, never a crash (TypeError, KeyError, RecursionError, ...) or a hang (each example has a deadline).

Examples are bounded so the whole file stays well under a minute on two shared cores.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgeresnext.bundle import MANIFEST, BundleError, Manifest, extract_bundle, read_manifest, verify_bundle
from edgeresnext.config import Target, load_target
from edgeresnext.data.fashion_mnist import PREPROCESS as FMNIST_PREPROCESS
from edgeresnext.data.folder import decode_image
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import CheckpointError, ConfigError, DataError, EdgeResNeXtError
from edgeresnext.models import ModelMeta, create, read_checkpoint, save_checkpoint

# make test (and CI) replays the same examples every run, so a landing never depends on luck;
# FUZZ_RANDOM=1 explores new ones and FUZZ_SCALE=N runs N times as many (a bug found that way gets a fixed test).
EXPLORE = os.environ.get("FUZZ_RANDOM") == "1"
SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
FUZZ = settings(
    max_examples=60 * SCALE,
    deadline=timedelta(seconds=5),
    derandomize=not EXPLORE,
    database=None if not EXPLORE else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
TARGET_KEYS = {
    "": [
        "name",
        "description",
        "backend",
        "precision",
        "model",
        "data",
        "quant",
        "input",
        "backend_options",
        "gates",
        "validate",
        "extends",
        "bogus",
    ],
    "model": ["arch", "checkpoint", "num_classes", "in_channels"],
    "data": ["dataset", "root", "split", "limit", "on_bad_image"],
    "quant": [
        "method",
        "calib_dir",
        "subset_size",
        "range_estimator",
        "per_channel",
        "symmetric_activations",
        "placement",
        "ignored_scope",
        "max_fallback_layers",
    ],
    "input": ["batch", "size"],
    "batch": ["min", "opt", "max"],
    "backend_options": ["openvino", "tensorrt", "onnxruntime"],
    "tensorrt": ["workspace_mb", "dla_core", "fp16", "strongly_typed", "device"],
    "gates": ["max_top1_drop", "min_agreement", "max_latency_ms"],
}
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        ["openvino", "tensorrt", "onnxruntime", "int8", "fp16", "fp32", "ptq", "none", "skip", "fail", "minmax"]
    ),
)


def _section(name: str, depth: int = 0) -> st.SearchStrategy:
    keys = st.sampled_from([*TARGET_KEYS.get(name, ["x"]), "unknown_key"])
    value = st.deferred(lambda: st.one_of(SCALARS, st.lists(SCALARS, max_size=3))) if depth >= 2 else None

    def children(key: str) -> st.SearchStrategy:
        if depth < 2 and key in TARGET_KEYS:
            return st.one_of(_section(key, depth + 1), SCALARS)
        return value if value is not None else st.one_of(SCALARS, st.lists(SCALARS, max_size=3))

    return st.dictionaries(keys, st.none(), max_size=6).flatmap(
        lambda shape: st.fixed_dictionaries({k: children(k) for k in shape})
    )


def _expect_ours(call):
    """Run ``call``; our error types are fine answers, anything else propagates and fails the test."""
    try:
        return call()
    except EdgeResNeXtError:
        return None


def _alias_bomb(levels: int, width: int, key: str = "description", flow: bool = True) -> str:
    """A billion-laughs target file: ``width ** levels`` values from a few lines of anchors and aliases."""
    lines = ["backend: openvino", "x-laughs:"]
    lines.append(f"  l0: &l0 [{', '.join(['lol'] * width)}]")
    for level in range(1, levels):
        items = [f"*l{level - 1}"] * width
        lines.append(f"  l{level}: &l{level} [{', '.join(items)}]" if flow else f"  l{level}: &l{level}")
        if not flow:
            lines += [f"    - {item}" for item in items]
    head, _, tail = key.rpartition(".")
    value = f"[{', '.join([f'*l{levels - 1}'] * width)}]"
    lines += [f"{head}:", f"  {tail}: {value}"] if head else [f"{tail}: {value}"]
    return "\n".join(lines) + "\n"


ALIAS_BOMBS = [
    _alias_bomb(9, 10),  # issue 23: 10^9 values in description hung the CLI
    _alias_bomb(9, 10, "model.class_names"),
    _alias_bomb(9, 10, "model.preprocess", flow=False),
    _alias_bomb(30, 2, "quant.ignored_scope"),
    _alias_bomb(3, 10, "gates.max_top1_drop"),  # 12,355 values: just over the limit
    _alias_bomb(2, 10, "gates.max_top1_drop"),  # 1,234 values: within it, refused by the type
    "a: &a [*a, *a]\nb: &b {x: *b}\n",
    "<<: &m {backend: openvino}\nx: &x [*m, *m, *m]\ny: [*x, *x, *x, *x]\n",
]


@st.composite
def _alias_bomb_texts(draw) -> str:
    """Bombs of random depth and width under a random key, in flow or block style."""
    key = draw(st.sampled_from(["description", "name", "model.class_names", "model.preprocess", "quant.ignored_scope"]))
    return _alias_bomb(draw(st.integers(1, 40)), draw(st.integers(1, 12)), key, draw(st.booleans()))


YAML_TOKENS = [
    "&a", "&b", "*a", "*b", "<<: *a", "!!binary AAAA", "!!timestamp 2020-01-01", "!!set {x}", "!!str", "!!int",
    "!!float", "!!map", "!!seq", "!!omap", "2020-13-45", "2001-02-30 10:00:00", "0000-01-01", "1e999", "-.inf",
    ".nan", "0x1F", "0o17", "1_000", "0b101", "~", "null", "yes", "on", "[", "]", "{", "}", ",", "-", "? x", ": y",
    "'q'", '"\\u0000"', "|", ">-", "#c", "\t", "9" * 5000, "x" * 300, "../../victim", "/etc/passwd",
]  # fmt: skip
KEYS = ["name", "description", "backend", "model", "class_names", "preprocess", "resize", "extends", "input", "size"]


@st.composite
def _yaml_like_texts(draw) -> str:
    """Lines of keys, indentation and YAML's tricky tokens (anchors, aliases, merges, tags, dates, big numbers)."""
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        indent = "  " * draw(st.integers(0, 3))
        key = draw(st.sampled_from([*KEYS, "-", "- x", "? k"]))
        tokens = draw(st.lists(st.sampled_from(YAML_TOKENS), max_size=4))
        lines.append(f"{indent}{key}: {' '.join(tokens)}" if key[0] != "-" else f"{indent}{key} {' '.join(tokens)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- config loader
@FUZZ
@given(text=_yaml_like_texts())
def test_yaml_like_text_is_a_target_or_a_config_error(text):
    """Random target files made of YAML's tricky parts: a Target or one ConfigError naming the file, briefly."""
    _target_or_a_brief_config_error(text, "fuzz.yaml", 600)


def _target_or_a_brief_config_error(text: str, name: str, briefly: int | None) -> Target | None:
    """:func:`load_target` of a file ``name`` holding ``text``: the Target, or None after a ConfigError that names the
    file (and, given ``briefly``, is under that many characters beside the file's path)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_text(text, encoding="utf-8")
        try:
            target = load_target(path)
        except ConfigError as err:
            assert str(path) in str(err)  # every config error names the file
            assert briefly is None or len(str(err)) < briefly + len(str(path)), str(err)[: briefly + 200]
            return None
        assert isinstance(target, Target)
        return target


@FUZZ
@given(text=st.text(max_size=300))
@example(text=ALIAS_BOMBS[0])
@example(text=ALIAS_BOMBS[3])
@example(text="backend: openvino\nname: ../../victim\n")
def test_any_yaml_text_is_a_target_or_a_config_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text(text, encoding="utf-8")
        result = _expect_ours(lambda: load_target(path))
        assert result is None or isinstance(result, Target)


@FUZZ
@given(data=_section(""))
def test_any_target_structure_is_a_target_or_a_config_error(data):
    data.pop("extends", None)  # 'extends' names files; covered with real files in test_config.py
    target = _target_or_a_brief_config_error(yaml.safe_dump(data, allow_unicode=True), "fuzz.yaml", None)
    if target is not None:
        assert target.input.batch.min <= target.input.batch.opt <= target.input.batch.max


@FUZZ
@given(text=_alias_bomb_texts())
def test_alias_bombs_are_answered_quickly_and_briefly(text):
    """Issue 23: whatever the bomb's shape, the loader answers in its deadline and an error quotes little of it."""
    target = _target_or_a_brief_config_error(text, "bomb.yaml", 300)
    if target is not None:
        assert len(json.dumps(target.resolved())) < 400_000


@pytest.mark.parametrize(
    "text",
    [
        *ALIAS_BOMBS,
        "a: &a [*a]\n",  # a self-referencing alias
        "- " * 2000 + "x\n",  # deep nesting
        "x: !!binary AAAA\n",
        "!!python/name:os.system\n",
        "backend: !!set {openvino}\n",
        "\x00\x01\x02",
        "\ufeffbackend: openvino\n",
        "backend: openvino\n" * 3,
    ],
)
def test_strange_yaml_is_answered(tmp_path, text):
    path = tmp_path / "odd.yaml"
    path.write_text(text, encoding="utf-8")
    result = _expect_ours(lambda: load_target(path))
    assert result is None or isinstance(result, Target)


# --------------------------------------------------------------------------------------------- manifest reader
@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX Runtime bundle of an untrained resnext11_4x8d (the hostile tests' bundle)."""
    from bundle_helpers import tiny_onnxruntime_bundle

    return tiny_onnxruntime_bundle(tmp_path_factory.mktemp("fuzz-bundle"))


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


def _paths(value, prefix=()):
    """Every key path in a JSON value (to pick which one to replace)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@FUZZ
@given(data=st.data())
def test_any_manifest_change_is_verified_or_a_bundle_error(bundle, data):
    original = json.loads((bundle / MANIFEST).read_text())
    paths = list(_paths(original))[1:]
    where = data.draw(st.sampled_from(paths), label="key path")
    replacement = data.draw(JSON, label="new value")
    manifest = json.loads(json.dumps(original))
    cursor = manifest
    for part in where[:-1]:
        cursor = cursor[part]
    if data.draw(st.booleans(), label="delete") and isinstance(cursor, dict):
        del cursor[where[-1]]
    else:
        cursor[where[-1]] = replacement
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(shutil.copytree(bundle, Path(folder) / "bundle"))
        (copy / MANIFEST).write_text(json.dumps(manifest))
        result = _expect_ours(lambda: verify_bundle(copy))
        assert result is None or result.to_json() == manifest


@FUZZ
@given(raw=st.one_of(JSON.map(json.dumps), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_any_manifest_file_is_read_or_a_bundle_error(raw):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / MANIFEST).write_text(raw, encoding="utf-8")
        result = _expect_ours(lambda: read_manifest(folder))
        assert result is None or isinstance(result, Manifest)


# Written as a 5,001-digit integer (more digits than Python converts; json.dumps cannot write it either).
TOO_LONG = "<5001 digits>"
# The manifest keys a device runtime reads besides the file list, and values around their edges.
RUNTIME_KEYS = [
    ("preprocess", "resize"),
    ("preprocess", "crop"),
    ("preprocess", "mean"),
    ("preprocess", "std"),
    ("preprocess", "channels"),
    ("input", "shape"),
    ("input", "shape", 1),
    ("input", "shape", 2),
    ("input", "batch", "min"),
    ("input", "batch", "max"),
    ("model", "num_classes"),
    ("labels",),
    ("schema_version",),
]
EDGES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([28, 2047, 2048, 2049, 60000, 65536, 65537, 2**31, 2**63, 10**4299, TOO_LONG]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    st.lists(st.integers(-2, 30), min_size=4, max_size=4),
    st.sampled_from(["L", "RGB", "labels.txt", "model.onnx", "../x", "", None]),
)


def _set(manifest: dict, where: tuple, value) -> None:
    cursor = manifest
    for part in where[:-1]:
        cursor = cursor[part]
    cursor[where[-1]] = value


def _reseal_labels(copy: Path, text: str) -> None:
    import hashlib

    data = text.encode("utf-8")
    (copy / "labels.txt").write_bytes(data)
    manifest = json.loads((copy / MANIFEST).read_text())
    for entry in manifest["files"]:
        if entry["path"] == "labels.txt":
            entry["sha256"], entry["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (copy / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def garment_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeresnext.data import load_dataset

    path = tmp_path_factory.mktemp("fuzz-image") / "garment.png"
    Image.fromarray(load_dataset("fashion-mnist", split="test").images[0]).save(path)
    return path


# Values a runtime key may plausibly hold (so that a share of the bundles still verifies), besides the edges.
PLAUSIBLE = st.sampled_from(
    [None, 1, 10, 28, 32, 56, 224, 0.5, [0.5], [0.5, 0.5, 0.5], "L", "RGB", [-1, 1, 28, 28], [1, 1, 28, 28]]
)
LABEL_LINES = st.one_of(
    # names of any visible characters (invisible format ones included: predict must print them escaped)
    st.lists(
        st.text(st.characters(exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=12),
        min_size=10,
        max_size=10,
    ),
    st.lists(st.text(min_size=1, max_size=12), min_size=10, max_size=10),  # any characters, one name a line
    st.lists(st.text(max_size=12), min_size=9, max_size=11),  # blank names, line breaks inside, a count off by one
)


@FUZZ
@given(
    changes=st.one_of(
        st.just([]), st.lists(st.tuples(st.sampled_from(RUNTIME_KEYS), st.one_of(PLAUSIBLE, EDGES)), max_size=2)
    ),
    labels=st.one_of(st.none(), LABEL_LINES.map("\n".join)),
)
def test_a_manifest_verify_passes_is_one_load_bundle_loads_and_predict_prints_safely(
    bundle, garment_png, changes, labels
):
    """Issue 30: `verify` passed manifests `load_bundle`/`predict` refused. Whatever the runtime keys and labels hold:
    what verify accepts loads and predicts (or refuses the image with a DataError), predict's output is printable,
    and a manifest verify refuses is refused by load_bundle too, with our error."""
    import contextlib

    from edgeresnext.cli import main
    from edgeresnext.runtime import load_bundle

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(shutil.copytree(bundle, Path(folder) / "bundle"))
        if labels is not None:
            _reseal_labels(copy, labels + "\n")
        manifest = json.loads((copy / MANIFEST).read_text())
        for where, value in changes:
            with contextlib.suppress(IndexError, TypeError, KeyError):  # a path an earlier change removed
                _set(manifest, where, value)
        (copy / MANIFEST).write_text(json.dumps(manifest).replace(json.dumps(TOO_LONG), "9" * 5001))
        verified = _expect_ours(lambda: verify_bundle(copy))
        loaded = _expect_ours(lambda: load_bundle(copy, verify=False))
        if verified is None:
            event("refused by verify")
            if loaded is not None:  # refused by verify for its files (a hash), not for what the runtime reads
                loaded.close()
            return
        assert loaded is not None, "verify passed a bundle load_bundle refuses"
        with loaded:
            result = _expect_ours(lambda: loaded.predict(garment_png, top_k=3))
        if result is None:
            event("verified and loaded; the image refused (DataError)")
            return
        event("verified, loaded and predicted")
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            assert main(["-q", "bundle", "predict", str(copy), str(garment_png)]) == 0
        assert all(line.isprintable() for line in output.getvalue().splitlines()), output.getvalue()


def test_deeply_nested_manifest_is_a_bundle_error(tmp_path):
    (tmp_path / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match=r"manifest\.json"):
        read_manifest(tmp_path)


# --------------------------------------------------------------------------------------------- image decoding
def _image_bytes(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    {
        "png": lambda: image.save(buffer, "PNG"),
        "jpeg": lambda: image.save(buffer, "JPEG"),
        "bmp": lambda: image.save(buffer, "BMP"),
        "gif": lambda: image.convert("P").save(buffer, "GIF"),
        "png16": lambda: Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257).save(buffer, "PNG"),
        "tiff": lambda: image.save(buffer, "TIFF"),
    }[kind]()
    return buffer.getvalue()


SEEDS = {kind: _image_bytes(kind) for kind in ("png", "jpeg", "bmp", "gif", "png16", "tiff")}
PREPROCESS = [FMNIST_PREPROCESS, Preprocess(channels="RGB", resize=16, crop=16)]


@st.composite
def damaged_images(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[kind])
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return kind, bytes(data)


def _decode_and_preprocess(path: Path) -> None:
    try:
        image = decode_image(path)
    except DataError as err:
        assert str(path) in str(err)  # the error names the file
        return
    for preprocess in PREPROCESS:
        array = preprocess.image_to_array(image)
        assert array.dtype == np.float32 and array.ndim == 3 and np.isfinite(array).all()


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow's note on a damaged TIFF header
@FUZZ
@given(sample=damaged_images())
def test_damaged_images_decode_or_are_a_data_error(sample):
    kind, data = sample
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"image.{'jpg' if kind == 'jpeg' else 'png' if kind == 'png16' else kind}"
        path.write_bytes(data)
        _decode_and_preprocess(path)


@FUZZ
@given(data=st.binary(max_size=512), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".gif", ".pgm", ".webp"]))
def test_random_bytes_are_a_data_error(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"random{suffix}"
        path.write_bytes(data)
        _decode_and_preprocess(path)


@pytest.mark.parametrize(
    ("side", "pixels"),
    [
        (9_000, "81,000,000"),  # over our limit, under Pillow's: refused by our check after opening the header
        (20_000, "400,000,000"),  # over twice Pillow's limit: Pillow refuses while opening; still "too large"
    ],
)
def test_decompression_bomb_is_too_large_not_corrupt(tmp_path, side, pixels):
    path = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(path)  # a tiny file, tens or hundreds of megapixels once decoded
    with pytest.raises(DataError, match=rf"bomb\.png: too large \({pixels} pixels, limit 64,000,000\)"):
        decode_image(path)


# --------------------------------------------------------------------------------------------- archives, checkpoints
@pytest.fixture(scope="module")
def bundle_tgz(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz-tgz") / "bundle.tar"
    with tarfile.open(path, "w") as archive:
        archive.add(bundle, arcname="bundle")
    return path.read_bytes()


@settings(FUZZ, max_examples=30 * SCALE)
@given(data=st.data())
def test_damaged_archives_extract_verified_or_are_a_bundle_error(bundle_tgz, data):
    raw = bytearray(bundle_tgz)
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "bundle.tar"
        archive.write_bytes(bytes(raw))
        try:
            manifest = extract_bundle(archive, Path(folder) / "out")
        except BundleError:
            assert sorted(p.name for p in Path(folder).iterdir()) == ["bundle.tar"], "extraction left files"
            return
        verify_bundle(Path(folder) / "out")
        assert manifest.files


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("fuzz-ckpt")
    model = create("resnext11_4x8d", num_classes=10, in_channels=1)
    meta = ModelMeta(arch="resnext11_4x8d", num_classes=10, in_channels=1, class_names=[str(i) for i in range(10)])
    return {
        suffix: save_checkpoint(folder / f"m{suffix}", model, meta).read_bytes() for suffix in (".safetensors", ".pt")
    }


@settings(FUZZ, max_examples=60 * SCALE)
@given(data=st.data())
def test_damaged_checkpoints_read_or_are_a_checkpoint_error(checkpoint_bytes, data):
    suffix = data.draw(st.sampled_from(sorted(checkpoint_bytes)), label="format")
    raw = bytearray(checkpoint_bytes[suffix])
    head = data.draw(st.booleans(), label="damage the header")
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        position = data.draw(st.integers(0, min(len(raw) - 1, 2048) if head else len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"damaged{suffix}"
        path.write_bytes(bytes(raw))
        try:
            read_checkpoint(path)
        except CheckpointError as err:
            assert "damaged" in str(err)


# --------------------------------------------------------------------------------------------- numeric flags
# Arguments each command needs besides the flag under test (nothing runs: values are parsed and checked only).
REQUIRED = {
    ("build",): ["--target", "cpu"],
    ("validate",): ["--target", "cpu"],
    ("compile",): ["--target", "cpu"],
    ("compare",): ["a.onnx", "b.onnx"],
    ("bundle", "predict"): ["b", "x.png"],
}
FLAG_VALUES = st.one_of(
    st.integers(-(2**80), 2**80).map(str),
    st.integers(-3, 70_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "-0", "1e3", "0x10", "1_000", " 5", "nan", "inf", "9" * 5000, "1\n2", "\x1b[2J"]),
)


def _numeric_flags() -> list[tuple[tuple[str, ...], str, object]]:
    import argparse

    from edgeresnext.cli import make_parser

    def walk(parser, path=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield (*path, name), sub
                    yield from walk(sub, (*path, name))

    found = []
    for words, sub in walk(make_parser()):
        for action in sub._actions:
            named = getattr(action.type, "__name__", "")
            if action.option_strings and (action.type in (int, float) or named in ("integer", "number")):
                found.append((words, action.option_strings[0], action))
    return found


NUMERIC_FLAGS = _numeric_flags()


@FUZZ
@given(flag=st.sampled_from(NUMERIC_FLAGS), value=FLAG_VALUES)
def test_any_value_of_a_numeric_flag_is_taken_within_its_bounds_or_refused_in_one_line(flag, value):
    """Issue 30, item 4: every numeric flag of every command has an upper bound. A value is parsed into its range
    (and, for a flag that sets a target key, into a target) or refused with exit 2 in one line naming the flag."""
    import contextlib

    from edgeresnext.cli import make_parser
    from edgeresnext.cli.common import BUILD_FLAGS, QUANTIZE_FLAGS, VALIDATE_FLAGS, target_from_args

    words, name, action = flag
    argv = [*words, *REQUIRED.get(words, []), f"{name}={value}"]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = make_parser().parse_args(argv)
    except SystemExit as exited:
        lines = errors.getvalue().strip().splitlines()
        assert exited.code == 2 and len(lines) == 1 and name in lines[0] and lines[0].isprintable(), errors.getvalue()
        event("refused by the parser")
        return
    parsed = getattr(args, action.dest)
    bounds = getattr(action.type, "bounds", None)
    if bounds is not None:
        assert bounds[0] <= parsed <= bounds[1]
        event("taken, within its bounds")
        return
    flags = {"validate": VALIDATE_FLAGS, "quantize": QUANTIZE_FLAGS, "build": BUILD_FLAGS}[words[0]]
    try:
        target_from_args(args, flags)
    except ConfigError as err:
        assert str(err).startswith(f"{name} ") and "accepted" in str(err), str(err)
        event("refused by the target schema")
        return
    event("taken into a target")
