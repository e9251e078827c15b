"""Bundles: what a device app embeds. ``build/<target>/bundle/`` holds the compiled artifact(s), ``labels.txt``
and ``manifest.json`` (input, preprocessing, output meaning, precision, backend version, device, validation
summary, and the sha256 of every file).

One job per module: :mod:`.write` (:func:`bundle_from_artifacts`), :mod:`.manifest` (reading and verifying:
:func:`read_manifest`, :func:`verify_bundle`; only the standard library, for device runtimes), :mod:`.model` (the
manifest's type, :class:`Manifest`, and the JSON Schema generated from it), :mod:`.archive`
(:func:`extract_bundle`), :mod:`.engine` (the device step of a TensorRT bundle: :func:`engine_into_bundle` builds the
kit's engine on the device and records it in the manifest).
"""

from edgeresnext.bundle.archive import ARCHIVE_SUFFIXES, extract_bundle
from edgeresnext.bundle.engine import (
    device_check_exit_code,
    device_check_status,
    engine_into_bundle,
    engine_summary,
    failed_check_message,
    unproven_check_message,
)
from edgeresnext.bundle.manifest import (
    FORMAT,
    LABELS,
    MANIFEST,
    SCHEMA_PATH,
    SCHEMA_VERSION,
    BundleError,
    Manifest,
    read_labels,
    read_manifest,
    verify_bundle,
)
from edgeresnext.bundle.write import build_manifest, bundle_from_artifacts

__all__ = [
    "ARCHIVE_SUFFIXES",
    "FORMAT",
    "LABELS",
    "MANIFEST",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "BundleError",
    "Manifest",
    "build_manifest",
    "bundle_from_artifacts",
    "device_check_exit_code",
    "device_check_status",
    "engine_into_bundle",
    "engine_summary",
    "extract_bundle",
    "failed_check_message",
    "read_labels",
    "read_manifest",
    "unproven_check_message",
    "verify_bundle",
]
