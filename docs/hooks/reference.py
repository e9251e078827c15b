"""MkDocs hook: the reference pages, generated at build time and never committed.

- ``reference/cli.md``: every command's ``--help``, from the argparse parsers (``edgeresnext.cli.make_parser``);
- ``reference/target.md``: every key of a target file, from the pydantic models of ``edgeresnext.config``
  (the ``backend_options`` sections come from the registered backends' options, as the loader builds them);
- ``reference/api.md``: the device runtime's Python API, rendered by mkdocstrings from the docstrings.
"""

from __future__ import annotations

import argparse
import os
import re
import types
import typing
from typing import Any

from mkdocs.structure.files import File, Files

HELP_WIDTH = "100"  # argparse wraps at $COLUMNS: a fixed width makes the page the same on every machine


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    pages = [(words, parser.format_help())]
    for name, sub in _subcommands(parser).items():
        pages += _walk(sub, (*words, name))
    return pages


def cli_markdown() -> str:
    from edgeresnext.cli import make_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        helps = _walk(make_parser(), ("edgeresnext",))
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    lines = [
        "# Command line reference",
        "",
        "Generated from the parsers (`edgeresnext.cli.make_parser()`) when the site is built: each command's",
        "`--help`, as the command prints it.",
        "",
    ]
    for words, text in helps:
        lines += [f"## `{' '.join(words)}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(lines)


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a).replace("'", "") for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def _yaml(value: Any) -> str:
    """A default as a target file writes it."""
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return "(its keys below)" if isinstance(field.annotation, type) else "`[]`"
    if field.default is PydanticUndefined:
        return "required"
    return _yaml(field.default)


def _bounds(field: Any) -> str:
    """``>= 1``, ``> 0, < 1``: the limits pydantic checks."""
    said = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                said.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(said)


def _sections(model: type, prefix: str) -> list[tuple[str, type]]:
    from pydantic import BaseModel

    found = [(prefix, model)]
    for name, field in model.model_fields.items():
        key = field.alias or name
        sub = field.annotation
        if key == "backend_options":
            from edgeresnext.config import backend_options_model

            sub = backend_options_model()
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            found += _sections(sub, f"{prefix}.{key}" if prefix else key)
    return found


def target_markdown() -> str:
    from pydantic import BaseModel

    from edgeresnext.config import Target

    lines = [
        "# Target file reference",
        "",
        "Generated from the pydantic models of `edgeresnext.config` when the site is built. Every key a target",
        "file accepts; any other key is an error naming the file and the key. `backend_options` has one section per",
        "registered backend, derived from the backend's own options.",
        "",
    ]
    for prefix, model in _sections(Target, ""):
        title = f"`{prefix}`" if prefix else "top level"
        doc = (model.__doc__ or "").strip() if model.__doc__ != BaseModel.__doc__ else ""
        lines += [f"## {title}", ""]
        if doc and not doc.startswith("Usage docs") and "!!! abstract" not in doc:
            lines += [" ".join(doc.split()), ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            key = field.alias or name
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            bounds = _bounds(field)
            type_name = "section" if _default(field) == "(its keys below)" else _type_name(field.annotation)
            if bounds:
                type_name += f" ({bounds})"
            lines.append(f"| `{key}` | {type_name} | {_default(field)} | {description} |")
        lines.append("")
    return "\n".join(lines)


API_PAGE = """# Python API reference

Generated from the docstrings when the site is built (mkdocstrings).

## The device runtime: `edgeresnext.runtime`

What a device app imports (numpy, Pillow and the bundle's runtime; no torch, nncf or pydantic).
See [Bundles and device apps](../bundles.md).

::: edgeresnext.runtime.load_bundle

::: edgeresnext.runtime.Classifier

::: edgeresnext.runtime.Prediction

## The manifest: `edgeresnext.bundle.model`

`manifest.json`, typed: what `Classifier.manifest` holds and `edgeresnext.bundle.verify_bundle` returns. The JSON
Schema, `edgeresnext/schemas/manifest.schema.json`, is generated from these classes (`make schema`). An artifact's
`engine` section is its backend's record: for TensorRT, `edgeresnext.backends.tensorrt.record.EngineRecord`.

::: edgeresnext.bundle.model.Manifest
    options:
      show_bases: false
      members: [primary, sha256]

::: edgeresnext.bundle.model.ArtifactEntry
    options:
      show_bases: false
      members: []

::: edgeresnext.backends.tensorrt.record.EngineRecord
    options:
      show_bases: false
      members: [check, sources]

## Targets in Python: `edgeresnext.config`

The same `Target` a target file describes (keys: [Target file reference](target.md)).

::: edgeresnext.config.load_target

::: edgeresnext.config.target_from_dict

::: edgeresnext.config.Target
    options:
      show_bases: false
      members: [resolved]
"""

GENERATED = {
    "reference/cli.md": cli_markdown,
    "reference/target.md": target_markdown,
    "reference/api.md": lambda: API_PAGE,
}


# Our docstrings name objects with Sphinx roles (:class:`X`); mkdocstrings renders the code and leaves the role.
SPHINX_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):(?=<code>)")


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri == "reference/api.md":
        return SPHINX_ROLE.sub("", html)
    return html


def on_files(files: Files, config: Any) -> Files:
    for path, make in GENERATED.items():
        files.append(File.generated(config, path, content=make()))
    return files
