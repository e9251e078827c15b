"""Target configs: YAML, Python and CLI overrides build the same typed Target; bad input names file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeresnext.config import Target, find_target, load_target, target_from_dict
from edgeresnext.errors import ConfigError


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_yaml_python_and_overrides_build_the_same_target(tmp_path):
    path = write(
        tmp_path,
        "edge.yaml",
        "backend: openvino\nprecision: int8\nbackend_options:\n  openvino:\n    hint: throughput\n    threads: 2\n",
    )
    from_yaml = load_target(path)
    from_python = target_from_dict(
        {
            "name": "edge",
            "backend": "openvino",
            "precision": "int8",
            "backend_options": {"openvino": {"hint": "throughput", "threads": 2}},
        }
    )
    assert from_yaml.resolved() == from_python.resolved()
    assert from_yaml.name == "edge" and from_yaml.source == str(path)
    overridden = load_target(path, overrides={"backend_options.openvino.threads": 4, "quant.calib_dir": None})
    assert overridden.backend_options.openvino.threads == 4 and overridden.quant.calib_dir == "calib_data"


def test_unknown_key_names_the_file_the_key_and_what_is_accepted(tmp_path):
    path = write(tmp_path, "bad.yaml", "backend: tensorrt\nbackend_options:\n  tensorrt:\n    workspace: 512\n")
    with pytest.raises(ConfigError) as err:
        load_target(path)
    message = str(err.value)
    assert str(path) in message and "backend_options.tensorrt.workspace" in message
    assert "workspace_mb" in message  # the accepted keys are listed


def test_wrong_type_names_the_key_and_the_value(tmp_path):
    path = write(tmp_path, "bad.yaml", "backend: onnxruntime\nbackend_options:\n  onnxruntime:\n    threads: many\n")
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: backend_options\.onnxruntime\.threads must be an integer, got 'many'"
    ):
        load_target(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("precision: int8\n", "missing required key 'backend'"),
        ("backend: coreml\n", "backend"),
        ("backend: openvino\nprecision: fp16\n", "fp16 is a TensorRT precision"),
        ("backend: openvino\nprecision: int8\nquant:\n  method: none\n", "needs quant.method"),
        ("backend: tensorrt\nquant:\n  symmetric_activations: false\n", "zero point 0"),
        (
            "backend: tensorrt\ninput:\n  batch: {min: 1, opt: 1, max: 8}\n"
            "backend_options:\n  tensorrt: {dla_core: 0}\n",
            "DLA engines take static shapes",
        ),
        ("backend: openvino\nbackend_options:\n  tensorrt: {dla_core: 0}\n", "dla_core is set but backend"),
        ("backend: tensorrt\ninput:\n  batch: {min: 4, opt: 2, max: 8}\n", "min <= opt <= max"),
        ("backend: tensorrt\nbackend_options:\n  tensorrt: {workspace_mb: 1}\n", "workspace_mb"),
        ("- a list\n", "must be a mapping"),
        ("backend: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_targets_are_one_clear_error(tmp_path, text, expected):
    path = write(tmp_path, "t.yaml", text)
    with pytest.raises(ConfigError, match=str(path)) as err:
        load_target(path)
    assert expected in str(err.value)


def test_extends_merges_key_by_key(tmp_path):
    write(
        tmp_path,
        "base.yaml",
        "backend: tensorrt\ninput:\n  batch: {min: 1, opt: 8, max: 32}\n"
        "backend_options:\n  tensorrt: {workspace_mb: 2048, fp16: true}\n",
    )
    child = write(
        tmp_path,
        "child.yaml",
        "extends: base.yaml\ninput:\n  batch: {opt: 1, max: 1}\nbackend_options:\n  tensorrt: {workspace_mb: 512}\n",
    )
    target = load_target(child)
    assert target.name == "child" and target.backend == "tensorrt"
    assert (target.input.batch.min, target.input.batch.opt, target.input.batch.max) == (1, 1, 1)
    assert target.backend_options.tensorrt.workspace_mb == 512 and target.backend_options.tensorrt.fp16


def test_extends_errors(tmp_path):
    loop_a = write(tmp_path, "a.yaml", "extends: b.yaml\nbackend: openvino\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_target(loop_a)
    missing = write(tmp_path, "c.yaml", "extends: nowhere.yaml\nbackend: openvino\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: extends 'nowhere\.yaml': .*nowhere\.yaml: no such target file"):
        load_target(missing)
    folder = write(tmp_path, "e.yaml", "extends: ''\nbackend: openvino\n")  # found by the issue 23 fuzz run
    with pytest.raises(ConfigError, match=r"e\.yaml: extends '' is a folder .*, not a target file"):
        load_target(folder)
    long = write(tmp_path, "f.yaml", f"extends: {'x' * 300}\nbackend: openvino\n")  # ENAMETOOLONG, also the fuzz's
    with pytest.raises(ConfigError, match=r"f\.yaml: extends 'xxx.*\.\.\. cannot be read \(File name too long\)"):
        load_target(long)
    not_a_path = write(tmp_path, "d.yaml", "extends: [a.yaml]\nbackend: openvino\n")
    with pytest.raises(ConfigError, match="'extends' must be a file path"):
        load_target(not_a_path)


def test_yaml_object_tags_are_refused(tmp_path):
    path = write(tmp_path, "evil.yaml", "backend: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_target(path)


def test_find_target_by_name_lists_the_known_ones(tmp_path):
    write(tmp_path, "cpu.yaml", "backend: openvino\n")
    assert find_target("cpu", tmp_path) == tmp_path / "cpu.yaml"
    with pytest.raises(ConfigError, match=r"unknown target 'tpu'; expected one of: cpu"):
        find_target("tpu", tmp_path)


def test_resolved_config_round_trips():
    target = target_from_dict({"name": "x", "backend": "tensorrt", "validate": {"latency_runs": 5}})
    again = Target.model_validate({"name": "x", **target.resolved()})
    assert again.resolved() == target.resolved() and again.validate_.latency_runs == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("description: " + "1" * 5000 + "\n", r"cannot be built \(Exceeds the limit \(4300 digits\)"),
        ("description: 2020-13-45\n", r"cannot be built \(month must be in 1\.\.12\); quote it"),
        ("name: !!int\n", r"cannot be built \(string index out of range\)"),
        ("name: !!float\n", r"cannot be built"),
        ("name: !!timestamp 2020-01-01 &a\n", r"cannot be built \('NoneType' object has no attribute 'groupdict'\)"),
        ("a: &a [*a]\n", "a YAML alias refers to a value that contains it"),
        ("backend: openvino\ndescription: " + "x" * (4 << 20) + "\n", "larger than 4 MiB"),
        ("backend: \xff\n", "not UTF-8 text"),
    ],
)
def test_yaml_values_that_cannot_be_built_are_a_config_error(tmp_path, text, message):
    """Found by issue 23's fuzz work: a 5000-digit integer or a date like 2020-13-45 raised a bare ValueError."""
    path = tmp_path / "odd.yaml"
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    with pytest.raises(ConfigError, match=message):
        load_target(path)


def test_aliases_within_the_limit_and_long_lists_are_read(tmp_path):
    """The alias limit counts repeats beyond the file's own values: 21,000 written class names are fine."""
    names = "".join(f"  - c{i}\n" for i in range(21_000))
    path = write(tmp_path, "many.yaml", f"backend: openvino\nmodel:\n  class_names:\n{names}")
    assert len(load_target(path).model.class_names) == 21_000
    path = write(tmp_path, "alias.yaml", "backend: openvino\nx: &q {min: 1, opt: 1, max: 1}\n")
    text = "backend: openvino\ninput:\n  batch: &b {min: 1, opt: 2, max: 4}\ngates: {}\n"
    assert load_target(write(tmp_path, "ok.yaml", text)).input.batch.max == 4
    with pytest.raises(ConfigError, match="unknown key 'x'"):
        load_target(path)


def test_a_target_file_that_is_a_fifo_or_device_is_refused_unread(tmp_path):
    """Reading a fifo would wait forever, /dev/zero would never end."""
    import os

    os.mkfifo(tmp_path / "pipe.yaml")
    write(tmp_path, "t.yaml", "extends: pipe.yaml\nbackend: openvino\n")
    with pytest.raises(ConfigError, match=r"pipe\.yaml: not a regular file \(a device, pipe or socket\)"):
        load_target(tmp_path / "t.yaml")
    with pytest.raises(ConfigError, match=r"/dev/zero: not a regular file"):
        load_target("/dev/zero")


def test_the_renamed_speedup_gate_names_its_new_key(tmp_path) -> None:
    """gates.min_speedup_vs_fp32 became gates.min_speedup (its baseline may be FP16): an old target file is told so."""
    from pathlib import Path

    from edgeresnext.config import load_target

    repo = Path(__file__).resolve().parents[1]
    path = tmp_path / "old.yaml"
    path.write_text(f"extends: {repo / 'targets' / 'cpu.yaml'}\ngates:\n  min_speedup_vs_fp32: 1.5\n")
    with pytest.raises(ConfigError, match=r"old\.yaml: gates has the old key min_speedup_vs_fp32: rename it"):
        load_target(path)
    path.write_text(f"extends: {repo / 'targets' / 'cpu.yaml'}\ngates:\n  min_speedup: 1.5\n")
    assert load_target(path).gates.min_speedup == 1.5


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("gates", "max_device_disagreement", 0.02),
        ("validate", "device_check_images", 32),
        ("validate", "device_check_megabytes", 8),
    ],
)
def test_the_device_check_keys_moved_to_the_tensorrt_section(tmp_path, section, key, value):
    """The device check is TensorRT's (its on-device kit): ``gates.max_device_disagreement`` and
    ``validate.device_check_images``/``device_check_megabytes`` are ``backend_options.tensorrt.*`` now; an old file is
    refused naming the new key, never read silently."""
    repo = Path(__file__).resolve().parents[1]
    path = write(tmp_path, "old.yaml", f"extends: {repo / 'targets' / 'jetson.yaml'}\n{section}:\n  {key}: {value}\n")
    with pytest.raises(
        ConfigError,
        match=rf"old\.yaml: {section} has the old key {key}: rename it backend_options\.tensorrt\.{key} \(the device",
    ):
        load_target(path)
    moved = f"extends: {repo / 'targets' / 'jetson.yaml'}\nbackend_options:\n  tensorrt:\n    {key}: {value}\n"
    target = load_target(write(tmp_path, "new.yaml", moved))
    assert getattr(target.backend_options.tensorrt, key) == value
    assert key not in target.resolved()[section]
    with pytest.raises(ConfigError, match=r"new\.yaml: .*tensorrt\.device_check_megabytes"):
        load_target(write(tmp_path, "new.yaml", moved.replace(f"{key}: {value}", "device_check_megabytes: 0")))


def test_old_bias_correction_key_is_refused_naming_the_new_one(tmp_path):
    """``quant.fast_bias_correction`` was renamed ``quant.bias_correction``: an old file gets the new name."""
    path = write(tmp_path, "old.yaml", "backend: onnxruntime\nquant:\n  fast_bias_correction: true\n")
    with pytest.raises(
        ConfigError, match=r"old\.yaml: quant has the old key fast_bias_correction: rename it bias_corr"
    ):
        load_target(path)
    renamed = write(tmp_path, "new.yaml", "backend: onnxruntime\nquant:\n  bias_correction: true\n")
    assert load_target(renamed).quant.bias_correction is True
    assert load_target(renamed, overrides={"quant.bias_correction": False}).quant.bias_correction is False
