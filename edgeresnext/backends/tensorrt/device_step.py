"""The device step of a TensorRT bundle: build the kit's engine on the device and record it in the manifest.

``edgeresnext bundle build-engine BUNDLE`` runs :func:`edgeresnext.bundle.device.finish_on_device`, which checks the
bundle's signature and asks the bundle's backend (:meth:`TensorRTBackend.seal_on_device`) to run
:func:`engine_into_bundle` here. The work is :mod:`edgeresnext.backends.tensorrt.seal`, the same module the kit carries
as ``seal.py`` for devices without edgeresnext (``BUNDLE/kit/build_engine.sh``); here it also gets the bundle's last
check (the manifest schema check and, when a key is given, the new signature: ``check``) and TensorRT's Python API as a
second way to build, with the same build plan (``kit.json``).

edgeresnext never runs code that came inside the bundle: the kit's ``build_engine.sh``, ``seal.py``,
``device_check.py`` and ``check/stats.py`` are there for devices without edgeresnext. Here the build is
:mod:`edgeresnext.backends.tensorrt.trtexec` (or TensorRT's Python API), the device check is the package's
:mod:`~edgeresnext.backends.tensorrt.device_check` with :mod:`edgeresnext.stats`, and trtexec is the device's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeresnext.errors import BundleError, EdgeResNeXtError

logger = logging.getLogger(__name__)


def _python_api_build(kit_dir: Path, plan: dict[str, Any]) -> None:
    """The kit's engine through TensorRT's Python API (what ``edgeresnext compile --on-device`` builds)."""
    from edgeresnext.backends.tensorrt.engine import engine_from_onnx
    from edgeresnext.backends.tensorrt.kit import variant_engines_from_kit
    from edgeresnext.backends.tensorrt.plan import BuildPlan

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


def engine_into_bundle(
    bundle_dir: str | os.PathLike[str],
    check: Callable[[Path], None],
    trtexec: str | None = None,
    python_api: bool = False,
    trtexec_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Build the engine of the TensorRT kit in ``bundle_dir`` here (on the device) and seal it into the bundle.

    ``python_api``: TensorRT's Python API; otherwise trtexec with the kit's plan (``trtexec``, else ``$TRTEXEC``,
    ``PATH`` or JetPack's; ``trtexec_args`` are appended). The engine becomes the primary artifact, recorded with its
    TensorRT version, GPU name, SM, build mode and source ONNX; the kit stays listed. ``check``: the sealed copy's last
    check before it replaces the bundle (the manifest schema, a new signature). All or nothing: a failed build or
    check leaves the bundle exactly as it was (:class:`BundleError`). Returns the new manifest.
    """
    from edgeresnext import __version__
    from edgeresnext.backends.tensorrt import seal

    if python_api and (trtexec or trtexec_args):
        raise BundleError("--python-api builds without trtexec; drop --trtexec and the trtexec flags")
    build = _python_api_build if python_api else _trtexec_build(trtexec, tuple(trtexec_args))
    try:
        sealed_by = f"edgeresnext {__version__}"
        manifest = seal.engine_into_bundle(
            bundle_dir, build, sealed_by=sealed_by, check=check, device_check=_device_check(trtexec)
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


def device_step_outcome(bundle_dir: str | os.PathLike[str], manifest: Mapping[str, Any]):
    """What the device step sealed, as the kit's seal.py says it: its lines, its exit code (0 proven, 1 failed,
    3 NOT PROVEN or unchecked) and the failure's or the NOT PROVEN's one line."""
    from edgeresnext.backends.base import DeviceStepOutcome
    from edgeresnext.backends.tensorrt import device_check, seal
    from edgeresnext.errors import EXIT_GATE_FAILED, EXIT_UNPROVEN

    manifest = dict(manifest)
    lines = seal.summary_lines(bundle_dir, manifest, describe_check=device_check.summary_lines)
    code = seal.check_exit_code(manifest)
    message = ""
    if code == EXIT_GATE_FAILED:
        message = seal.failed_check_message(manifest)
    elif code == EXIT_UNPROVEN:
        message = seal.unproven_check_message(manifest)
    return DeviceStepOutcome(lines, code, message)
