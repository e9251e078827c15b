"""Typed configuration: one :class:`Target` object, entered three ways (YAML, CLI flags, Python).

A target file says what a device needs (backend, precision, shapes, quantization, gates), never how the
code works. Files may ``extends: base.yaml`` (a path relative to the file); mappings merge key by key, the
extending file wins. Unknown keys and wrong types are :class:`~edgeresnext.errors.ConfigError` naming the
file, the key path and what would be accepted. YAML is read with ``yaml.safe_load`` (no object tags).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from edgeresnext.errors import (
    MAX_BATCH,
    MAX_CLASSES,
    MAX_EPOCHS,
    MAX_FALLBACK_LAYERS,
    MAX_IMAGES,
    MAX_LATENCY_MS,
    MAX_LEARNING_RATE,
    MAX_RUNS,
    MAX_SEED,
    MAX_SPEEDUP,
    SHOWN_MAX,
    ConfigError,
    range_text,
    shown,
)
from edgeresnext.registry import backend_class, backend_names, registry_key, target_options

SHIPPED_CHECKPOINT = "shipped:fashion-mnist"
# A target's name is the one folder its build writes under --out: one plain path component, so no name can
# make a build write (or empty stage folders) outside --out.
NAME_MAX = 100
# The targets that ship with edgeresnext: any target file may ``extends:`` one of them (by its path).
SHIPPED_TARGETS = Path(__file__).resolve().parent.parent / "targets"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)
    # Keys renamed since an earlier release, ``old: (new, why)``: a file with the old key is refused naming the new
    # one, never read silently (the old name meant something else, or hid what the value is measured against).
    renamed: ClassVar[dict[str, tuple[str, str]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed_keys(cls, data: Any) -> Any:
        for old, (new, why) in cls.renamed.items():
            if isinstance(data, dict) and old in data:
                raise ValueError(f"has the old key {old}: rename it {new} ({why})")
        return data


class ModelSpec(_Strict):
    """Which FP32 model the build starts from."""

    arch: str | None = Field(None, description="registered arch; None takes it from the checkpoint")
    checkpoint: str = Field(SHIPPED_CHECKPOINT, description="path, or 'shipped:fashion-mnist' for the bundled model")
    num_classes: int | None = Field(None, ge=1, le=MAX_CLASSES)
    in_channels: int | None = Field(None, ge=1, le=4)
    class_names: list[str] | str | None = Field(
        None, description="the model's class names in output order: a list, or a labels file (one per line)"
    )
    preprocess: dict[str, Any] | None = Field(
        None, description="Preprocess keys (channels, resize, crop, mean, std) for a checkpoint without them"
    )


class DataSpec(_Strict):
    """Validation data (and the default source of calibration images)."""

    dataset: str = Field("fashion-mnist", description="'fashion-mnist', 'cifar10' or an image-folder path")
    root: str | None = None
    split: str = "test"
    limit: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGES,
        description="validate on N images only: a class-stratified random sample (seeded by sample_seed)",
    )
    sample_seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="seed of the class-stratified order every sample of the validation set is taken from (data.limit, "
        "validate.stand_in_images, the device check set)",
    )
    on_bad_image: Literal["fail", "skip"] = "fail"


class QuantSpec(_Strict):
    """How the INT8 model is made. ``method: none`` builds FP32/FP16 only."""

    method: Literal["ptq", "qat", "none"] = "ptq"
    calib_dir: str = "calib_data"
    subset_size: int = Field(
        300,
        ge=1,
        le=MAX_IMAGES,
        description="calibration images (images, not batches; PTQ reads them in batches of 10)",
    )
    min_calibration_images: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGES,
        description="fewer usable calibration images than this fails the build (default: warn only)",
    )
    range_estimator: Literal["minmax", "mean_minmax", "percentile", "histogram"] = "minmax"
    per_channel: bool = True
    # Off by default: NNCF's fast bias correction never helped on our models (full test set): on the shipped
    # resnext20 it gives 94.04 % in ONNX Runtime against 94.09 % without (FP32 94.07 %), on the earlier
    # resnext11 it cost 0.6 pt (90.91 % against 91.51 %).
    bias_correction: bool = Field(
        False, description="run NNCF's fast bias correction (true) or no bias correction at all (false)"
    )
    symmetric_activations: bool = True
    placement: Literal["residual", "nncf_default"] = "residual"
    ignored_scope: list[str] = Field(default_factory=list)
    sensitivity: bool = Field(
        False, description="write the per-layer ranking even when the fallback does not need it (sensitivity.json)"
    )
    max_fallback_layers: int = Field(8, ge=0, le=MAX_FALLBACK_LAYERS)
    tune_dir: str | None = Field(
        None, description="labelled images for the fallback's decisions (default: disjoint from the validation set)"
    )
    tune_images: int = Field(5000, ge=1, le=MAX_IMAGES, description="at most this many tuning images")
    qat_epochs: int = Field(2, ge=1, le=MAX_EPOCHS)
    qat_lr: float = Field(1e-3, gt=0, le=MAX_LEARNING_RATE)
    qat_batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    qat_train_limit: int | None = Field(
        None, ge=1, le=MAX_IMAGES, description="QAT on the first N training images only"
    )

    renamed: ClassVar[dict[str, tuple[str, str]]] = {
        # NNCF's option of that name means something else (false: full BiasCorrection)
        "fast_bias_correction": (
            "bias_correction",
            "same meaning: true runs NNCF's fast bias correction, false none",
        )
    }


class BatchRange(_Strict):
    min: int = Field(1, ge=1, le=MAX_BATCH)
    opt: int = Field(1, ge=1, le=MAX_BATCH)
    max: int = Field(1, ge=1, le=MAX_BATCH)

    @model_validator(mode="after")
    def _ordered(self) -> BatchRange:
        if not self.min <= self.opt <= self.max:
            raise ValueError(
                f"batch range must satisfy min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}"
            )
        return self


class InputSpec(_Strict):
    batch: BatchRange = Field(default_factory=BatchRange)
    size: int | None = Field(None, ge=1, le=2048, description="input height=width; None takes the model's")


def _section_model(name: str) -> type[BaseModel]:
    """The pydantic section ``backend_options.<name>``, derived from the fields the backend's options dataclass
    declares with :func:`~edgeresnext.registry.option` (types, defaults, bounds, descriptions)."""
    import typing

    options_type = backend_class(name).options_type
    hints = typing.get_type_hints(options_type)
    fields: dict[str, Any] = {}
    for key, item, meta in target_options(options_type):
        bounds = {k: v for k, v in (("ge", meta.ge), ("le", meta.le), ("gt", meta.gt)) if v is not None}
        fields[key] = (hints[item.name], Field(item.default, description=meta.description or None, **bounds))
    return create_model(f"{options_type.__name__}Section", __base__=_Strict, **fields)


@functools.cache
def _backend_options_model(registered: tuple[tuple[str, str], ...]) -> type[BaseModel]:
    sections = {name: _section_model(name) for name, _spec in registered}
    fields = {name: (model, Field(default_factory=model)) for name, model in sections.items()}
    return create_model("BackendOptions", __base__=_Strict, **fields)


def backend_options_model() -> type[BaseModel]:
    """``backend_options``: one section per registered backend (:mod:`edgeresnext.registry`), built on first use
    and again when a backend is registered."""
    return _backend_options_model(registry_key())


class Gates(_Strict):
    """Build fails when any set gate is not met. Drops and agreement are fractions (0.003 = 0.3 %).

    ``confidence``: ``max_top1_drop`` and ``min_agreement`` are decided on the one-sided bound at this level
    (the drop's upper bound, the agreement's lower bound, from the paired per-image outcomes), not on the
    measured value; ``null`` decides on the measured value alone (no statistical proof). ``unproven``: what a set
    too small to prove such a gate at all does (121 images cannot prove a 0.3 pt drop): ``warn`` decides on the
    measured value and says NOT PROVEN, ``fail`` fails the gate.
    """

    max_top1_drop: float | None = Field(None, ge=0, le=1)
    min_agreement: float | None = Field(None, ge=0, le=1)
    max_latency_ms: float | None = Field(None, gt=0, le=MAX_LATENCY_MS)
    min_speedup: float | None = Field(None, gt=0, le=MAX_SPEEDUP)
    confidence: float | None = Field(0.95, gt=0.5, lt=1, description="level of the bound the accuracy gates use")
    unproven: Literal["warn", "fail"] = Field(
        "warn",
        description="a bound that does not pass on a validation set too small for even an artifact equal to FP32 "
        "to pass it: "
        "warn (the gate reads NOT PROVEN, decided on the measured value, exit 0) or fail",
    )

    renamed: ClassVar[dict[str, tuple[str, str]]] = {
        "min_speedup_vs_fp32": ("min_speedup", "measured against the same runtime's float build: FP32, or FP16"),
        "max_device_disagreement": (
            "backend_options.tensorrt.max_device_disagreement",
            "the device check of a TensorRT on-device kit is that backend's setting",
        ),
    }


class ValidateSpec(_Strict):
    renamed: ClassVar[dict[str, tuple[str, str]]] = {
        key: (
            f"backend_options.tensorrt.{key}",
            "the device check of a TensorRT on-device kit is that backend's setting",
        )
        for key in ("device_check_images", "device_check_megabytes")
    }
    latency_runs: int = Field(50, ge=1, le=MAX_RUNS)
    warmup_runs: int = Field(10, ge=0, le=MAX_RUNS)
    stand_in_images: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGES,
        description="validate the host stand-ins of an artifact that cannot run here (the TensorRT kit's ONNX Runtime "
        "FP16 variant) on the first N validation images only; their intervals say how many (null: all)",
    )


class Target(_Strict):
    """One deployment target: ``targets/<name>.yaml``."""

    name: str
    description: str = ""
    backend: str = Field(description="a registered backend (edgeresnext.registry)")
    precision: Literal["int8", "fp16", "fp32"] = "int8"
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    quant: QuantSpec = Field(default_factory=QuantSpec)
    input: InputSpec = Field(default_factory=InputSpec)
    # One section per registered backend: its type is built from the registry (see backend_options_model).
    backend_options: Any = Field(default_factory=lambda: backend_options_model()())
    gates: Gates = Field(default_factory=Gates)
    validate_: ValidateSpec = Field(default_factory=ValidateSpec, alias="validate")
    source: str | None = Field(None, exclude=True, description="file the target was read from")

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, name: str) -> str:
        problem = name_problem(name)
        if problem:
            raise ValueError(problem)
        return name

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, backend: str) -> str:
        names = backend_names()
        if backend not in names:
            raise ValueError(f"must be one of {', '.join(repr(n) for n in names)}")
        return backend

    @field_validator("backend_options", mode="before")
    @classmethod
    def _backend_sections(cls, value: Any) -> Any:
        model = backend_options_model()
        return value if isinstance(value, model) else model.model_validate(value)

    @model_validator(mode="after")
    def _combinations(self) -> Target:
        if self.precision == "int8" and self.quant.method == "none":
            raise ValueError("precision 'int8' needs quant.method 'ptq' or 'qat', not 'none'")
        # What each backend refuses (TensorRT: asymmetric INT8, DLA with a batch range; OpenVINO: fp16).
        for name in backend_names():
            problem = backend_class(name).target_problem(self)
            if problem:
                raise ValueError(problem)
        return self

    def resolved(self) -> dict[str, Any]:
        """The full config as plain data (saved beside every run's outputs)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"source"})


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a build folder's name (None: it can): it must be one plain folder name."""
    accepted = f"one plain folder name (1-{NAME_MAX} characters, no '/', '\\' or control characters, not '.' or '..')"
    if not name or name.strip() != name:
        return f"must be {accepted}; empty or surrounded by spaces"
    if len(name) > NAME_MAX:
        return f"must be {accepted}; {len(name)} characters"
    if name in (".", "..") or "/" in name or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"must be {accepted}"
    return None


def build_folder(out_root: str | os.PathLike[str], name: str) -> Path:
    """``<out_root>/<name>``: the one folder a build of target ``name`` writes in, checked to lie inside ``out_root``.

    Every command that reads or writes a build folder computes it here. The name must be one plain folder name
    (see :func:`name_problem`), and the folder may not be a symbolic link: a link would send stage folders (which
    a rerun empties) somewhere else.
    """
    problem = name_problem(name)
    if problem:
        raise ConfigError(f"target name {shown(name)} {problem}")
    out = Path(out_root)
    folder = out / name
    if folder.is_symlink():
        raise ConfigError(
            f"{folder}: a symbolic link; a build folder must be a real folder inside {out} (remove the link)"
        )
    if folder.resolve().parent != out.resolve():
        raise ConfigError(f"{folder}: resolves outside {out}; a build folder must lie directly inside --out")
    return folder


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# A target file is a few kilobytes; these bounds keep a hostile one from hanging the CLI or eating memory.
TARGET_FILE_MAX_BYTES = 4 << 20
# Aliases may repeat at most this many values beyond the document's own (a billion-laughs file repeats 10^9).
ALIAS_EXPANSION_MAX = 10_000


def _expanded_size(root: Any, path: Path) -> int:
    """How many values the YAML node tree ``root`` holds once every alias is expanded (linear in its distinct nodes).

    An alias is a second reference to one node, so a node's size is counted once and reused (memoised); a node
    that contains itself is an error (its expansion never ends).
    """
    import yaml

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(f"{path}: a YAML alias refers to a value that contains it (an endless expansion)")
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root)


def _distinct_nodes(root: Any) -> int:
    import yaml

    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
    return len(seen)


def _refuse_repeated_keys(root: Any, path: Path) -> None:
    """A key written twice in one mapping is a :class:`ConfigError` naming it and both lines: YAML keeps the last one
    silently (``backend: onnxruntime`` ... ``backend: tensorrt`` builds for TensorRT without a word)."""
    import yaml

    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, prefix = stack.pop()
        if id(node) in seen:  # an alias: the node it names is checked once
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, prefix) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                name = f"{prefix}.{key.value}" if prefix else str(key.value)
                if isinstance(key, yaml.ScalarNode):
                    line = key.start_mark.line + 1
                    if (key.tag, key.value) in first:
                        raise ConfigError(
                            f"{path}: line {line}: key {shown(name)} is written twice (first on line "
                            f"{first[key.tag, key.value]}); YAML would keep the last one without a word: remove one"
                        )
                    first[key.tag, key.value] = line
                stack.append((value, name if isinstance(key, yaml.ScalarNode) else prefix))


def read_small_text(path: Path, limit: int, kind: str, expected: str) -> str:
    """The UTF-8 text of ``path``, a regular file of at most ``limit`` bytes (a target or labels file). Anything else
    is a :class:`ConfigError` naming the file, what it is instead (``kind``: "target file") and what is
    ``expected``; the file's content is never quoted, and a device or pipe is never read."""
    import stat

    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{path}: a folder, not a {kind}; {expected}")
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: not a regular file (a device, pipe or socket), not a {kind}; {expected}")
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such {kind}; {expected}") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the {kind} ({err.strerror or err})") from err
    if len(raw) > limit:
        raise ConfigError(f"{path}: larger than {limit >> 20} MiB, not a {kind}; {expected}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}), not a {kind}; {expected}") from err


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``: safe tags only, at most :data:`TARGET_FILE_MAX_BYTES`, and aliases that expand
    to at most :data:`ALIAS_EXPANSION_MAX` values beyond the file's own."""
    import yaml

    text = read_small_text(path, TARGET_FILE_MAX_BYTES, "target file", "a target file is a few kilobytes of UTF-8 YAML")
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader already refuses some characters
        node = loader.get_single_node()
        if node is not None:
            expanded, distinct = _expanded_size(node, path), _distinct_nodes(node)
            if expanded - distinct > ALIAS_EXPANSION_MAX:
                raise ConfigError(
                    f"{path}: YAML aliases expand to {expanded} values ({distinct} written); at most "
                    f"{ALIAS_EXPANSION_MAX} repeated values are accepted"
                )
            _refuse_repeated_keys(node, path)
        try:
            data = loader.construct_document(node) if node is not None else None
        except (ValueError, OverflowError, IndexError, TypeError, AttributeError, KeyError) as err:
            # PyYAML building a value it read as a date or number (2020-13-45, 5000 digits, an empty `!!int`, a
            # `!!timestamp` that is no date) fails with Python's own errors, not YAMLError.
            reason = (str(err).split(":")[0].split(";")[0] or type(err).__name__)[:120]
            raise ConfigError(
                f"{path}: a value YAML reads as a date or number cannot be built ({reason}); quote it to make it a "
                "string"
            ) from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    except RecursionError as err:  # PyYAML's parser recurses once per nesting level
        raise ConfigError(f"{path}: nested too deeply to be a target file") from err
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a target file must be a mapping of keys, got {type(data).__name__}")
    return data


def _in_folder(path: Path, key: str, value: str, rule: str) -> Path:
    """``value`` (relative to ``path``'s folder, or absolute) resolved, links followed, checked to lie in it."""
    folder = path.parent.resolve()
    try:
        candidate = (folder / value).resolve()
    except (OSError, ValueError, RuntimeError) as err:  # a NUL byte, a link loop
        raise ConfigError(f"{path}: {key} {shown(value)} is not a usable path ({err})") from err
    if not candidate.is_relative_to(folder):
        raise ConfigError(f"{path}: {key} {shown(value)} lies outside the target file's folder {folder}; {rule}")
    return candidate


def _anchor_paths(data: dict[str, Any], path: Path) -> None:
    """A labels file named in a target file is read from that file's own folder (relative paths resolve from there);
    one outside it, or a link leading out, is refused. ``--labels`` on the command line may name any file."""
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("class_names"), str):
        rule = "a labels file named in a target file must be in its folder (--labels FILE may name any file)"
        model["class_names"] = str(_in_folder(path, "model.class_names", model["class_names"], rule))
    # The two caches a backend writes (and rereads) stay below the working folder: a target file cannot point them
    # at a file elsewhere to have it overwritten.
    options = data.get("backend_options")
    for backend, key in _path_options(options):
        section = options.get(backend) if isinstance(options, dict) else None
        value = section.get(key) if isinstance(section, dict) else None
        if isinstance(value, str) and (Path(value).is_absolute() or ".." in Path(value).parts or "\x00" in value):
            raise ConfigError(
                f"{path}: backend_options.{backend}.{key} {shown(value)} must be a relative path without '..' "
                "(a cache the build writes below the working folder)"
            )


def _path_options(options: Any) -> list[tuple[str, str]]:
    """``(backend, key)`` of each path option (``option(path=True)``) of the backends ``options`` has sections for."""
    if not isinstance(options, dict):
        return []
    found = []
    for backend in (name for name in backend_names() if name in options):
        declared = target_options(backend_class(backend).options_type)
        found += [(backend, key) for key, _field, meta in declared if meta.path]
    return found


def _resolve_extends(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself via {' -> '.join(str(p) for p in seen)}")
    data = read_yaml(path)
    _anchor_paths(data, path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: key 'extends' must be a file path string, got {type(parent).__name__}")
    return _deep_merge(_resolve_extends(_extended_file(path, parent), (*seen, path)), data)


def _extended_file(path: Path, parent: str) -> Path:
    """What ``extends: parent`` in ``path`` names: a file in ``path``'s own folder, or one of the shipped targets."""
    try:
        candidate = (path.parent / parent).resolve()
    except (OSError, ValueError, RuntimeError) as err:
        raise ConfigError(f"{path}: extends {shown(parent)} is not a usable path ({err})") from err
    if candidate.is_relative_to(path.parent.resolve()) or candidate.is_relative_to(SHIPPED_TARGETS.resolve()):
        try:
            is_folder = candidate.is_dir()
            candidate.stat()
        except FileNotFoundError as err:
            raise ConfigError(f"{path}: extends {shown(parent)}: {candidate}: no such target file") from err
        except OSError as err:  # a name too long, a permission
            raise ConfigError(f"{path}: extends {shown(parent)} cannot be read ({err.strerror or err})") from err
        if is_folder:
            raise ConfigError(f"{path}: extends {shown(parent)} is a folder ({candidate}), not a target file")
        return candidate
    raise ConfigError(
        f"{path}: extends {shown(parent)} lies outside the target file's folder {path.parent}; a target may extend "
        f"a file in its own folder or a shipped target ({SHIPPED_TARGETS})"
    )


def _explain(error: dict[str, Any]) -> str:
    """A pydantic error as what would be accepted: ``must be >= 1``, ``must be one of ptq, qat, none``."""
    kind, ctx = error["type"], error.get("ctx") or {}
    bounds = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    for name, symbol in bounds.items():
        if kind == name:
            return f"must be {symbol} {next(iter(ctx.values()))}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '').replace(' or ', ', ')}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be an integer"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind in ("string_type",):
        return "must be a string"
    return str(error["msg"]).removeprefix("Value error, ")


def _format_validation_error(err: ValidationError, source: str, flags: dict[str, str] | None = None) -> str:
    """One line naming where the bad value came from: the command-line flag that set it, else the file and key."""
    first = err.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    kind = first["type"]
    value = first.get("input")
    got = f", got {shown(value)}" if value is not None and not isinstance(value, dict) else ""
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        got += _accepted_range(first["loc"])
    flag = (flags or {}).get(location)
    if flag is not None:
        return f"{flag} {_explain(first)}{got}"
    if len(location) > SHOWN_MAX:  # a key is the user's text too
        location = location[: SHOWN_MAX - 3] + "..."
    if kind == "extra_forbidden":
        parent = first["loc"][:-1]
        accepted = _accepted_keys(parent)
        hint = f"; accepted keys here: {', '.join(accepted)}" if accepted else ""
        return f"{source}: unknown key {location!r}{hint}"
    if kind == "missing":
        return f"{source}: missing required key {location!r}"
    return f"{source}: {location} {_explain(first)}{got}"


def _accepted_range(loc: tuple[Any, ...]) -> str:
    """`` (accepted: 1 to 1,000,000)`` for a bounded number at ``loc`` ("" when the key has no two bounds)."""
    from annotated_types import Ge, Gt, Le, Lt

    *parents, name = loc
    fields = _fields_at(tuple(parents))
    field = fields.get(str(name)) if fields else None
    if field is None:
        return ""
    low = next((m for m in field.metadata if isinstance(m, Ge | Gt)), None)
    high = next((m for m in field.metadata if isinstance(m, Le | Lt)), None)
    if low is None or high is None:
        return ""
    low_value = low.ge if isinstance(low, Ge) else low.gt
    high_value = high.le if isinstance(high, Le) else high.lt
    if isinstance(low, Ge) and isinstance(high, Le):
        return f" (accepted: {range_text(low_value, high_value)})"
    below, above = ">=" if isinstance(low, Ge) else ">", "<=" if isinstance(high, Le) else "<"
    return f" (accepted: {below} {low_value:g} and {above} {high_value:g})"


def _fields_at(loc: tuple[Any, ...]) -> dict[str, Any] | None:
    """The pydantic fields (by key, aliases included) of the section at ``loc`` in a target (None: not a section)."""
    model: type[BaseModel] = Target
    for part in loc:
        field = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        annotation = getattr(field, "annotation", None)
        if model is Target and part == "backend_options":
            annotation = backend_options_model()
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return {f.alias or name: f for name, f in model.model_fields.items() if name != "source"}


def _accepted_keys(loc: tuple[Any, ...]) -> list[str]:
    return sorted(_fields_at(loc) or {})


def target_from_dict(data: dict[str, Any], source: str = "<config>", flags: dict[str, str] | None = None) -> Target:
    """Validate plain data into a :class:`Target`; ``flags`` maps dotted keys set on the command line to their
    flag, so an error in such a value names the flag (``--limit must be >= 1, got 0``), not the file."""
    try:
        target = Target.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source, flags)) from err
    target.source = source
    return target


def read_target_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A target file as plain data, ``extends`` resolved and ``name`` defaulting to the file's stem."""
    path = Path(path)
    data = _resolve_extends(path)
    data.setdefault("name", path.stem)
    return data


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """Set dotted keys (``quant.subset_size``) in ``data``, in place; ``None`` values are left out."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        cursor = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
            if not isinstance(cursor, dict):
                raise ConfigError(f"{source}: cannot override {dotted!r}: {part!r} is not a mapping")
        cursor[parts[-1]] = value
    return data


def load_target(
    path: str | os.PathLike[str], overrides: dict[str, Any] | None = None, flags: dict[str, str] | None = None
) -> Target:
    """Read ``targets/<name>.yaml`` (following ``extends``), apply dotted-key ``overrides``, validate.

    ``flags`` names the command-line flag behind each override (see :func:`target_from_dict`).
    """
    data = read_target_file(path)
    apply_overrides(data, overrides or {}, str(path))
    return target_from_dict(data, str(path), flags)


def find_target(name_or_path: str, targets_dir: str | os.PathLike[str] = "targets") -> Path:
    """``cpu`` or ``targets/cpu.yaml`` to the file path; an unknown name lists the known ones."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not _is_file(candidate):
            raise ConfigError(f"--target {shown(name_or_path)}: no such target file")
        return candidate
    path = Path(targets_dir) / f"{name_or_path}.yaml"
    if _is_file(path):
        return path
    known = sorted(p.stem for p in Path(targets_dir).glob("*.yaml") if not p.stem.startswith("_"))
    raise ConfigError(
        f"unknown target {shown(name_or_path)}; expected one of: {', '.join(known) or '(none found)'} in "
        f"{targets_dir}/, or the path of a .yaml file"
    )


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; a name too long for the file system, a link loop or a permission is "no"."""
    try:
        return path.is_file()
    except OSError:
        return False


@dataclass
class TrainConfig:
    """One training run. Defaults reproduce the shipped Fashion-MNIST model."""

    arch: str = "resnext20_4x8d"
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    out_dir: str = "runs/fashion-mnist"
    epochs: int = 24
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = True
    seed: int = 0
    threads: int | None = None
    resume: bool = True
    progress: bool = True
    limit_train: int | None = None
    limit_test: int | None = None
    stop_after: int | None = None  # end this run after that epoch; the schedule still spans `epochs` (resume later)
    recipe: str | None = None
    # Distributed runs (torchrun/DDP): batch_size above is the global batch, split evenly over the processes.
    sync_bn: bool = False
    workers: int | None = None  # DataLoader worker processes for image folders (default: up to 4)
    device: str | None = None  # cpu | cuda | None (cuda when torch sees a GPU)
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}={getattr(self, key)}; expected an integer >= 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr}; expected a positive number")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing={self.label_smoothing}; expected 0 <= value < 1")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"train.workers={self.workers}; expected an integer >= 0 (0: load in the main process)")
        if self.device not in (None, "cpu", "cuda"):
            raise ConfigError(f"train.device={self.device!r}; expected cpu or cuda")
