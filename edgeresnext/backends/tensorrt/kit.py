"""The on-device build kit: what ``compile`` writes when the engine cannot be built here (no TensorRT, or a
Jetson target built on a workstation): the Q/DQ ONNX (and its FP16 variant), ``build_engine.sh`` calling
``trtexec`` with the target's settings, ``kit.json`` for ``edgeresnext compile --on-device <kit>`` with JetPack's
Python, ``seal.py`` (:mod:`.seal`, which records the engine in the bundle the kit travels in), and a README.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from edgeresnext.backends.base import Artifact, ArtifactInfo, copy_file_atomic
from edgeresnext.backends.tensorrt.device_check import CHECK_DIR, STATS_FILE
from edgeresnext.backends.tensorrt.engine import engine_from_onnx
from edgeresnext.backends.tensorrt.plan import FP16_QDQ_FILE, QDQ_FILE, WEIGHTS_FILE, BuildPlan
from edgeresnext.backends.tensorrt.seal import DEVICE_CHECK_SCRIPT, KIT_FILE, KIT_SCRIPT, MANIFEST, SEAL_SCRIPT
from edgeresnext.errors import ConfigError
from edgeresnext.onnx_io import share_initializers

if TYPE_CHECKING:
    from edgeresnext.config import Target

logger = logging.getLogger(__name__)

KIT_VERSION = 1
SEAL_SOURCE = Path(__file__).with_name("seal.py")
DEVICE_CHECK_SOURCE = Path(__file__).with_name("device_check.py")
# The device check's intervals and gates are the host's own code: edgeresnext/stats.py, standard library only.
STATS_SOURCE = Path(__file__).resolve().parents[2] / "stats.py"


def trtexec_args(plan: BuildPlan) -> list[str]:
    """trtexec flags for a build plan (TensorRT 10 and 11; the version-dependent ``--stronglyTyped`` is
    added by build_engine.sh, which knows the device's TensorRT)."""
    args = [
        f"--onnx={plan.onnx}",
        f"--saveEngine={plan.engine}",
        f"--memPoolSize=workspace:{plan.workspace_mb}M",
        f"--timingCacheFile={plan.timing_cache}",
    ]
    if plan.dynamic_batch:
        chw = "x".join(str(d) for d in plan.input_chw)
        for size, flag in (
            (plan.batch.min, "--minShapes"),
            (plan.batch.opt, "--optShapes"),
            (plan.batch.max, "--maxShapes"),
        ):
            args.append(f"{flag}={plan.input_name}:{size}x{chw}")
    if plan.int8_flag:
        args.append("--int8")
    if plan.fp16_flag:
        args.append("--fp16")
    if plan.dla_core is not None:
        args.append(f"--useDLACore={plan.dla_core}")
        if plan.gpu_fallback:
            args.append("--allowGPUFallback")
    return args


_SCRIPT = """#!/usr/bin/env bash
# Builds the TensorRT engine for target '{target}' ({device}) ON THE DEVICE that will run it: engines only run
# with the TensorRT version and GPU that built them. Written by edgeresnext {version}; the flags come from the
# target file, so change the target and regenerate the kit rather than editing them here.
#   ./build_engine.sh                 (extra trtexec flags may follow, e.g. --verbose)
#   TRTEXEC=/path/to/trtexec ./build_engine.sh
# Inside a bundle (../manifest.json lists this kit) it hands over to seal.py (python3, standard library only): the
# engine is built in a copy of the bundle and recorded in its manifest, or the bundle is left as it was.
# EDGERESNEXT_SEAL=0 builds in this folder without recording it (the bundle then no longer verifies).
set -euo pipefail
cd "$(dirname "$0")"
if [ "${{EDGERESNEXT_SEAL:-auto}}" = auto ] && [ -f ../manifest.json ] && [ -f seal.py ]; then
  if ! command -v python3 >/dev/null; then
    echo "build_engine.sh: python3 not found; it records the engine in the bundle's manifest" \
         "(EDGERESNEXT_SEAL=0 builds without recording it, and the bundle no longer verifies)" >&2
    exit 2
  fi
  exec python3 -I -S seal.py --bundle .. -- "$@"
fi
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "build_engine.sh: trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec); set TRTEXEC=" >&2
  exit 2
fi
# TensorRT version: from the Python bindings if present, else from trtexec's banner: TensorRT 10 and later print
# [TensorRT v100300] for 10.3.0, TensorRT 8 printed [TensorRT v8602] for 8.6.2 (JetPack 6.0).
TRT_FOUND="${{TRT_MAJOR:-}}"
if [ -z "$TRT_FOUND" ]; then
  TRT_FOUND="$(python3 -c 'import tensorrt as t; print(t.__version__)' 2>/dev/null || true)"
fi
if [ -z "$TRT_FOUND" ]; then
  TRT_V="$( ("$TRTEXEC" --help 2>&1 || true) | sed -n 's/.*\\[TensorRT v\\([0-9]*\\)\\].*/\\1/p' | head -n 1 || true)"
  if [ -n "$TRT_V" ] && [ "$TRT_V" -ge 100000 ]; then
    TRT_FOUND="$(( TRT_V / 10000 )).$(( TRT_V / 100 % 100 )).$(( TRT_V % 100 ))"
  elif [ -n "$TRT_V" ]; then
    TRT_FOUND="$(( TRT_V / 1000 )).$(( TRT_V / 100 % 10 )).$(( TRT_V % 100 ))"
  fi
fi
TRT_MAJOR="${{TRT_FOUND%%.*}}"
case "$TRT_MAJOR" in
  ''|*[!0-9]*)
    echo "build_engine.sh: cannot tell which TensorRT $TRTEXEC belongs to (no [TensorRT vNNNN] banner in its" \
         "--help, no tensorrt Python package); set TRT_MAJOR=10 (or 11) if it is TensorRT 10 or later" >&2
    exit 2 ;;
esac
if [ "$TRT_MAJOR" -lt 10 ]; then
  echo "build_engine.sh: TensorRT $TRT_FOUND found; needs TensorRT 10 or later (JetPack 6.1 and later)" >&2
  exit 2
fi
ARGS=({args})
BUILD_MODE={mode}
if [ "$BUILD_MODE" = strongly_typed ]; then
  # TensorRT 10 opts in to strong typing; TensorRT 11 is always strongly typed.
  if [ "$TRT_MAJOR" -lt 11 ]; then ARGS+=(--stronglyTyped); fi
elif [ "$TRT_MAJOR" -ge 11 ]; then
  echo "build_engine.sh: this kit asks for a weakly typed --int8/--fp16 build, which TensorRT 11 removed;" \\
       "set backend_options.tensorrt.strongly_typed: true and regenerate the kit" >&2
  exit 2
fi
echo "+ $TRTEXEC ${{ARGS[*]}} $*"
"$TRTEXEC" "${{ARGS[@]}}" "$@" 2>&1 | tee build_engine.log
# The variants (DeepStream's engine, normalization inside): the same flags, their own ONNX and engine, no timing cache.
for VARIANT in {variants}; do
  V_ARGS=()
  for arg in "${{ARGS[@]}}"; do
    case "$arg" in
      --onnx=*) V_ARGS+=("--onnx=$VARIANT") ;;
      --saveEngine=*) V_ARGS+=("--saveEngine=${{VARIANT%.onnx}}.engine") ;;
      --timingCacheFile=*) ;;
      *) V_ARGS+=("$arg") ;;
    esac
  done
  echo "+ $TRTEXEC ${{V_ARGS[*]}} $*"
  "$TRTEXEC" "${{V_ARGS[@]}}" "$@" 2>&1 | tee -a build_engine.log
done
# Record what built the engine: it is valid only for this TensorRT version and GPU.
# (|| true: with pipefail, a sed cut short by head must not end the script)
field() {{ sed -n "s/.*$1: *//p" build_engine.log | head -n 1 | tr -d '\\r"' || true; }}
TRT_VERSION="$(field 'TensorRT version')"
if [ -z "$TRT_VERSION" ]; then  # the banner's [TensorRT v100300] is 10.3.0
  TRT_V="$(sed -n 's/.*\\[TensorRT v\\([0-9]*\\)\\].*/\\1/p' build_engine.log | head -n 1 || true)"
  if [ -n "$TRT_V" ]; then TRT_VERSION="$(( TRT_V / 10000 )).$(( TRT_V / 100 % 100 )).$(( TRT_V % 100 ))"; fi
fi
GPU_NAME="$(field 'Selected Device')"
GPU_SM="$(field 'Compute Capability')"
cat > {engine}.json.tmp <<EOF
{{"engine": "{engine}", "onnx": "{onnx}", "tensorrt_version": "${{TRT_VERSION:-unknown}}", \
"tensorrt_major": $TRT_MAJOR, "build_mode": "$BUILD_MODE", "gpu_name": "${{GPU_NAME:-unknown}}", \
"gpu_sm": "${{GPU_SM:-unknown}}", "dla_core": {dla}, "built_with": "trtexec", \
"built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"}}
EOF
mv {engine}.json.tmp {engine}.json
if [ "${{EDGERESNEXT_SEAL:-auto}}" != staged ]; then  # seal.py says where the engine lands
  echo "engine: $(pwd)/{engine}  (TensorRT ${{TRT_VERSION:-?}}, ${{GPU_NAME:-?}}, SM ${{GPU_SM:-?}})"
fi
"""


def check_fp16_scales(path: Path) -> None:
    """The FP16 variant passes the TensorRT lint's ``fp16-scale`` rule: every Q/DQ scale a normal FP16 number (a zero
    or subnormal one breaks its layer in TensorRT, silently)."""
    from edgeresnext.errors import ExportError
    from edgeresnext.lint import lint_onnx

    broken = [violation for violation in lint_onnx(path) if violation.rule == "fp16-scale"]
    if broken:
        shown = "; ".join(str(violation) for violation in broken[:5])
        raise ExportError(f"{path}: {len(broken)} Q/DQ node(s) with zero or subnormal FP16 scales: {shown}")


def build_script(plan: BuildPlan) -> str:
    from edgeresnext import __version__

    return _SCRIPT.format(
        target=plan.target,
        device=plan.device,
        version=__version__,
        args=" ".join(shlex.quote(arg) for arg in trtexec_args(plan)),
        mode=plan.build_mode,
        engine=plan.engine,
        onnx=plan.onnx,
        dla="null" if plan.dla_core is None else plan.dla_core,
        variants=" ".join(shlex.quote(v) for v in plan.variants),
    )


def kit_from_onnx(onnx_path: str | Path, target: Target, out_dir: str | Path, reason: str) -> Artifact:
    """Write the on-device build kit for ``target`` into ``out_dir`` (see the module docstring)."""
    from edgeresnext.atomic import sha256_file, write_json_atomic, write_text_atomic
    from edgeresnext.quantize.qdq import fp16_qdq_from_onnx

    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = BuildPlan.from_target(onnx_path, target)
    files = [copy_file_atomic(onnx_path, out_dir / QDQ_FILE)]
    extra: dict[str, Any] = {"plan": plan.to_dict()}
    if plan.onnx == FP16_QDQ_FILE:
        extra["fp16"] = fp16_qdq_from_onnx(onnx_path, out_dir / FP16_QDQ_FILE)
        check_fp16_scales(out_dir / FP16_QDQ_FILE)
        files.append(out_dir / FP16_QDQ_FILE)
    weights = share_initializers([path for path in files if path.suffix == ".onnx"], WEIGHTS_FILE)
    files.append(weights)
    script = write_text_atomic(out_dir / KIT_SCRIPT, build_script(plan))
    script.chmod(0o755)
    files.append(script)
    # The re-seal step for a bundle on a device without edgeresnext: this package's own module, copied verbatim.
    files.append(write_text_atomic(out_dir / SEAL_SCRIPT, SEAL_SOURCE.read_text(encoding="utf-8")))
    # The device check (run by seal.py after the build) and the host's statistics it computes with, both verbatim.
    files.append(write_text_atomic(out_dir / DEVICE_CHECK_SCRIPT, DEVICE_CHECK_SOURCE.read_text(encoding="utf-8")))
    (out_dir / CHECK_DIR).mkdir(exist_ok=True)
    files.append(copy_file_atomic(STATS_SOURCE, out_dir / CHECK_DIR / STATS_FILE))
    omitted: list[str] = []
    target_config = _without_host_paths(target.resolved(), "", omitted)
    kit = {
        "kit_version": KIT_VERSION,
        "plan": plan.to_dict(),
        "reason": reason,
        "target_config": target_config,
        "sha256": {path.name: sha256_file(path) for path in files if path.suffix == ".onnx" or path == weights},
        # Run in the kit folder on the device: the kit travels (bundle/kit/), the build host's paths do not.
        "build_python": "edgeresnext compile --on-device .",
        "build_trtexec": f"./{KIT_SCRIPT}",
        "host_paths_omitted": omitted,
    }
    files.append(write_json_atomic(out_dir / KIT_FILE, kit))
    files.append(write_text_atomic(out_dir / "README.md", _kit_readme(plan, out_dir, reason)))
    logger.warning(
        "tensorrt: no engine built here (%s). Wrote the on-device build kit %s; on the %s run "
        "`%s/%s` or `edgeresnext compile --on-device %s`",
        reason,
        out_dir,
        plan.device,
        out_dir,
        KIT_SCRIPT,
        out_dir,
    )
    commands = [f"{out_dir}/{KIT_SCRIPT}", f"edgeresnext compile --on-device {out_dir}"]
    return Artifact(
        backend="tensorrt",
        precision=target.precision,
        kind="kit",
        path=out_dir,
        files=files,
        info=ArtifactInfo(extra={"reason": reason, "device_commands": commands, **extra}),
    )


_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def _without_host_paths(value: Any, key: str, omitted: list[str]) -> Any:
    """``value`` with every absolute path (the build host's folders: a calibration folder, a checkpoint) cut to its
    last name; the keys cut are appended to ``omitted``. The kit goes to devices and other people."""
    if isinstance(value, dict):
        return {
            name: _without_host_paths(item, f"{key}.{name}" if key else name, omitted) for name, item in value.items()
        }
    if isinstance(value, list):
        return [_without_host_paths(item, f"{key}[{i}]", omitted) for i, item in enumerate(value)]
    if isinstance(value, str) and _ABSOLUTE.match(value):
        omitted.append(key)
        return PurePath(value.replace("\\", "/")).name
    return value


def _kit_readme(plan: BuildPlan, out_dir: Path, reason: str) -> str:
    return f"""# TensorRT build kit: {plan.target} ({plan.device})

No engine was built on the host that made this kit ({reason}). TensorRT engines run only with the
TensorRT version and GPU (SM) that built them, so build it on the device itself (TensorRT 10 or later: JetPack 6.1
and later; JetPack 6.0's TensorRT 8.6 is refused).

In a bundle (`bundle/kit/`, as `make build` writes it), one command on the device builds the engine and records it
in the bundle's manifest, so that `edgeresnext bundle verify`, `load_bundle()` and the C++ samples accept it:

    bundle/kit/{KIT_SCRIPT}                           # needs only trtexec and python3, both in JetPack
    edgeresnext bundle build-engine bundle            # the same where edgeresnext is installed
    edgeresnext bundle build-engine bundle --python-api   # TensorRT's Python API instead of trtexec

The engine is built in a copy of the bundle; if the build fails, the bundle stays exactly as it was. Then
`{DEVICE_CHECK_SCRIPT}` runs the engine with trtexec on the check set in `check/` (images the build host preprocessed,
with its own outputs for them) and the result is sealed with the engine: `checked`, `failed` (it disagrees with the
host's INT8 stand-in beyond the target's gate; the command exits 1 and apps refuse the engine) or `unchecked`. The
command exits 0 when the gate is proven, and 3 when the engine is sealed but its gate is not proven (the check set
cannot prove it: NOT PROVEN, or the check did not run).
The manifest then lists `kit/{plan.engine}` as the primary artifact with its sha256, TensorRT version, GPU name, SM,
build mode and the ONNX it came from; the kit stays listed, so the same bundle can be rebuilt on another device.

Why `{SEAL_SCRIPT}`: JetPack has trtexec and Python 3 but not edgeresnext (nor pydantic and the rest of the build
host's packages), and a fielded device is often offline. `{SEAL_SCRIPT}` is edgeresnext's own sealing module
(`edgeresnext/backends/tensorrt/seal.py`), copied verbatim, standard library only; `{KIT_SCRIPT}` runs it with
`python3 -I -S`, so it never imports anything installed on the device. Before it builds, it checks the bundle as
`edgeresnext bundle verify` does, with the same messages, as far as the standard library allows: `manifest.json`'s
structure (required keys and types, the file list, paths inside the bundle, sha256s, sizes, every file an artifact
names listed) and every file's size and sha256. It does not check the rest of the manifest's JSON Schema, the labels
file's lines or a signature, and says so when it is done; `edgeresnext bundle verify` checks them.

A kit on its own (outside a bundle) builds in place, as before:

    ./{KIT_SCRIPT}                                  # trtexec, nothing else needed
    edgeresnext compile --on-device {out_dir.name}      # same settings through TensorRT's Python API

Either writes `{plan.engine}` and `{plan.engine}.json` (TensorRT version, build mode, GPU name, SM).
Model: `{plan.onnx}` ({plan.build_mode.replace("_", " ")}; its large tensors, shared with the kit's other ONNX files,
are in `{WEIGHTS_FILE}` beside it: keep the two together), input `{plan.input_name}`
{plan.batch.min}..{plan.batch.max} x {"x".join(map(str, plan.input_chw))}, workspace \
{plan.workspace_mb} MiB, DLA core: {plan.dla_core if plan.dla_core is not None else "off"}.
Validate a DLA engine on its own: DLA INT8 accuracy can differ from the GPU's.
"""


def rebuild_hint(engine_path: str | Path) -> str:
    """How to rebuild an engine on this device: the bundle's device command when it sits in a bundle's kit."""
    kit = Path(engine_path).parent
    if (kit / KIT_SCRIPT).is_file() and (kit.parent / MANIFEST).is_file():
        return (
            f"rebuild it on this device: `edgeresnext bundle build-engine {kit.parent}` (or `{kit / KIT_SCRIPT}` "
            "without edgeresnext)"
        )
    if (kit / KIT_SCRIPT).is_file():
        return f"rebuild it on this device: `{kit / KIT_SCRIPT}` or `edgeresnext compile --on-device {kit}`"
    return "rebuild it on this device from its Q/DQ ONNX (`edgeresnext compile --target ...` or the target's kit)"


def read_kit(kit_dir: str | Path) -> dict[str, Any]:
    """kit.json of ``kit_dir``, its ``"plan"`` read into a :class:`BuildPlan`."""
    kit_dir = Path(kit_dir)
    path = kit_dir / KIT_FILE
    if not path.is_file():
        raise ConfigError(
            f"{kit_dir}: not a TensorRT build kit (no {KIT_FILE}); make one with "
            "`edgeresnext compile --target targets/jetson.yaml`"
        )
    try:
        kit = json.loads(path.read_text())
        kit["plan"] = BuildPlan.from_dict(kit["plan"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a valid kit file ({err!r})") from err
    return kit


def describe_engine(artifact: Artifact) -> str:
    """One line saying what an engine is: build mode, TensorRT version, GPU and SM, build time."""
    info = artifact.info.extra
    return (
        f"engine: {artifact.path}  ({info['build_mode'].replace('_', ' ')}, TensorRT {info['tensorrt_version']}, "
        f"{info['gpu_name']} SM {info['gpu_sm']}, built in {info['build_seconds']} s)"
    )


def variant_engines_from_kit(kit_dir: Path, plan: BuildPlan, build: Any = None) -> None:
    """The plan's variant engines through TensorRT's Python API (``build``: :func:`engine_from_onnx`), with the
    engine's own flags and no timing cache."""
    from dataclasses import replace

    build = build or engine_from_onnx
    for onnx, engine in plan.variant_engines():
        build(kit_dir / onnx, kit_dir / engine, replace(plan, onnx=onnx, engine=engine, variants=()))


def engine_from_kit(kit_dir: str | Path) -> Artifact:
    """Build the kit's engine here (on the device) with TensorRT's Python API; writes it into the kit."""
    kit_dir = Path(kit_dir)
    plan: BuildPlan = read_kit(kit_dir)["plan"]
    onnx_path = kit_dir / plan.onnx
    if not onnx_path.is_file():
        raise ConfigError(f"{onnx_path}: the kit's ONNX model is missing")
    info = engine_from_onnx(onnx_path, kit_dir / plan.engine, plan, timing_cache=kit_dir / plan.timing_cache)
    variant_engines_from_kit(kit_dir, plan)
    return Artifact(
        backend="tensorrt",
        precision=plan.precision,
        kind="engine",
        path=kit_dir / plan.engine,
        files=[kit_dir / plan.engine, kit_dir / f"{plan.engine}.json"],
        info=ArtifactInfo(extra=info),
    )


def kit_with_variant(kit: Path, name: str, make: Callable[[Path, Path], Path]) -> tuple[Path, dict[str, Any]]:
    """Put a variant of the kit's ONNX (``make(source, dest)``, e.g. DeepStream's) into ``kit`` (a private copy) as
    ``name`` and add it to the kit's plan and build script, so that the device step builds its engine too; returns the
    variant's path and the plan."""
    from edgeresnext.atomic import sha256_file, write_json_atomic, write_text_atomic

    data = json.loads((kit / KIT_FILE).read_text(encoding="utf-8"))
    variant = make(kit / data["plan"]["onnx"], kit / name)
    data["plan"]["variants"] = [name]
    # The variant refers to the kit's weights file too (a tensor of its own is added). The kit's models come first, in
    # the order kit_from_onnx shared them, so their files and the weights they already use stay byte for byte.
    sha256 = data.setdefault("sha256", {})
    models = [kit / file for file in (QDQ_FILE, FP16_QDQ_FILE) if file in sha256 and (kit / file).is_file()]
    models.append(variant)
    if (kit / WEIGHTS_FILE).is_file():
        share_initializers(models, WEIGHTS_FILE)
    for path in [*models, kit / WEIGHTS_FILE]:
        if path.is_file():
            sha256[path.name] = sha256_file(path)
    write_json_atomic(kit / KIT_FILE, data)
    script = write_text_atomic(kit / KIT_SCRIPT, build_script(BuildPlan.from_dict(data["plan"])))
    script.chmod(0o755)
    return variant, data["plan"]
