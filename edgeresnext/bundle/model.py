"""The bundle manifest as a type: :class:`Manifest` and its sections, the one source of ``manifest.json``'s shape.

The writer (:mod:`.write`) builds a :class:`Manifest` and writes :meth:`~edgeresnext.records.Record.to_json`; the
readers (:func:`~edgeresnext.bundle.manifest.read_manifest`, ``verify_bundle``, the runtime, the CLI, serving) get
one back. The JSON Schema (``edgeresnext/schemas/manifest.schema.json``, :func:`schema_for`) is generated from these
classes, and an artifact's device section (``engine``) from its backend's ``device_record``: the registry is the one
list of backends, so the schema's backend and kind enums (``"x-enum"``) and its device sections follow it. Only the
standard library: device runtimes read manifests without pydantic.

``make schema`` writes the schema file (:func:`write_schema_file`), and a test fails when the committed file is not
what it writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgeresnext.errors import BundleError, ConfigError
from edgeresnext.records import DeviceRecord, Record, json_schema, key
from edgeresnext.registry import backend_class, backend_names

FORMAT = "edgeresnext-bundle"
SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent.parent / "schemas" / "manifest.schema.json"
Precision = Literal["int8", "fp16", "fp32"]
Dtype = Literal["float32", "float16"]


@dataclass(kw_only=True)
class TargetSection(Record):
    name: str
    description: str | None = None
    config: dict[str, Any] | None = key(None, description="the resolved target config the bundle was built from")


@dataclass(kw_only=True)
class ModelSection(Record):
    arch: str
    num_classes: int = key(minimum=1)
    dataset: str | None = key(None, nullable=True)
    recipe: str | None = key(None, nullable=True)
    metrics: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None


@dataclass(kw_only=True)
class BatchRange(Record):
    min: int = key(minimum=1)
    opt: int = key(minimum=1)
    max: int = key(minimum=1)


@dataclass(kw_only=True)
class InputSection(Record):
    CLOSED = True

    name: str
    shape: list[int] = key(min_items=4, max_items=4, description="NCHW; -1 marks a dynamic dimension (the batch)")
    dtype: Dtype
    layout: Literal["NCHW"]
    batch: BatchRange | None = None


@dataclass(kw_only=True)
class PreprocessSection(Record):
    channels: Literal["L", "RGB"]
    resize: int | None = key(nullable=True, minimum=1)
    crop: int | None = key(nullable=True, minimum=1)
    mean: list[float] = key(min_items=1)
    std: list[float] = key(min_items=1)
    layout: Literal["NCHW"]
    channel_order: Literal["L", "RGB"]
    resize_mode: str | None = None
    crop_mode: str | None = None
    scale: float
    order: str | None = None


@dataclass(kw_only=True)
class OutputSection(Record):
    name: str
    shape: list[int] = key(min_items=2, max_items=2)
    dtype: Dtype
    meaning: Literal["logits"]
    scores: str | None = None


@dataclass(kw_only=True)
class BackendSection(Record):
    name: str = key(x_enum="backends")
    version: str


@dataclass(kw_only=True)
class DeviceSection(Record):
    target_device: str
    built_on: dict[str, Any] | None = None


@dataclass(kw_only=True)
class ArtifactEntry(Record):
    """One artifact of the bundle: its backend, precision and kind, its path and files in the bundle, how it was built
    (``info``), and, for one built on the device, what the device step recorded (``engine``: its backend's
    ``device_record``, e.g. TensorRT's :class:`~edgeresnext.backends.tensorrt.record.EngineRecord`)."""

    backend: str = key(x_enum="backends")
    precision: Precision
    kind: str = key(x_enum="kinds")
    path: str
    files: list[str] = key(min_items=1)
    info: dict[str, Any] | None = key(None, description="how the artifact was built, as its builder recorded it")
    # What the device step recorded (a TensorRT engine built on the device): the type is the backend's device_record.
    engine: DeviceRecord | None = None

    @classmethod
    def from_json(cls, data: Any) -> ArtifactEntry:
        entry = super().from_json(data)
        # The schema checked the section against the registered backends' records: read it as the artifact's
        # backend's, or (a section on an artifact of a backend without one) as the first registered backend's.
        if entry.engine is not None:
            records = (device_record(name) for name in [entry.backend, *backend_names()])
            record = next((r for r in records if r is not None), None)
            if record is not None:
                entry.engine = record.from_json(data["engine"])
        return entry


@dataclass(kw_only=True)
class DeepStreamExport(Record):
    folder: str
    configs: dict[str, Any]
    labels: str = key(description="nvinfer's classifier label file: one line, labels separated by ';'")
    engine: str = key(description="the engine the configs run, built by the device step")
    onnx: str = key(description="the ONNX that engine is built from (normalization inside, Softmax at the end)")
    normalization: Literal["in_model", "scalar"]
    softmax: bool | None = None
    scaling_filter: Literal["nearest", "bilinear"] | None = None
    geometry: Literal["stretch", "pad-symmetric", "pad-right-bottom"] | None = key(
        None,
        description="stretched to the network size (maintain-aspect-ratio=0), or fitted and padded",
    )
    closest_scalar_std: float | None = None
    measured: list[dict[str, Any]] | None = key(None, description="the validation report's DeepStream rows")
    choices: list[str] | None = key(None, description="each setting of the configs with the figure that chose it")
    files: list[str] = key(min_items=1)


@dataclass(kw_only=True)
class Exports(Record):
    DESCRIPTION = (
        "what the bundle carries for serving engines, by engine (deepstream: the nvinfer configs for the engine the "
        "device step builds, its labels, the preprocessing chosen and the figures that chose it). Each export's files "
        "are in files (sha256). Optional: bundles without it stay valid."
    )

    deepstream: DeepStreamExport | None = None

    def files(self) -> dict[str, list[str]]:
        """Each export's files by export name (an export this version does not know: as its record lists them)."""
        known = {"deepstream": self.deepstream.files} if self.deepstream is not None else {}
        for name, value in self.extra.items():
            listed = value.get("files") if isinstance(value, dict) else None
            if not isinstance(listed, list) or not all(isinstance(path, str) for path in listed):
                raise BundleError(
                    f"manifest.json.exports.{name}: expected an object with files: [path, ...] (paths inside the "
                    f"bundle), got {json.dumps(value)[:80]}"
                )
        return {**known, **{name: list(value["files"]) for name, value in self.extra.items()}}


@dataclass(kw_only=True)
class FileEntry(Record):
    CLOSED = True

    path: str = key(pattern="^[^/\\\\][^\\\\]*$")
    sha256: str = key(pattern="^[0-9a-f]{64}$")
    bytes: int = key(minimum=0)


@dataclass(kw_only=True)
class Manifest(Record):
    """``manifest.json`` of ``build/<target>/bundle/``: what a device app needs to run the model (input, preprocessing,
    output, labels, precision, backend and device), the validation summary, every artifact, and the sha256 and size of
    every file. Each key is an attribute, each section a typed record (``manifest.input.shape``,
    ``manifest.artifacts[0].engine``); keys this version does not know are kept in ``extra``, and ``to_json()`` gives
    the JSON object back as it was read."""

    CLOSED = True

    format: Literal["edgeresnext-bundle"]
    schema_version: int = key(minimum=1)
    created_by: str = key(description="edgeresnext version that wrote the bundle")
    model: ModelSection
    input: InputSection
    preprocess: PreprocessSection
    output: OutputSection
    labels: str = key(description="file with one class name per line, line i = class index i")
    precision: Precision
    backend: BackendSection
    device: DeviceSection
    validation: dict[str, Any] | None = key(None, nullable=True)
    artifacts: list[ArtifactEntry] = key(min_items=1)
    target: TargetSection | None = None
    exports: Exports | None = None
    files: list[FileEntry] = key(min_items=1)

    @property
    def primary(self) -> ArtifactEntry:
        """The artifact that describes the bundle (its backend, precision, input and output)."""
        return self.artifacts[0]

    def sha256(self) -> dict[str, str]:
        """Every listed file's sha256, by bundle path."""
        return {entry.path: entry.sha256 for entry in self.files}


def device_record(backend: str) -> type[DeviceRecord] | None:
    """The type of what the device step records for ``backend``'s artifacts (None: built on the host only)."""
    try:
        return getattr(backend_class(backend), "device_record", None)
    except ConfigError:  # an unknown backend, or a plugin that does not import: the schema check names it
        return None


def _device_sections(backends: list[str]) -> dict[str, Any]:
    """The schema of an artifact's ``engine`` section: the one backend's record that has one, or any of several."""
    records = list(dict.fromkeys(r for r in (device_record(name) for name in backends) if r is not None))
    if len(records) == 1:
        return json_schema(records[0])
    return {"type": "object", **({"anyOf": [json_schema(r) for r in records]} if records else {})}


def schema_for(backends: list[str]) -> dict[str, Any]:
    """The manifest's JSON Schema for these registered backends (their device sections composed in; ``"x-enum"``
    markers left for :func:`~edgeresnext.bundle.manifest.manifest_schema` to fill)."""
    schema = json_schema(Manifest)
    schema["properties"]["artifacts"]["items"]["properties"]["engine"] = _device_sections(backends)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/edgeresnext/edgeresnext/schemas/manifest.schema.json",
        "title": "edgeresnext bundle manifest",
        "description": (
            "manifest.json of build/<target>/bundle/: what a device app needs to run the model, and the sha256 of "
            f"every file in the bundle. Schema version {SCHEMA_VERSION} (additions since, such as an artifact's engine "
            "section, are optional: older readers and older bundles stay valid). Generated from "
            "edgeresnext.bundle.model by `make schema`: do not edit."
        ),
        **schema,
    }


def shipped_schema_text() -> str:
    """The committed schema file's text: the schema for the backends edgeresnext ships."""
    from edgeresnext.registry import _SHIPPED

    return json.dumps(schema_for(sorted(_SHIPPED)), indent=2) + "\n"


def write_schema_file() -> str:
    """Write the committed schema file (``make schema``) from the model; returns what it did."""
    text = shipped_schema_text()
    if SCHEMA_PATH.read_text(encoding="utf-8") == text:
        return f"{SCHEMA_PATH}: up to date"
    from edgeresnext.atomic import write_text_atomic

    write_text_atomic(SCHEMA_PATH, text)
    return f"wrote {SCHEMA_PATH}"
