"""Bundles: what a device app embeds. ``build/<target>/bundle/`` holds the compiled artifact(s), ``labels.txt``
and ``manifest.json`` (input, preprocessing, output meaning, precision, backend version, device, validation
summary, and the sha256 of every file).

One job per module: :mod:`.write` (:func:`bundle_from_artifacts`), :mod:`.manifest` (reading and verifying:
:func:`read_manifest`, :func:`verify_bundle`; only the standard library, for device runtimes), :mod:`.model` (the
manifest's type, :class:`Manifest`, and the JSON Schema generated from it), :mod:`.archive`
(:func:`extract_bundle`), :mod:`.device` (the device step of a bundle whose build finishes on the device:
:func:`finish_on_device` asks the bundle's backend to build its kit here and record it in the manifest).
"""

from edgeresnext.bundle.archive import ARCHIVE_SUFFIXES, extract_bundle
from edgeresnext.bundle.device import device_step_outcome, finish_on_device
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
    "device_step_outcome",
    "extract_bundle",
    "finish_on_device",
    "read_labels",
    "read_manifest",
    "verify_bundle",
]
