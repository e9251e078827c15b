"""Each stage's record (the ``info`` of its stage.json) is a small dataclass whose JSON form is the one the records had
before they were typed. tests/fixtures/stage_info/ holds the info of every stage.json of cpu, onnxruntime and jetson
builds (200 validation and 60 calibration images) made by the version before: each reads back field for field, is
written again byte for byte, and a stage.json of that version is taken as cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeresnext.backends import Artifact
from edgeresnext.pipeline.cache import run_stage
from edgeresnext.pipeline.stage_info import (
    STAGE_INFO,
    BundleInfo,
    CompileInfo,
    FallbackRecord,
    ModelInfo,
    QuantizeInfo,
)
from edgeresnext.pipeline.stages import STAGES

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stage_info"
BUILDS = sorted(FIXTURES.glob("*.json"))


def _records(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def _bytes(record: dict) -> str:
    """How stage.json writes a record (edgeresnext.atomic.write_json_atomic)."""
    return json.dumps(record, indent=2, sort_keys=True)


def test_every_stage_has_a_record_type_and_every_build_records_every_stage():
    assert list(STAGE_INFO) == list(STAGES)
    assert {p.stem for p in BUILDS} == {"cpu", "onnxruntime", "jetson"}
    for path in BUILDS:
        assert set(_records(path)) == set(STAGES), path.name


@pytest.mark.parametrize("build", BUILDS, ids=lambda p: p.stem)
def test_an_earlier_build_s_records_read_back_and_are_written_again_unchanged(build):
    for stage, recorded in _records(build).items():
        info = STAGE_INFO[stage].from_dict(recorded)
        assert isinstance(info, STAGE_INFO[stage])
        assert _bytes(info.to_dict()) == _bytes(recorded), stage


def test_the_records_are_read_by_field():
    """What the build summary and the later stages read, as attributes of the typed records."""
    cpu, jetson = _records(FIXTURES / "cpu.json"), _records(FIXTURES / "jetson.json")
    quantized = QuantizeInfo.from_dict(cpu["quantize"])
    assert quantized.method == "ptq" and quantized.calibration_images == 60
    assert quantized.calibration_near_copies.checked == 60 and quantized.calibration_near_copies.count == 0
    assert isinstance(quantized.fallback, FallbackRecord) and quantized.fallback.run
    assert quantized.fallback.layers_in_float == cpu["quantize"]["fallback"]["layers_in_float"]
    compiled = CompileInfo.from_dict(cpu["compile"])
    assert isinstance(compiled.artifact, Artifact) and (compiled.artifact.backend, compiled.artifact.kind) == (
        "openvino",
        "ir",
    )
    kit = CompileInfo.from_dict(jetson["compile"]).artifact
    assert kit.kind == "kit" and kit.info.extra["reason"] and kit.info.extra["device_commands"]  # the kit's own keys
    bundled = BundleInfo.from_dict(jetson["bundle"])
    assert bundled.device_check_set == jetson["bundle"]["device_check_set"] and bundled.deepstream is not None
    assert BundleInfo.from_dict(cpu["bundle"]).device_check_set is None
    assert "device_check_set" not in BundleInfo.from_dict(cpu["bundle"]).to_dict()  # left out when None, as before


def test_a_fallback_that_did_not_run_says_only_why():
    record = {"run": False, "why": "no labelled images disjoint from the validation set: none"}
    assert FallbackRecord.from_dict(record).to_dict() == record
    no_fallback = {k: v for k, v in _records(FIXTURES / "cpu.json")["quantize"].items() if k != "fallback"}
    assert QuantizeInfo.from_dict(no_fallback).fallback is None
    assert QuantizeInfo.from_dict(no_fallback).to_dict() == no_fallback


def test_a_stage_json_of_the_earlier_version_is_cached_and_read_as_its_record(tmp_path):
    """The earlier version wrote the info as a plain mapping: the same stage, now typed, skips and reads it."""
    recorded = _records(FIXTURES / "cpu.json")["quantize"]

    def earlier(folder: Path) -> dict:
        (folder / "quant.json").write_text("{}")
        return recorded

    folder = tmp_path / "quantize"
    run_stage(folder, "quantize", {"quant": 1}, [], earlier)
    written = (folder / "stage.json").read_bytes()

    def never(folder: Path) -> QuantizeInfo:
        raise AssertionError("a cached stage ran")

    cached = run_stage(folder, "quantize", {"quant": 1}, [], never, info_type=QuantizeInfo)
    assert cached.skipped and cached.info == QuantizeInfo.from_dict(recorded)
    assert (folder / "stage.json").read_bytes() == written

    # A typed stage writes the same stage.json record as the earlier version did.
    def typed(folder: Path) -> QuantizeInfo:
        (folder / "quant.json").write_text("{}")
        return QuantizeInfo.from_dict(recorded)

    fresh = run_stage(tmp_path / "again", "quantize", {"quant": 1}, [], typed, info_type=QuantizeInfo)
    assert not fresh.skipped and isinstance(fresh.info, QuantizeInfo)
    again = json.loads((tmp_path / "again" / "stage.json").read_text())["info"]
    assert _bytes(again) == _bytes(json.loads(written)["info"])


def test_a_stage_json_whose_info_is_not_the_stage_s_record_reruns_and_says_why(tmp_path):
    folder = tmp_path / "model"

    def produce(folder: Path) -> dict:
        (folder / "model.safetensors").write_text("weights")
        return {"arch": "resnext20_4x8d"}  # no num_classes, source, parameters

    run_stage(folder, "model", {}, [], produce)
    info = ModelInfo(arch="resnext20_4x8d", num_classes=10, source="shipped", parameters=1)

    def typed(folder: Path) -> ModelInfo:
        (folder / "model.safetensors").write_text("weights")
        return info

    rerun = run_stage(folder, "model", {}, [], typed, info_type=ModelInfo)
    assert not rerun.skipped and rerun.info == info
    assert rerun.reason.startswith("stage.json's info is not a ModelInfo (TypeError: ") and rerun.reason.endswith(
        "): rerun"
    )
    assert run_stage(folder, "model", {}, [], typed, info_type=ModelInfo).skipped
