"""The backend registry: ``name -> "module:Class"``, each backend imported by name on first use.

This is the plugin mechanism, and the one list of backends: the target schema (``config``), the manifest schema's
backend names, the package versions a stage cache keys on and the backend a runtime loads are all read from the
registered classes. It sits in the bottom layer (standard library only) so that ``config`` and ``environment`` can
ask it without importing a backend module statically; openvino and tensorrt stay optional because a backend module
imports its runtime only inside its functions.

Three ways to register a backend, all the same entry: a line in :data:`BACKENDS` (the shipped ones),
:func:`register_backend` (a program or a test), or the environment variable :data:`PLUGIN_ENV`
(``name=module:Class``, comma-separated; a command run in another process).

A backend's options are one stdlib dataclass (its ``options_type``, the device runtime has no pydantic); the fields
that are target keys are declared with :func:`option`, whose metadata ``config`` turns into the pydantic section
``backend_options.<name>``.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any

from edgeresnext.errors import ConfigError

BACKENDS: dict[str, str] = {
    "onnxruntime": "edgeresnext.backends.onnxruntime:ONNXRuntimeBackend",
    "openvino": "edgeresnext.backends.openvino:OpenVINOBackend",
    "tensorrt": "edgeresnext.backends.tensorrt:TensorRTBackend",
}
_SHIPPED = frozenset(BACKENDS)
# More backends for a command run in another process: "name=module:Class[,name=module:Class...]".
PLUGIN_ENV = "EDGERESNEXT_BACKENDS"
OPTION = "edgeresnext.option"  # the dataclass field metadata key :func:`option` sets

_CLASSES: dict[str, type] = {}


def register_backend(name: str, spec: str) -> None:
    """Register the backend class ``spec`` (``"module:Class"``) as ``name``; it is imported on first use."""
    module, colon, attr = spec.partition(":")
    if not name or not colon or not module or not attr:
        raise ConfigError(f"backend {name!r}: {spec!r} is not 'module:Class'")
    if BACKENDS.get(name) != spec:
        _CLASSES.pop(name, None)
    BACKENDS[name] = spec


def _registered() -> dict[str, str]:
    """The shipped and registered backends, plus those :data:`PLUGIN_ENV` names."""
    entries = dict(BACKENDS)
    for item in filter(None, (part.strip() for part in os.environ.get(PLUGIN_ENV, "").split(","))):
        name, equals, spec = item.partition("=")
        if not equals or ":" not in spec:
            raise ConfigError(f"{PLUGIN_ENV}: {item!r} is not name=module:Class")
        entries[name.strip()] = spec.strip()
    return entries


def backend_names() -> list[str]:
    """Every registered backend's name, sorted."""
    return sorted(_registered())


def registry_key() -> tuple[tuple[str, str], ...]:
    """What is registered now, as a hashable value (derived schemas are cached on it)."""
    return tuple(sorted(_registered().items()))


def backend_class(name: str) -> type:
    """The class registered as ``name``, imported on first use (a ConfigError names the registered ones)."""
    entries = _registered()
    if name not in entries:
        raise ConfigError(f"unknown backend {name!r}; expected one of: {', '.join(sorted(entries))}")
    if name not in _CLASSES:
        module_name, _, class_name = entries[name].partition(":")
        try:
            _CLASSES[name] = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:  # a plugin entry naming a module or class that is not there
            where = f"{PLUGIN_ENV} or register_backend" if name not in _SHIPPED else "edgeresnext.registry.BACKENDS"
            raise ConfigError(f"backend {name!r} ({entries[name]}, from {where}) cannot be imported: {err}") from err
    return _CLASSES[name]


@dataclasses.dataclass(frozen=True)
class Option:
    """What makes a backend options field a target key (``backend_options.<backend>.<key>``)."""

    description: str = ""
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    key: str | None = None  # the key in a target file when it differs from the field's name
    recorded: bool = False  # carried in the artifact's info to another host (the device runtime runs with it)
    path: bool = False  # a path the build writes: must stay below the working folder


def option(
    default: Any = None,
    *,
    description: str = "",
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    key: str | None = None,
    recorded: bool = False,
    path: bool = False,
) -> Any:
    """A dataclass field that is also a target key, with the checks ``config`` applies to it."""
    meta = Option(description=description, ge=ge, le=le, gt=gt, key=key, recorded=recorded, path=path)
    return dataclasses.field(default=default, metadata={OPTION: meta})


def target_options(options_type: type) -> list[tuple[str, dataclasses.Field, Option]]:
    """``(target key, field, Option)`` for each field of ``options_type`` declared with :func:`option`."""
    found = []
    for item in dataclasses.fields(options_type):
        meta = item.metadata.get(OPTION)
        if meta is not None:
            found.append((meta.key or item.name, item, meta))
    return found
