"""The validation report: ``report.json`` (versioned schema), ``report.md`` (tables, :mod:`.tables`), ``report.html``
(one self-contained page with plots embedded as base64 PNG, :mod:`.page` and :mod:`.plots`).

The JSON is the record of the typed report (:class:`~edgeresnext.validate.results.ValidationReport`); the Markdown and
HTML are views of that typed report, so all three always show the same numbers. A record read from disk becomes the
typed report once, at that boundary (:func:`write_report_record`).
The schema lives in ``edgeresnext/schemas/report.schema.json`` (``SCHEMA_VERSION`` bumps on any
incompatible change).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edgeresnext.atomic import write_json_atomic, write_text_atomic
from edgeresnext.errors import ConfigError
from edgeresnext.report.page import render_html
from edgeresnext.report.plots import accuracy_vs_latency, place_labels
from edgeresnext.report.tables import gate_rows, render_markdown, speed_findings, summary_rows, uncertainty_rows
from edgeresnext.validate.results import SCHEMA_ID, SCHEMA_VERSION, ValidationReport

logger = logging.getLogger(__name__)

__all__ = [
    "SCHEMA_ID",
    "SCHEMA_VERSION",
    "accuracy_vs_latency",
    "check_report",
    "gate_rows",
    "load_schema",
    "place_labels",
    "render_html",
    "render_markdown",
    "speed_findings",
    "summary_rows",
    "uncertainty_rows",
    "write_report",
    "write_report_record",
]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "report.schema.json"


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def check_report(report: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` if ``report`` does not follow the committed schema (needs ``jsonschema``)."""
    import jsonschema

    try:
        jsonschema.validate(report, load_schema())
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"report.json does not follow {SCHEMA_PATH.name} at {where}: {err.message}") from err


def write_report(result: ValidationReport, out_dir: str | Path, html_report: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and (unless disabled) report.html into ``out_dir``, each atomically.

    The typed report becomes JSON here, once; the Markdown and HTML are rendered from the typed report.
    """
    return _write(result.to_dict(), result, Path(out_dir), html_report)


def write_report_record(report: dict[str, Any], out_dir: str | Path, html_report: bool = True) -> dict[str, Path]:
    """:func:`write_report` for a report already in its JSON form, read from disk (``edgeresnext report`` adds the
    device row to the host's report.json and writes it again): the record is written as it is, the Markdown and
    HTML rendered from its typed form (:meth:`ValidationReport.from_dict`, which reads an older schema version)."""
    return _write(report, ValidationReport.from_dict(report), Path(out_dir), html_report)


def _write(record: dict[str, Any], report: ValidationReport, out_dir: Path, html_report: bool) -> dict[str, Path]:
    """report.json (``record``, schema-checked when jsonschema is installed), report.md and report.html (views of
    ``report``), each atomic."""
    try:
        check_report(record)
    except ModuleNotFoundError:
        logger.debug("jsonschema not installed; report.json written without a schema check")
    paths = {
        "json": write_json_atomic(out_dir / "report.json", record),
        "md": write_text_atomic(out_dir / "report.md", render_markdown(report)),
    }
    if html_report:
        paths["html"] = write_text_atomic(out_dir / "report.html", render_html(report))
    logger.info("report written to %s", out_dir)
    return paths
