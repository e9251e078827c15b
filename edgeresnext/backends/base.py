"""The Backend protocol, the Runner base class, typed ArtifactInfo and PrecisionReport, and backend lookup.

A backend is one file with one class: ``available()`` says whether it can run here (None) or why not,
``compile()`` turns the ONNX model into what the device runs, ``load()`` returns a :class:`Runner`
(``runner(batch) -> logits``). Public methods check inputs and state once and call the ``_impl`` hook
that a backend implements (Polygraphy's ``infer``/``infer_impl``).

A backend owns its facts (its options, display name, float baseline, packages, stand-ins, which ONNX it
compiles): everything else reads them from the class. Backends are named in the registry
(:mod:`edgeresnext.registry`: ``name -> "module:Class"``) and imported on first use, so openvino/tensorrt stay
optional (Olive's ``module_path``).
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeresnext.errors import BackendUnavailable, ConfigError, EdgeResNeXtError
from edgeresnext.registry import backend_class, backend_names, target_options

if TYPE_CHECKING:
    from edgeresnext.config import Target
    from edgeresnext.models.checkpoints import ModelMeta
    from edgeresnext.records import DeviceRecord


@dataclass
class ArtifactInfo:
    """How an artifact was built. The shared fields (read by validation, bundles, the CLI) come first; a backend's
    own facts (its recorded run options, an engine's TensorRT version and GPU) follow in ``extra``, read only by that
    backend. ``artifact.json`` and a manifest hold it as one flat mapping, as before."""

    source_onnx: str | None = None  # the ONNX the artifact was compiled from
    input_shape: list[Any] | None = None  # as the ONNX declares it (a name for a dynamic dimension)
    input_name: str | None = None  # recorded where the artifact cannot be opened everywhere (an engine)
    output_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in shared.items() if v not in (None, [])}, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ArtifactInfo:
        data = dict(data or {})
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: data.pop(k) for k in list(data) if k in names}, extra=data)


@dataclass
class PrecisionReport:
    """What a runtime really runs in which precision, read from the runtime (never from the file). Shared fields
    first; a backend's own figures (per-op counts, device, build mode) in ``extra``, written as they are."""

    precision: str  # what the artifact was built to run
    backend: str
    int8_fraction: float | None = None  # the share of compute running INT8, as the runtime counts it
    int8_count: str | None = None  # "6/22 convs": how many compute units of which kind run INT8
    warnings: list[str] = field(default_factory=list)  # what the report must say about this runtime's choice
    extra: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] | None = None  # one row per compute layer, where the runtime lists them

    def summary(self) -> str:
        """``int8 (6/22 convs int8)``: the precision and, for INT8, what runs as integer kernels."""
        if "int8" not in self.precision or not self.int8_count:
            return self.precision
        return f"{self.precision} ({self.int8_count} int8)"

    def to_dict(self, layers: bool = True) -> dict[str, Any]:
        """The JSON form (``report.json``); ``layers=False`` leaves the per-layer rows out."""
        data: dict[str, Any] = {"precision": self.precision, "backend": self.backend, **self.extra}
        if self.int8_fraction is not None:
            data["int8_fraction"] = self.int8_fraction
        if self.int8_count is not None:
            data["int8_count"] = self.int8_count
        if self.warnings:
            data["warnings"] = list(self.warnings)
        if layers and self.layers is not None:
            data["layers"] = self.layers
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrecisionReport:
        """Read it back, also from a report written before ``int8_count`` existed (its per-backend counts)."""
        data = dict(data)
        known = {k: data.pop(k) for k in ("int8_fraction", "int8_count", "warnings") if k in data}
        rows = data.pop("layers", None)
        if "int8_count" not in known:
            known["int8_count"] = _legacy_int8_count(data)
        return cls(
            precision=str(data.pop("precision", "")),
            backend=str(data.pop("backend", "")),
            layers=rows if isinstance(rows, list) else None,
            extra=data,
            **known,
        )


def _legacy_int8_count(data: Mapping[str, Any]) -> str | None:
    """The ``int8_count`` of a report written before it was a field (ONNX Runtime's and OpenVINO's own counts)."""
    for done, total, unit in (("integer_convs", "convs", "convs"), ("int8_layers", "compute_layers", "layers")):
        if total in data and done in data:
            return f"{data[done]}/{data[total]} {unit}"
    return None


@dataclass
class Artifact:
    """What ``compile`` produced: the main file, every file it needs, and how it was built."""

    backend: str
    precision: str  # "int8" | "fp16" | "fp32" (what the artifact was built to run)
    kind: str  # one of its backend's ``kinds`` ("onnx", "ir", "engine", TensorRT's on-device "kit")
    path: Path  # the file a runtime opens (.onnx, .xml, .engine), or the folder of a build the device finishes
    files: list[Path] = field(default_factory=list)
    info: ArtifactInfo = field(default_factory=ArtifactInfo)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "kind": self.kind,
            "path": str(self.path),
            "files": [str(p) for p in self.files],
            "info": self.info.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            backend=data["backend"],
            precision=data["precision"],
            kind=data["kind"],
            path=Path(data["path"]),
            files=[Path(p) for p in data.get("files", [])],
            info=ArtifactInfo.from_dict(data.get("info")),
        )

    def save(self, path: str | Path) -> Path:
        from edgeresnext.atomic import write_json_atomic

        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class TritonEntry:
    """How Triton Inference Server runs an artifact natively: ``platform`` or ``backend`` (the config.pbtxt line,
    e.g. ``onnxruntime_onnx``), the version folder's files (name there -> the artifact's file), the instance kind,
    backend parameters, and ``cc_model_filenames`` (a GPU compute capability -> the file built for it)."""

    files: dict[str, Path]
    platform: str | None = None
    backend: str | None = None
    kind: str = "KIND_CPU"
    parameters: dict[str, str] = field(default_factory=dict)
    cc_model_filenames: dict[str, str] = field(default_factory=dict)


@dataclass
class HostOutputs:
    """What the build host knows that a bundle finished on the device may carry (:meth:`Backend.bundle_for_device`):
    the target, the model's metadata, the validation the host ran, and the host's outputs for any images.

    ``logits(inputs, ids, row=None, onnx=None)``: the host's logits of the float32 NCHW ``inputs`` (validation images
    ``ids``) and whether the validate stage kept them for these very bytes: the FP32 reference (``row`` None) or the
    report row ``row``, else run here (the FP32 model, or ``onnx`` in ONNX Runtime)."""

    target: Target
    meta: ModelMeta
    validated_images: int  # how many images the validate stage scored
    report: Path | None  # the validate stage's report.json
    logits: Callable[..., tuple[np.ndarray, bool]]
    near_copies: frozenset[str] = frozenset()  # validation image ids the quantize stage found in the calibration set


@dataclass(frozen=True)
class DeviceStepOutcome:
    """What a device step sealed into a bundle, as the command that ran it says it: the lines to print, the exit code
    (:mod:`edgeresnext.errors`: 0 proven, 1 failed, 3 NOT PROVEN or unchecked) and the one-line error or warning."""

    lines: list[str]
    exit_code: int
    message: str = ""


@dataclass(frozen=True)
class RunOptions:
    """A backend's options, declared once, as plain data (the device runtime has no pydantic). A backend subclasses
    it; the fields it declares with :func:`~edgeresnext.registry.option` are its target keys
    (``backend_options.<name>``, a pydantic section ``config`` derives from this class), and those marked
    ``recorded`` travel in the artifact's info to the device runtime (a build host's paths, e.g. a cache folder,
    stay behind). :meth:`Backend.run_options` builds one from a Target (validation) or from an artifact's info.
    """

    device: str | None = None  # the runtime's device name (OpenVINO CPU/GPU/NPU); None: the backend's default
    threads: int | None = None  # None: the runtime's default (a target key only where a backend declares it)

    @classmethod
    def recorded(cls) -> tuple[str, ...]:
        """The fields an artifact's info carries to another host."""
        return ("threads", *(f.name for _key, f, meta in target_options(cls) if meta.recorded and f.name != "threads"))


def run_in_chunks(batch: np.ndarray, infer: Callable[[np.ndarray], Any], sizes: tuple[int, int] | None) -> np.ndarray:
    """Run ``infer`` on a batch of any size with an artifact that takes batches of ``sizes`` (min, max; None: any).

    Larger batches are split into chunks of ``max``; a remainder below ``min`` is zero-padded and the padding's
    outputs dropped, so validation can feed 64 images to an engine built for batch 1..8 or exactly 1.
    """
    if sizes is None or sizes[0] <= batch.shape[0] <= sizes[1]:
        # The common case (and the one latency is measured on): no slicing, padding or concatenation.
        return np.asarray(infer(np.ascontiguousarray(batch)))
    lo, hi = sizes
    outputs = []
    for start in range(0, batch.shape[0], hi):
        chunk = batch[start : start + hi]
        count = chunk.shape[0]
        if count < lo:
            pad = np.zeros((lo - count, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        outputs.append(np.asarray(infer(np.ascontiguousarray(chunk)))[:count])
    if not outputs:
        raise EdgeResNeXtError(f"an empty batch (shape {batch.shape}); pass at least one image")
    return np.concatenate(outputs)


class Runner:
    """Runs one compiled artifact: ``runner(batch)`` with a float32 NCHW batch of any size returns float32 logits.

    The base class checks the batch once and splits or pads it to the artifact's ``batch_range`` (the batch
    sizes it takes in one call), so callers never pad; a backend implements ``_infer_impl`` for a batch inside
    that range. Runners hold runtime resources: ``close()`` frees them, and ``with backend.load(a) as runner:``
    closes on exit.
    """

    def __init__(self, artifact: Artifact, options: RunOptions | None = None) -> None:
        self.artifact = artifact
        self.options = options if options is not None else RunOptions()
        # (C, H, W) the artifact expects, when the artifact says; checked on every batch.
        self.input_shape: tuple[int, ...] | None = None
        # (min, max) batch the artifact takes in one call; None: any. Other batches are split/padded.
        self.batch_range: tuple[int, int] | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(run_in_chunks(self._checked(batch), self._infer_impl, self.batch_range), dtype=np.float32)

    def bind(self, batch: np.ndarray) -> Callable[[], object]:
        """A zero-argument callable that runs inference on ``batch``, checked and handed to the runtime once.

        This is what latency is timed on, the way OpenVINO's benchmark_app and trtexec time a model: the input
        is set once, and each call is inference alone (no Python-side checks or copies). Backends bind through
        their own API (an extra OpenVINO infer request, an ONNX Runtime IO binding). Each call returns the
        logits, possibly a view of a buffer the next call overwrites. A batch outside ``batch_range`` is bound
        as split/padded calls.
        """
        batch = self._checked(batch)
        if self.batch_range is not None and not self.batch_range[0] <= batch.shape[0] <= self.batch_range[1]:
            return functools.partial(run_in_chunks, batch, self._infer_impl, self.batch_range)
        return self._bind_impl(batch)

    def _bind_impl(self, batch: np.ndarray) -> Callable[[], object]:
        return functools.partial(self._infer_impl, batch)

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.dtype != np.float32:
            raise EdgeResNeXtError(f"{self.artifact.path}: input batch must be float32, got {batch.dtype}")
        if batch.ndim != 4:
            raise EdgeResNeXtError(f"{self.artifact.path}: input batch must be NCHW (4-D), got shape {batch.shape}")
        if self.input_shape is not None and tuple(batch.shape[1:]) != tuple(self.input_shape):
            raise EdgeResNeXtError(
                f"{self.artifact.path}: input shape {tuple(batch.shape[1:])} "
                f"does not match the model's {tuple(self.input_shape)}"
            )
        return np.ascontiguousarray(batch)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        """Logits of ``batch`` (C-contiguous, inside ``batch_range``)."""
        raise NotImplementedError

    def precision_report(self) -> PrecisionReport:
        """What actually runs in which precision (backends fill it from their runtime model)."""
        return PrecisionReport(self.artifact.precision, self.artifact.backend)

    def close(self) -> None:
        """Free runtime resources (sessions, engines, device memory); the runner is unusable afterwards.
        Safe to call twice."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend:
    """Base class: subclasses set ``name`` and the attributes below and implement the ``_impl`` hooks. The class
    attributes and the fact methods (``compile_input`` ... ``stand_ins``) are everything the rest of edgeresnext
    knows about a backend: adding one is this subclass and one registry entry."""

    name: str = ""
    display_name: str = ""  # how reports name the runtime ("OpenVINO FP32")
    kinds: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()  # files of this backend's artifacts, by suffix (a path given alone)
    package: str = ""  # the Python package whose version is the runtime's version (and whose absence says why not)
    # Every package whose version changes what this backend builds or measures: the stage cache reruns when one
    # changes, and the report lists them (default: ``package`` alone).
    packages: tuple[str, ...] = ()
    default_device: str = "CPU"
    devices: tuple[str, ...] = ("CPU",)  # device names a bundle's target_device may give this runtime
    options_type: type[RunOptions] = RunOptions
    # What the device step records in the manifest for an artifact built on the device (the artifact's ``engine``
    # section; the manifest's schema composes it in, readers get it typed): a Record type, or None.
    device_record: type[DeviceRecord] | None = None
    # compile() refuses where available() says the runtime is missing, unless the backend writes what the device
    # finishes then (TensorRT's kit)
    compiles_without_runtime: bool = False
    # The float build of this runtime an INT8 artifact's speed-up is measured against (compiled from the FP32 ONNX
    # beside it); None: none of its own (the FP32 ONNX row in ONNX Runtime is the baseline).
    float_baseline: str | None = None
    # The report always says which of INT8 and the float build is faster (a GPU's FP16 engine can beat its INT8
    # one); otherwise only where the deployed artifact is slower.
    always_compare_speed: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.packages and cls.package:
            cls.packages = (cls.package,)

    def run_options(
        self, target: Target | None = None, info: ArtifactInfo | Mapping[str, Any] | None = None, **overrides: Any
    ) -> RunOptions:
        """Plain options for :meth:`load`: from ``target.backend_options.<name>`` (validation), else from an
        artifact's recorded ``info`` (the device runtime); ``overrides`` that are not None win (device=, threads=)."""
        names = {f.name for f in fields(self.options_type)} - {"device"}
        if target is not None:
            section = getattr(target.backend_options, self.name, None)
            dumped = section.model_dump() if section is not None else {}
            values = {f.name: dumped.get(key) for key, f, _meta in target_options(self.options_type)}
        else:
            recorded = info.to_dict() if isinstance(info, ArtifactInfo) else dict(info or {})
            values = {k: v for k, v in recorded.items() if k in self.options_type.recorded()}
        chosen = {k: values[k] for k in names if values.get(k) is not None}
        chosen.update({k: v for k, v in overrides.items() if v is not None})
        return self.options_type(**chosen)

    @classmethod
    def target_problem(cls, target: Target) -> str | None:
        """Why ``target`` cannot be built as it is (checked when any target loads, for every registered backend,
        so a backend can also refuse its own options set on another backend's target); None: nothing."""
        return None

    def compile_input(self, target: Target) -> str:
        """Which ONNX :meth:`compile` reads for ``target``: ``"qdq"`` (the quantize stage's Q/DQ file, for INT8) or
        ``"fp32"`` (the exported FP32 model: a float build, or a backend that quantizes it itself)."""
        return "qdq" if target.precision == "int8" else "fp32"

    def runs_source_as_is(self, artifact: Artifact) -> bool:
        """Whether ``artifact`` is its source ONNX run in ONNX Runtime (validation already runs that row)."""
        return False

    def runtime_version(self, artifact: Artifact) -> str | None:
        """The version of the runtime ``artifact`` was built with (None: this host's :attr:`package`)."""
        return None

    def built_on(self, artifact: Artifact) -> dict[str, Any]:
        """What a bundle's manifest records about the machine the artifact was built for (an engine's GPU)."""
        return {}

    def stand_ins(self, artifact: Artifact) -> list[tuple[str, Artifact]]:
        """``(report name, artifact)`` of what stands in for ``artifact`` on a host that cannot run it: the exact
        files it is built from, run by another backend here (TensorRT: the FP16 Q/DQ ONNX, in ONNX Runtime)."""
        return []

    def exports_deepstream(self, artifact: Artifact) -> bool:
        """Whether the bundle of ``artifact`` carries DeepStream nvinfer configs (``deepstream/``) for an engine the
        device step builds, and so whether validation measures nvinfer's preprocessing for them."""
        return False

    def triton_entry(self, artifact: Artifact) -> TritonEntry | None:
        """How Triton serves ``artifact`` natively (its files and platform); None: Triton has no backend for it (an
        on-device build kit: no engine yet)."""
        return None

    # ---------------------------------------------------------------- builds that finish on the device
    # An artifact the host cannot finish (TensorRT's kit: the engine is built on the Jetson) travels in the bundle as
    # what the device needs, and a device step records what it built in the manifest. These hooks are everything
    # shared code asks about it; the defaults are a backend whose compile finishes on the host.
    kit_file: str | None = None  # the file that makes a folder this backend's on-device build kit (kit.json)

    def awaits_device(self, artifact: Artifact) -> str | None:
        """Why ``artifact`` is not finished until the device builds it (it cannot run or be validated here); None: it
        is complete."""
        return None

    def device_commands(self, artifact: Artifact) -> list[str]:
        """What to run on the device to finish ``artifact`` (its build folder copied there alone)."""
        return []

    def host_outputs_needed(
        self, artifact: Artifact, target: Target, input_chw: tuple[int, ...], num_classes: int, available: int
    ) -> int:
        """How many of the first validation images' host outputs the bundle for the device carries: the validate
        stage keeps their logits (``available``: the images it scores). 0: none."""
        return 0

    def bundle_for_device(
        self, artifact: Artifact, scratch: Path, host: HostOutputs
    ) -> tuple[Artifact, dict[str, Any] | None]:
        """What the bundle carries for the device step: a copy of ``artifact`` in ``scratch`` with what the device
        needs from the host (TensorRT: the check set), and its record for the build summary (None: nothing added)."""
        return artifact, None

    def bundle_folder(self, artifact: Artifact) -> str | None:
        """The name a folder artifact takes in the bundle (the device commands name it); None: its own name."""
        return None

    def device_step_notes(self, artifact: Artifact, bundle: Path | None, record: dict[str, Any] | None) -> list[str]:
        """What the build summary says is left to do on the device for ``artifact``: with ``bundle`` (and the record
        :meth:`bundle_for_device` returned), how to finish it there; without, its :meth:`device_commands`."""
        return [f"on the device: {line}" for line in self.device_commands(artifact)]

    def artifact_from_manifest(self, bundle_dir: Path, entry: Mapping[str, Any]) -> Artifact:
        """The artifact a bundle's manifest entry describes, with what the device step recorded in it."""
        return Artifact(
            backend=entry["backend"],
            precision=entry["precision"],
            kind=entry["kind"],
            path=bundle_dir / entry["path"],
            files=[bundle_dir / name for name in entry["files"]],
            info=ArtifactInfo.from_dict(entry.get("info")),
        )

    def not_loadable_yet(self, bundle_dir: Path, entry: Mapping[str, Any]) -> str | None:
        """Why the manifest ``entry`` cannot be loaded until the device step has run, and what to run; None: it can."""
        return None

    def device_check(self, entry: Mapping[str, Any]) -> dict[str, Any] | None:
        """The device step's check of the manifest ``entry``: a record with ``status`` (``checked``, ``failed`` or
        ``unchecked``), ``reason`` or ``gate.message``, and the figures the report's device row shows; None: the
        artifact was not built on a device."""
        return None

    def bundle_status(self, bundle_dir: Path, entry: Mapping[str, Any]) -> list[str]:
        """What ``bundle verify`` says about the primary ``entry`` beyond its files (built on the device? checked?)."""
        return []

    def device_report(self, bundle_dir: Path, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """For ``edgeresnext report BUNDLE``: ``host_report`` (the bundle path of the host's validation report),
        ``device_engine`` (the device row's name) and ``device_check`` (:meth:`device_check`, or why there is none
        yet); None: the bundle carries no host report of this backend."""
        return None

    def seal_on_device(self, bundle_dir: Path, check: Callable[[Path], None], **options: Any) -> dict[str, Any]:
        """The device step: build here what the bundle's kit describes and record it in the manifest, all or nothing
        (``check``: the sealed copy's last check before it replaces the bundle). Returns the new manifest."""
        raise ConfigError(
            f"{bundle_dir}: its {self.name} artifact is complete; there is nothing to build on the device"
        )

    def device_step_outcome(self, bundle_dir: Path, manifest: Mapping[str, Any]) -> DeviceStepOutcome:
        """What the device step sealed (:meth:`seal_on_device`), as the command says it."""
        return DeviceStepOutcome([], 0)

    def build_kit_here(self, kit: Path) -> list[str]:
        """Build the on-device kit folder ``kit`` (one with :attr:`kit_file`, outside a bundle) here; the lines saying
        what was built."""
        raise ConfigError(f"{kit}: {self.name} has no on-device build kit")

    def kit_with_variant(self, kit: Path, name: str, make: Callable[[Path, Path], Path]) -> tuple[Path, dict[str, Any]]:
        """Have the device step build a variant of the kit's model too (DeepStream's, for :meth:`exports_deepstream`):
        ``make(source, dest)`` writes it from the kit's model into ``kit`` (a private copy) as ``name``. Returns the
        variant's path and the kit's build plan."""
        raise ConfigError(f"{kit}: {self.name} builds no variants on the device")

    def artifact_for_file(self, path: str | Path, precision: str = "") -> Artifact:
        """An artifact for a file given alone (``validate --artifact``): this backend's own kind for its own
        suffixes (``.xml`` -> ir), else an ONNX model it reads."""
        path = Path(path)
        kind = self.kinds[0] if path.suffix in self.suffixes else "onnx"
        return Artifact(backend=self.name, precision=precision, kind=kind, path=path, files=[path])

    def compile_needs_calibration(self, target: Target) -> bool:
        """Whether :meth:`compile` for ``target`` calibrates (reads ``calibration``, the preprocessed images)."""
        return False

    def threads(self, target: Target) -> int | None:
        """The thread count ``target`` asks this runtime for (None: the runtime's default)."""
        return self.run_options(target).threads

    def target_device(self, target: Target | None) -> str:
        """The device a bundle for ``target`` says it runs on (manifest ``device.target_device``)."""
        return self.default_device

    def io_signature(self, artifact: Artifact) -> dict[str, Any]:
        """Input/output names and shapes (-1: dynamic) of ``artifact`` as far as this host can read them; what
        is missing the bundle takes from the model's metadata. ImportError: the reading package is missing."""
        if artifact.kind == "onnx":
            from edgeresnext.onnx_io import onnx_signature

            return onnx_signature(artifact.path)
        # An engine cannot be opened everywhere: the backend may have recorded the names.
        names = {"input_name": artifact.info.input_name, "output_name": artifact.info.output_name}
        return {k: v for k, v in names.items() if isinstance(v, str)}

    def available(self) -> str | None:
        """None if this backend can compile and run here, else the reason it cannot."""
        try:
            importlib.import_module(self.package)
        except ImportError as err:
            return f"{self.package} is not installed ({err}); pip install {self.package}"
        return None

    def compile(
        self, onnx_path: str | Path, target: Target, out_dir: str | Path, calibration: np.ndarray | None = None
    ) -> Artifact:
        """Turn ``onnx_path`` into what ``target`` runs, in ``out_dir``. ``calibration``: the preprocessed images
        (float32 NCHW) a compile that calibrates reads (:meth:`compile_needs_calibration`: OpenVINO's native INT8,
        ONNX Runtime's INT8 form); None for every other compile."""
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise ConfigError(f"{onnx_path}: ONNX model not found")
        from edgeresnext.errors import ExportError
        from edgeresnext.onnx_io import check_external_data

        try:  # before any backend parser reads tensors from wherever the file says
            check_external_data(onnx_path)
        except ExportError as err:
            raise ConfigError(str(err)) from err
        if target.backend != self.name:
            raise ConfigError(
                f"{target.source or target.name}: target backend is {target.backend!r}, not {self.name!r}"
            )
        reason = None if self.compiles_without_runtime else self.available()
        if reason is not None:
            raise BackendUnavailable(reason)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return self._compile_impl(onnx_path, target, out_dir, calibration)

    def load(self, artifact: Artifact, options: RunOptions | Target | None = None) -> Runner:
        """A :class:`Runner` for ``artifact``. ``options``: :class:`RunOptions` (see :meth:`run_options`), a
        Target (validation: its ``backend_options``), or None (the options the artifact recorded)."""
        if artifact.backend != self.name:
            raise ConfigError(f"{artifact.path}: artifact is for {artifact.backend!r}, not {self.name!r}")
        reason = self.available()
        if reason is not None:
            raise BackendUnavailable(f"{self.name} cannot run {artifact.path} here: {reason}")
        if not Path(artifact.path).exists():
            raise ConfigError(f"{artifact.path}: artifact file not found")
        _check_artifact_file(artifact)
        if options is None:
            options = self.run_options(info=artifact.info)
        elif not isinstance(options, RunOptions):
            options = self.run_options(options)
        if not isinstance(options, self.options_type):  # plain RunOptions: this backend's defaults for the rest
            options = self.options_type(**{f.name: getattr(options, f.name) for f in fields(options)})
        if options.device is None:
            options = replace(options, device=self.default_device)
        return self._load_impl(artifact, options)

    def _compile_impl(
        self, onnx_path: Path, target: Target, out_dir: Path, calibration: np.ndarray | None = None
    ) -> Artifact:
        raise NotImplementedError

    def _load_impl(self, artifact: Artifact, options: RunOptions) -> Runner:
        raise NotImplementedError


def _check_artifact_file(artifact: Artifact) -> None:
    """Refuse an empty artifact file before a runtime parses it (ONNX Runtime and OpenVINO answer with texts that
    do not say what is wrong). The full ONNX check (:func:`~edgeresnext.onnx_io.check_onnx_file`) runs where files
    come from users (``runner_from_file``, ``compile``); device apps have no onnx package and load verified bundles."""
    path = Path(artifact.path)
    if path.is_file() and path.stat().st_size == 0:
        raise ConfigError(f"{path}: empty file (0 bytes); expected a {artifact.backend} {artifact.kind} artifact")


def copy_file_atomic(source: str | Path, dest: str | Path) -> Path:
    """Copy ``source`` to ``dest`` through a temporary name (no half-copied artifact on interruption)."""
    import shutil

    from edgeresnext.atomic import atomic_path

    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    return Path(dest)


def _link_or_copy(source: Path, dest: Path) -> None:
    import os
    import shutil

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def copy_artifact_folder(artifact: Artifact, scratch: Path) -> tuple[Path, list[Path]]:
    """The files of a folder artifact (an on-device build kit) linked (or copied) into a fresh ``scratch``, to add to
    without touching the compile stage's: the folder there and its files."""
    import shutil

    from edgeresnext.onnx_io import check_external_data

    source = Path(artifact.path)
    if scratch.exists():
        shutil.rmtree(scratch)
    folder = scratch / source.name
    # onnx refuses to read external data from a file with several hard links (it cannot tell a link to a file
    # elsewhere from the model's own), so an ONNX model's external data file (a kit's model.weights) is copied.
    models = [Path(p) for p in artifact.files if Path(p).suffix == ".onnx" and Path(p).is_file()]
    external = {data for model in models for data in check_external_data(model)}
    files = []
    for path in artifact.files:
        path = Path(path)
        if path == source:
            continue
        copy = folder / path.relative_to(source)
        if path.resolve() in external:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
        else:
            _link_or_copy(path, copy)
        files.append(copy)
    return folder, files


_INSTANCES: dict[str, Backend] = {}


def backend_for_path(path: str | Path) -> str | None:
    """The backend whose artifacts end like ``path`` (``.xml`` -> openvino), or None."""
    suffix = Path(path).suffix
    return next((name for name in list_backends() if suffix in get_backend(name).suffixes), None)


def list_backends() -> list[str]:
    return backend_names()


def kit_backends() -> list[Backend]:
    """The backends whose builds finish on the device (they write a build kit: :attr:`Backend.kit_file`)."""
    return [get_backend(name) for name in list_backends() if get_backend(name).kit_file]


def kit_owner(folder: str | Path) -> Backend | None:
    """The backend whose build kit ``folder`` is (its :attr:`Backend.kit_file` is there), or None."""
    return next((backend for backend in kit_backends() if (Path(folder) / str(backend.kit_file)).is_file()), None)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``, imported on first use."""
    cls = backend_class(name)
    if not isinstance(_INSTANCES.get(name), cls):
        _INSTANCES[name] = cls()
    return _INSTANCES[name]


def backend_facts(name: str) -> Backend | None:
    """The backend registered as ``name``, or None when it is not registered here (a report read on another host)."""
    try:
        return get_backend(name)
    except ConfigError:
        return None


def display_name(backend: str) -> str:
    """How a report names the runtime ``backend`` (its :attr:`Backend.display_name`, else the name itself)."""
    facts = backend_facts(backend)
    return facts.display_name if facts is not None and facts.display_name else backend
