"""What gets validated: the artifacts of a build (or files named on the command line) as runners, each with its
name, backend, precision and files; which of them the gates judge; the quantize stage's sensitivity record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeresnext.backends import backend_for_path, list_backends
from edgeresnext.errors import BackendUnavailable, ConfigError
from edgeresnext.validate.measure import RunnerLike, TorchRunner

if TYPE_CHECKING:
    from edgeresnext.config import Target


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

    @classmethod
    def skipped(
        cls, name: str, reason: str, files: Sequence[Path] = (), backend: str = "", precision: str = ""
    ) -> ArtifactUnderTest:
        """An artifact that cannot run here, and why."""
        return cls(name, None, list(files), backend, precision, skip_reason=reason)


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
            items.append(ArtifactUnderTest.skipped(name, str(err), files, backend=chosen))
            continue
        precision = getattr(getattr(runner, "artifact", None), "precision", "") or _guess_precision(path)
        items.append(ArtifactUnderTest(name=name, runner=runner, files=files, backend=chosen, precision=precision))
    return items


def _guess_precision(path: Path) -> str:
    """The precision of a model file given alone (``--artifact``), read from its graph: INT8 if it holds
    quantize nodes (Q/DQ ONNX; OpenVINO FakeQuantize layers or 8-bit integer constants), else FP32. A build's own
    artifacts never need this: their record (artifact.json) says what they were built as."""
    if path.suffix == ".onnx":
        from edgeresnext.onnx_io import load_onnx_safely

        graph = load_onnx_safely(path, load_external_data=False).graph
        return "int8" if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node) else "fp32"
    if path.suffix == ".xml":
        return "int8" if _ir_is_quantized(path) else "fp32"
    return "unknown"


def _ir_is_quantized(path: Path) -> bool:
    """Whether an OpenVINO IR's layers include FakeQuantize or constants stored as 8-bit integers."""
    import xml.etree.ElementTree as ET

    try:
        # The standard library parser expands no external entities and (expat >= 2.4.1) refuses entity bombs.
        for _event, element in ET.iterparse(path):  # noqa: S314
            if element.tag == "layer" and element.get("type") == "FakeQuantize":
                return True
            if element.tag == "data" and element.get("element_type") in ("i8", "u8"):
                return True
            element.clear()
    except ET.ParseError as err:
        raise ConfigError(f"{path}: not an OpenVINO IR (XML): {err}") from err
    return False


def pick_primary(target: Target, artifacts: Sequence[ArtifactUnderTest]) -> str:
    """The artifact the gates judge: the one the target deploys (its backend at its precision, the last such: a GPU
    host lists the stand-ins after it), else the last runnable one. The one place this is decided, for the build's
    validate stage, ``edgeresnext validate`` and :func:`~edgeresnext.validate.validate` alike."""
    runnable = [a for a in artifacts if a.runnable]
    if not runnable:
        raise ConfigError("nothing to validate: no artifact can run on this host")
    matches = [a for a in runnable if a.backend == target.backend and a.precision == target.precision]
    return (matches or runnable)[-1].name
