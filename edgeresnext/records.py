"""Typed JSON records: standard-library dataclasses that read and write a JSON object key for key, and generate the
JSON Schema of that object.

The bundle manifest is one (:mod:`edgeresnext.bundle.model`), and a backend's section of it another (TensorRT's
engine record, :mod:`edgeresnext.backends.tensorrt.record`). The type is the one source: the schema a bundle is
checked against is generated from it, and the objects readers get are its instances. Only the standard library:
device runtimes read manifests without pydantic.

A field's name is its JSON key; its type says the JSON type (``str``, ``int``, ``float``, ``bool``, ``list[...]``,
``dict[str, Any]``, a ``Literal`` for an enum, another :class:`Record` for a nested object); a field without a
default is a required key. :func:`key` adds what a type cannot say (a description, a pattern, a minimum, item
counts, whether ``null`` is allowed and written). Keys a record does not know are kept in :attr:`Record.extra` and
written back after the known ones, so reading and writing an object changes nothing; a record whose ``CLOSED`` is
true refuses them in its schema (``additionalProperties: false``).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union

R = TypeVar("R", bound="Record")

_SCHEMA_KEYS = {  # key() argument -> JSON Schema keyword
    "pattern": "pattern",
    "minimum": "minimum",
    "min_items": "minItems",
    "max_items": "maxItems",
    "x_enum": "x-enum",
    "description": "description",
}


def key(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    description: str | None = None,
    pattern: str | None = None,
    minimum: int | float | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
    x_enum: str | None = None,
    nullable: bool = False,
    write_none: bool | None = None,
) -> Any:
    """A record's field with what its JSON Schema says beyond the type. ``nullable``: ``null`` is a valid value;
    ``write_none`` (default: ``nullable``): a None value is written as ``null`` rather than left out.
    ``x_enum``: the schema's ``"x-enum"`` marker, filled in from the backend registry when the schema is loaded."""
    given = {
        "pattern": pattern,
        "minimum": minimum,
        "min_items": min_items,
        "max_items": max_items,
        "x_enum": x_enum,
        "description": description,
    }
    schema = {_SCHEMA_KEYS[name]: value for name, value in given.items() if value is not None}
    metadata = {"schema": schema, "nullable": nullable, "write_none": nullable if write_none is None else write_none}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@dataclasses.dataclass(kw_only=True)
class Record:
    """A JSON object as a dataclass (see the module's docstring). ``extra``: the keys this type does not know."""

    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, metadata={"extra": True})

    CLOSED: ClassVar[bool] = False  # True: unknown keys are refused by the schema (additionalProperties: false)
    DESCRIPTION: ClassVar[str | None] = None  # the object's description in the schema

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record of a JSON object that passed this type's schema (values are not checked again here)."""
        hints = _hints(cls)
        fields = _fields(cls)
        values = {f.name: read_value(hints[f.name], data[f.name]) for f in fields if f.name in data}
        known = {f.name for f in fields}
        record = cls(**values, extra={name: value for name, value in data.items() if name not in known})
        record._order = list(data)  # written back in the order it was read
        return record

    def to_json(self) -> dict[str, Any]:
        """The JSON object. A record that was read is written as it was read (its keys' order, null where it was null,
        absent where absent); a new one has its known keys in field order (None left out unless the field writes
        null), then the unknown ones."""
        fields = {f.name: f for f in _fields(type(self))}
        read = getattr(self, "_order", None)  # the keys it was read with: null where it was null, absent where absent
        out: dict[str, Any] = {}
        for name in [*(read or ()), *fields, *self.extra]:
            if name in out:
                continue
            if name in fields:
                value = getattr(self, name)
                null = name in read if read is not None else fields[name].metadata.get("write_none", False)
                if value is not None or null:
                    out[name] = write_value(value)
            elif name in self.extra:
                out[name] = write_value(self.extra[name])
        return out


@dataclasses.dataclass(kw_only=True)
class DeviceRecord(Record):
    """What a backend's device step records for an artifact it built on the device (a backend's ``device_record``
    subclasses it; a backend without one leaves the section as read)."""

    def sources(self) -> list[tuple[str, str, str | None]]:
        """The bundle files the record names, each as (what it is, bundle path, its recorded sha256 or None): a bundle
        verifies only when each is listed with that sha256."""
        return []


@functools.cache
def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("extra"))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007 - a runtime-built union
    return hint


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Record)


def read_value(hint: Any, value: Any) -> Any:
    """A JSON value as ``hint`` types it: nested records become :class:`Record` instances."""
    hint = _without_none(hint)
    if value is None:
        return None
    if _is_record(hint) and isinstance(value, Mapping):
        return hint.from_json(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args and isinstance(value, list):
        return [read_value(args[0], item) for item in value]
    if origin is dict and len(args) == 2 and _is_record(args[1]) and isinstance(value, Mapping):
        return {name: read_value(args[1], item) for name, item in value.items()}
    return value


def write_value(value: Any) -> Any:
    """A value of a record as JSON data."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list | tuple):
        return [write_value(item) for item in value]
    if isinstance(value, dict):
        return {name: write_value(item) for name, item in value.items()}
    return value


_JSON_TYPES: list[tuple[type, str]] = [(bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")]


def _type_schema(hint: Any) -> dict[str, Any]:
    """The type part of a value's schema."""
    if _is_record(hint):
        return json_schema(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        kind = next(name for python, name in _JSON_TYPES if isinstance(args[0], python))
        return {"type": kind, "enum": list(args)}
    if origin is list or hint is list:
        items = _type_schema(args[0]) if args else {}
        return {"type": "array", **({"items": items} if items else {})}
    if origin is dict or hint is dict:
        return {"type": "object"}
    for python, name in _JSON_TYPES:
        if hint is python:
            return {"type": name}
    return {}  # Any: no constraint


def _property_schema(hint: Any, field: dataclasses.Field) -> dict[str, Any]:
    schema = _type_schema(_without_none(hint))
    if field.metadata.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    for keyword, value in field.metadata.get("schema", {}).items():
        if keyword == "description" and _is_record(_without_none(hint)):
            schema = {"type": schema.pop("type"), "description": value, **schema}
        else:
            schema[keyword] = value
    return schema


def json_schema(cls: type[Record]) -> dict[str, Any]:
    """The JSON Schema of a record type: its keys' types and constraints, its required keys (the fields without a
    default), and ``additionalProperties: false`` when it is ``CLOSED``."""
    hints = _hints(cls)
    fields = _fields(cls)
    schema: dict[str, Any] = {"type": "object"}
    if cls.DESCRIPTION:
        schema["description"] = cls.DESCRIPTION
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        schema["required"] = required
    if cls.CLOSED:
        schema["additionalProperties"] = False
    schema["properties"] = {f.name: _property_schema(hints[f.name], f) for f in fields}
    return schema
