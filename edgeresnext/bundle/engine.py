"""The device step of a TensorRT bundle: build the kit's engine on the device and record it in the manifest.

``edgeresnext bundle build-engine BUNDLE`` runs :func:`engine_into_bundle`. The work is
:mod:`edgeresnext.backends.tensorrt.seal`, the same module the kit carries as ``seal.py`` for devices without
edgeresnext (``BUNDLE/kit/build_engine.sh``); here it also gets the manifest schema check, the bundle's signature
(checked before, made anew after, when keys are given) and TensorRT's Python API as a second way to build, with the
same build plan (``kit.json``).

edgeresnext never runs code that came inside the bundle: the kit's ``build_engine.sh``, ``seal.py``,
``device_check.py`` and ``check/stats.py`` are there for devices without edgeresnext. Here the build is
:mod:`edgeresnext.backends.tensorrt.trtexec` (or TensorRT's Python API), the device check is the package's
:mod:`~edgeresnext.backends.tensorrt.device_check` with :mod:`edgeresnext.stats`, and trtexec is the device's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeresnext.bundle.manifest import BundleError, verify_bundle
from edgeresnext.errors import EdgeResNeXtError

logger = logging.getLogger(__name__)


def _python_api_build(kit_dir: Path, plan: dict[str, Any]) -> None:
    """The kit's engine through TensorRT's Python API (what ``edgeresnext compile --on-device`` builds)."""
    from edgeresnext.backends.tensorrt import BuildPlan, engine_from_onnx
    from edgeresnext.backends.tensorrt.kit import variant_engines_from_kit

    typed = BuildPlan.from_dict(plan)
    engine_from_onnx(kit_dir / typed.onnx, kit_dir / typed.engine, typed, timing_cache=kit_dir / typed.timing_cache)
    variant_engines_from_kit(kit_dir, typed, build=engine_from_onnx)


def _trtexec_build(trtexec: str | None, extra_args: tuple[str, ...]):
    """The build step: the package's trtexec build (never the kit's build_engine.sh)."""
    from edgeresnext.backends.tensorrt.trtexec import engine_with_trtexec

    def build(kit_dir: Path, plan: dict[str, Any]) -> None:
        engine_with_trtexec(kit_dir, plan, trtexec, extra_args)

    return build


def _device_check(trtexec: str | None):
    """The check step: the package's device check and statistics (never the kit's copies)."""
    from edgeresnext import stats
    from edgeresnext.backends.tensorrt import device_check

    def check(kit_dir: Path, plan: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        return device_check.run_check(kit_dir, kit_dir / plan["engine"], record, trtexec, stats=stats)

    return check


def _staged_check(sign_key: Path | None, password: bytes | None):
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


def engine_into_bundle(
    bundle_dir: str | os.PathLike[str],
    trtexec: str | None = None,
    python_api: bool = False,
    trtexec_args: Sequence[str] = (),
    public_key: str | os.PathLike[str] | None = None,
    sign_key: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Build the engine of the TensorRT kit in ``bundle_dir`` here (on the device) and seal it into the bundle.

    ``python_api``: TensorRT's Python API; otherwise trtexec with the kit's plan (``trtexec``, else ``$TRTEXEC``,
    ``PATH`` or JetPack's; ``trtexec_args`` are appended). The engine becomes the primary artifact, recorded with its
    TensorRT version, GPU name, SM, build mode and source ONNX; the kit stays listed. All or nothing: a failed build
    or check leaves the bundle exactly as it was (:class:`BundleError`). Returns the new manifest.

    ``public_key`` (default ``$EDGERESNEXT_BUNDLE_PUBLIC_KEY``): the bundle's signature is checked with it first, and a
    missing or mismatched one is refused. ``sign_key``: the sealed bundle is signed with it (``bundle.sig`` then covers
    the engine too); without one, a signature the bundle had covers the bundle as it was before this step, not the
    engine, and a configured public key refuses the sealed bundle saying so.
    """
    from edgeresnext import __version__
    from edgeresnext.backends.tensorrt import seal
    from edgeresnext.bundle.signature import check_signature, private_key_password, public_key_from

    if python_api and (trtexec or trtexec_args):
        raise BundleError("--python-api builds without trtexec; drop --trtexec and the trtexec flags")
    public_key = public_key_from(public_key)
    password = private_key_password(sign_key) if sign_key is not None else None
    if public_key is not None:
        check_signature(bundle_dir, public_key)
    build = _python_api_build if python_api else _trtexec_build(trtexec, tuple(trtexec_args))
    try:
        sealed_by = f"edgeresnext {__version__}"
        manifest = seal.engine_into_bundle(
            bundle_dir,
            build,
            sealed_by=sealed_by,
            check=_staged_check(None if sign_key is None else Path(sign_key), password),
            device_check=_device_check(trtexec),
        )
    except seal.SealError as err:
        raise BundleError(f"{err}; the bundle is unchanged") from err
    except EdgeResNeXtError as err:  # the Python API build (no TensorRT here, a parser error): same guarantee
        raise type(err)(f"{err}; the bundle is unchanged") from err
    engine = manifest["artifacts"][0]["engine"]
    logger.info(
        "sealed %s: TensorRT %s, %s SM %s",
        manifest["artifacts"][0]["path"],
        engine["tensorrt_version"],
        engine["gpu_name"],
        engine["gpu_sm"],
    )
    return manifest


def device_check_status(manifest: dict[str, Any]) -> str:
    """The primary engine's device check: ``checked``, ``failed`` or ``unchecked`` (also when none is recorded)."""
    from edgeresnext.backends.tensorrt import seal

    return seal.check_status(manifest)


def failed_check_message(manifest: dict[str, Any]) -> str:
    from edgeresnext.backends.tensorrt import seal

    return seal.failed_check_message(manifest)


def device_check_exit_code(manifest: dict[str, Any]) -> int:
    """The device step's exit code: 0 proven, 1 failed, 3 NOT PROVEN or unchecked (the kit's seal.py says the same)."""
    from edgeresnext.backends.tensorrt import seal

    return seal.check_exit_code(manifest)


def unproven_check_message(manifest: dict[str, Any]) -> str:
    from edgeresnext.backends.tensorrt import seal

    return seal.unproven_check_message(manifest)


def engine_summary(bundle_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> list[str]:
    """The lines the device command prints (the same as the kit's seal.py prints)."""
    from edgeresnext.backends.tensorrt import device_check, seal

    return seal.summary_lines(bundle_dir, manifest, describe_check=device_check.summary_lines)
