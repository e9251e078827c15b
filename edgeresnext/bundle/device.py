"""The device step of a bundle whose build finishes on the device: the bundle's backend builds what its kit describes
here and records it in the manifest (:meth:`~edgeresnext.backends.Backend.seal_on_device`); this module adds what
every such step needs: the bundle's signature checked before, the sealed copy's schema check, and a new signature
after, when keys are given. ``edgeresnext bundle build-engine BUNDLE`` and ``compile --on-device`` run it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeresnext.backends import DeviceStepOutcome, get_backend, kit_owner
from edgeresnext.bundle.manifest import MANIFEST, BundleError, read_manifest, verify_bundle


def _staged_check(sign_key: Path | None, password: bytes | None) -> Callable[[Path], None]:
    """The last check of the sealed copy before it replaces the bundle: the manifest schema, then, given a key, the
    copy signed (the signature moves into the bundle with the new manifest)."""

    def check(folder: Path) -> None:
        try:
            verify_bundle(folder)
        except BundleError as err:  # a bug of the sealing code, not the user's: say so rather than name the copy
            raise BundleError(f"the sealed manifest would not verify: {err}") from err
        if sign_key is not None:
            from edgeresnext.bundle.signature import sign_bundle

            sign_bundle(folder, sign_key, password)

    return check


def finish_on_device(
    bundle_dir: str | os.PathLike[str],
    public_key: str | os.PathLike[str] | None = None,
    sign_key: str | os.PathLike[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Finish the build of the bundle ``bundle_dir`` here (on the device) and seal it into the bundle; all or nothing.
    Returns the new manifest. ``options`` are the backend's (TensorRT: ``trtexec``, ``python_api``, ``trtexec_args``).

    ``public_key`` (default ``$EDGERESNEXT_BUNDLE_PUBLIC_KEY``): the bundle's signature is checked with it first, and a
    missing or mismatched one is refused. ``sign_key``: the sealed bundle is signed with it (``bundle.sig`` then covers
    what the device built too); without one, a signature the bundle had covers the bundle as it was before this step,
    and a configured public key refuses the sealed bundle saying so.
    """
    from edgeresnext.bundle.signature import check_signature, private_key_password, public_key_from

    public_key = public_key_from(public_key)
    password = private_key_password(sign_key) if sign_key is not None else None
    if public_key is not None:
        check_signature(bundle_dir, public_key)
    check = _staged_check(None if sign_key is None else Path(sign_key), password)
    return _device_backend(bundle_dir).seal_on_device(Path(bundle_dir), check, **options)


def device_step_outcome(bundle_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> DeviceStepOutcome:
    """What the device step sealed into ``bundle_dir`` (``manifest``), as its backend says it."""
    return get_backend(manifest["artifacts"][0]["backend"]).device_step_outcome(Path(bundle_dir), manifest)


def _device_backend(bundle_dir: str | os.PathLike[str]):
    """The backend of the bundle's primary artifact; a damaged manifest is refused here, naming its key (before any
    build runs). A folder without a manifest: the backend whose build kit it is says what to pass instead."""
    folder = Path(bundle_dir)
    if (folder / MANIFEST).is_file():
        try:
            return get_backend(read_manifest(folder).primary.backend)
        except BundleError as err:  # as seal.py words it: nothing was built or written
            raise BundleError(f"{err}; the bundle is unchanged") from err
    owner = kit_owner(folder)
    if owner is None:
        raise BundleError(f"{folder}: not a bundle (no manifest.json)")
    return owner
