"""What gets validated: the artifacts of a build (or files named on the command line) as runners, each with its
name, backend, precision and files; which of them the gates judge; the quantize stage's sensitivity record."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeresnext.backends import backend_for_path, list_backends
from edgeresnext.errors import BackendUnavailable, ConfigError
from edgeresnext.validate.measure import RunnerLike, TorchRunner

if TYPE_CHECKING:
    from edgeresnext.config import Target

logger = logging.getLogger(__name__)


@dataclass
class ArtifactUnderTest:
    """One thing to validate: a name for the report, something that maps a batch to logits, its files; or, with
    ``runner=None``, an artifact the build produced that cannot run here and ``skip_reason`` why (a TensorRT
    engine on a CPU host)."""

    name: str
    runner: RunnerLike | None
    files: list[Path] = field(default_factory=list)
    backend: str = ""
    precision: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    skip_reason: str | None = None
    # Validated on the first ``images`` of the set only (a host stand-in, ``validate.stand_in_images``); None: all.
    images: int | None = None

    @property
    def runnable(self) -> bool:
        return self.runner is not None


def SkippedArtifact(
    name: str, reason: str, files: Sequence[Path] = (), backend: str = "", precision: str = ""
) -> ArtifactUnderTest:
    """An artifact that cannot run here, and why."""
    return ArtifactUnderTest(name, None, list(files), backend, precision, skip_reason=reason)


def target_threads(target: Target) -> int | None:
    """The thread count the target asks its backend for, so every artifact runs with the same."""
    from edgeresnext.backends import get_backend

    return get_backend(target.backend).threads(target)


def _artifact_suffixes() -> list[str]:
    from edgeresnext.backends import get_backend, list_backends

    return [suffix for name in list_backends() for suffix in get_backend(name).suffixes]


def runner_from_file(
    path: str | Path, target: Target | None = None, backend: str | None = None, threads: int | None = None
) -> RunnerLike:
    """A runner for an artifact file: ``.onnx`` (ONNX Runtime), ``.xml`` (OpenVINO IR), ``.engine`` (TensorRT),
    ``.safetensors``/``.pt`` (an edgeresnext checkpoint in PyTorch). ``backend`` overrides the guess (e.g. an
    ``.onnx`` in OpenVINO). Options come from ``target.backend_options``; ``threads`` overrides theirs.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: artifact file not found")
    if path.suffix.lower() == ".onnx":  # empty, truncated, not ONNX, external data elsewhere: before any runtime
        from edgeresnext.onnx_io import check_onnx_file

        check_onnx_file(path)
    if path.suffix in (".safetensors", ".pt", ".pth") and backend in (None, "pytorch"):
        from edgeresnext.models import load_checkpoint

        return TorchRunner(load_checkpoint(path))
    backend = backend or backend_for_path(path)
    if backend is None:
        raise ConfigError(
            f"{path}: cannot tell which runtime runs this file; expected one of "
            f"{', '.join([*_artifact_suffixes(), '.safetensors', '.pt'])} or name the backend"
        )
    from edgeresnext.backends import get_backend

    runtime = get_backend(backend)
    artifact = runtime.artifact_for_file(path, _guess_precision(path))
    try:
        return runtime.load(artifact, runtime.run_options(target, threads=threads))
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("edgeresnext"):
            raise  # our own module missing is a bug, not a host limitation
        raise BackendUnavailable(f"{backend} cannot run {path} here: {err}") from err


def artifacts_from_specs(
    specs: Sequence[str], target: Target | None = None, threads: int | None = None
) -> list[ArtifactUnderTest]:
    """``NAME=PATH`` (or ``NAME=BACKEND:PATH``) strings from the command line to artifacts."""
    items: list[ArtifactUnderTest] = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise ConfigError(
                f"--artifact {spec!r}; expected NAME=PATH or NAME=BACKEND:PATH, e.g. "
                "int8-ov=build/cpu/compile/model.xml"
            )
        backend, colon, path_text = rest.partition(":")
        if not colon or backend not in (*list_backends(), "pytorch"):
            backend, path_text = "", rest
        path = Path(path_text)
        files = [path] + (
            [path.with_suffix(".bin")] if path.suffix == ".xml" and path.with_suffix(".bin").is_file() else []
        )
        chosen = backend or backend_for_path(path) or "pytorch"
        try:
            runner = runner_from_file(path, target, backend or None, threads)
        except BackendUnavailable as err:
            items.append(SkippedArtifact(name=name, reason=str(err), files=files, backend=chosen))
            continue
        precision = getattr(getattr(runner, "artifact", None), "precision", "") or _guess_precision(path)
        items.append(ArtifactUnderTest(name=name, runner=runner, files=files, backend=chosen, precision=precision))
    return items


def _guess_precision(path: Path) -> str:
    """INT8 if the graph holds quantize nodes (Q/DQ ONNX or OpenVINO FakeQuantize), else FP32."""
    if path.suffix == ".onnx":
        import onnx

        from edgeresnext.onnx_io import check_onnx_file

        check_onnx_file(path)
        graph = onnx.load(str(path), load_external_data=False).graph
        return "int8" if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node) else "fp32"
    if path.suffix == ".xml":
        text = path.read_text(errors="ignore")
        return (
            "int8" if "FakeQuantize" in text or 'element_type="i8"' in text or 'element_type="u8"' in text else "fp32"
        )
    return "unknown"


# --------------------------------------------------------------------------------------------- a whole build
def discover_artifacts(root: str | Path, target: Target, threads: int | None = None) -> list[ArtifactUnderTest]:
    """Every runnable model file a build left under ``root`` (ONNX, OpenVINO IR, TensorRT engines), once each.

    Names are ``<backend>-<precision>`` (plus the stage folder when two would clash); files with the same
    content (a bundle's copy of the exported ONNX) are validated once. ``report/baseline/`` is included: the
    same runtime's float build that speed-ups are measured against.
    """
    from edgeresnext.atomic import sha256_file

    root = Path(root)
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for path in sorted(root.rglob("*")):
        backend = backend_for_path(path)
        if backend is None or not path.is_file() or path.name.startswith("."):
            continue
        parts = path.relative_to(root).parts
        # The report folder holds no artifact but the float builds the validate stage times the target's against.
        if any(part.startswith(".") for part in parts) or (parts[0] == "report" and parts[1:2] != ("baseline",)):
            continue
        digest = sha256_file(path)
        if digest in seen:
            continue
        seen.add(digest)
        found.append((backend, path))
    specs = []
    names: dict[str, int] = {}
    for backend, path in found:
        base = f"{'onnx' if backend == 'onnxruntime' and path.suffix == '.onnx' else backend}-{_guess_precision(path)}"
        names[base] = names.get(base, 0) + 1
        specs.append((base, backend, path))
    spec_strings = []
    for base, backend, path in specs:
        name = base if names[base] == 1 else f"{base}-{path.relative_to(root).parts[0]}"
        spec_strings.append(f"{name}={backend}:{path}")
    if not spec_strings:
        raise ConfigError(
            f"{root}: no artifacts to validate (no .onnx, .xml or .engine files); run "
            f"`edgeresnext build --target {target.name}` first or pass --artifact NAME=PATH"
        )
    return artifacts_from_specs(spec_strings, target, threads)


def pick_primary(target: Target, artifacts: Sequence[ArtifactUnderTest]) -> str | None:
    """The artifact the target deploys: its backend at its precision (the last such), else None (the last)."""
    runnable = [a for a in artifacts if a.runnable]
    matches = [a for a in runnable if a.backend == target.backend and a.precision == target.precision]
    return matches[-1].name if matches else None


def find_sensitivity(root: str | Path) -> Any:
    """The quantization stage's per-layer sensitivity (``*sensitivity*.json`` under ``root``), if any."""
    import json

    for path in sorted(Path(root).rglob("*sensitivity*.json")):
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("%s: cannot read sensitivity data (%s)", path, err)
    return None
