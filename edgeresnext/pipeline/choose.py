"""What a build's validation measures: one chooser for the build's validate stage and for ``edgeresnext validate``
on a finished build, so both give the same rows under the same names.

The rows, in order: the FP32 ONNX and the Q/DQ ONNX in ONNX Runtime; the target's artifact (or why it cannot run
here) with its own runtime's float build beside it (compiled from the FP32 ONNX with the target's options, so the
speed-up is the quantization's alone); and what stands in for the artifact on a host that cannot run it. For a
bundle that will carry DeepStream configs, the report's DeepStream section (:func:`measure_serving_exports`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeresnext.errors import ConfigError
from edgeresnext.quantize import QDQ_ONNX

if TYPE_CHECKING:
    from edgeresnext.backends import Artifact, Backend
    from edgeresnext.config import Target
    from edgeresnext.models import ModelMeta
    from edgeresnext.validate import ArtifactUnderTest
    from edgeresnext.validate.deepstream import DeepStreamPreprocessing

# A build folder's layout: each stage's folder under build/<target>/, and the files the chooser reads.
STAGE_FOLDERS = {
    "model": "model",
    "export": "export",
    "quantize": "quantize",
    "lint": "lint",
    "compile": "compile",
    "validate": "validate",
    "bundle": "bundle",
}
MODEL_FILE = "model.safetensors"
FP32_ONNX = "model_fp32.onnx"
SENSITIVITY_JSON = "sensitivity.json"
ARTIFACT_JSON = "artifact.json"


@dataclass(frozen=True)
class BuildFiles:
    """The files of a build that validation reads: the model, both ONNX files, the compiled artifact's record."""

    model: Path
    fp32_onnx: Path
    qdq_onnx: Path | None  # None: the target is not INT8
    artifact_json: Path
    sensitivity_json: Path | None  # None: the quantize stage wrote no per-layer sensitivity

    @classmethod
    def in_folder(cls, root: Path, target: Target) -> BuildFiles:
        """The files of the finished build in ``root`` (``build/<target>/``); ConfigError naming the first one
        missing and the command that makes it."""
        root = Path(root)
        quantize = root / STAGE_FOLDERS["quantize"]
        sensitivity = quantize / SENSITIVITY_JSON
        files = cls(
            model=root / STAGE_FOLDERS["model"] / MODEL_FILE,
            fp32_onnx=root / STAGE_FOLDERS["export"] / FP32_ONNX,
            qdq_onnx=quantize / QDQ_ONNX if target.precision == "int8" else None,
            artifact_json=root / STAGE_FOLDERS["compile"] / ARTIFACT_JSON,
            sensitivity_json=sensitivity if sensitivity.is_file() else None,
        )
        for path in (files.model, files.fp32_onnx, files.qdq_onnx, files.artifact_json):
            if path is not None and not path.is_file():
                raise ConfigError(
                    f"{path}: not found; `edgeresnext validate` re-validates a finished build: run "
                    f"`edgeresnext build --target {target.name}` first, or pass --artifact NAME=PATH"
                )
        return files


def choose_artifacts(
    files: BuildFiles, target: Target, baseline_dir: Path | None = None, threads: int | None = None
) -> list[ArtifactUnderTest]:
    """The rows a build is validated on (see the module docstring). ``baseline_dir``: where the runtime's float
    build is compiled (None: no float baseline). ``threads`` overrides the target's thread count."""
    from edgeresnext.backends import Artifact, get_backend

    items = [_onnx_row("onnx-fp32 (onnxruntime)", files.fp32_onnx, "fp32", target, threads)]
    if files.qdq_onnx is not None:
        items.append(_onnx_row("qdq-int8 (onnxruntime)", files.qdq_onnx, "int8", target, threads))
    artifact = Artifact.load(files.artifact_json)
    backend = get_backend(artifact.backend)
    if backend.runs_source_as_is(artifact):
        return items  # the artifact is the file of one of the rows above, already validated
    reason = _why_not_runnable(backend, artifact)
    if reason is None:
        baseline = _float_baseline_row(backend, artifact, files, target, baseline_dir, threads)
        items += [baseline] if baseline is not None else []
        items.append(_loaded_row(backend, artifact, artifact, target, threads))
    else:
        items.append(_skipped_row(artifact, reason))
    items += _stand_in_rows(backend, artifact, target, threads)
    return items


def _onnx_row(
    name: str, path: Path, precision: str, target: Target, threads: int | None, backend: str = "onnxruntime"
) -> ArtifactUnderTest:
    from edgeresnext.validate import ArtifactUnderTest, runner_from_file

    return ArtifactUnderTest(name, runner_from_file(path, target, backend, threads), [path], backend, precision)


def _why_not_runnable(backend: Backend, artifact: Artifact) -> str | None:
    return backend.awaits_device(artifact) or backend.available()


def _loaded_row(
    backend: Backend, artifact: Artifact, named: Artifact, target: Target, threads: int | None
) -> ArtifactUnderTest:
    from edgeresnext.validate import ArtifactUnderTest

    runner = backend.load(artifact, backend.run_options(target, threads=threads))
    return ArtifactUnderTest(
        f"{named.backend}-{named.precision}",
        runner,
        [Path(p) for p in artifact.files if Path(p).is_file()],
        artifact.backend,
        artifact.precision,
        info=runner.precision_report().to_dict(),
    )


def _float_baseline_row(
    backend: Backend,
    artifact: Artifact,
    files: BuildFiles,
    target: Target,
    baseline_dir: Path | None,
    threads: int | None,
) -> ArtifactUnderTest | None:
    """The same runtime's float build of the FP32 ONNX, with the target's options (None: the artifact is itself
    float, the runtime has none, or no folder was given)."""
    precision = backend.float_baseline
    if baseline_dir is None or precision in (None, artifact.precision):
        return None
    float_target = target.model_copy(update={"precision": precision})
    baseline = backend.compile(files.fp32_onnx, float_target, baseline_dir)
    return _loaded_row(backend, baseline, baseline, target, threads)


def _skipped_row(artifact: Artifact, reason: str) -> ArtifactUnderTest:
    from edgeresnext.validate import ArtifactUnderTest

    files = [Path(p) for p in artifact.files if Path(p).is_file()]
    return ArtifactUnderTest.skipped(
        f"{artifact.backend}-{artifact.precision}", reason, files, artifact.backend, artifact.precision
    )


def _stand_in_rows(
    backend: Backend, artifact: Artifact, target: Target, threads: int | None
) -> list[ArtifactUnderTest]:
    """What stands in for the artifact on a host that cannot run it (the backend's stand-ins), validated on the
    first ``validate.stand_in_images`` images (a stand-in's cost)."""
    rows = []
    for name, stand_in in backend.stand_ins(artifact):
        if Path(stand_in.path).is_file():
            row = _onnx_row(name, Path(stand_in.path), stand_in.precision, target, threads, stand_in.backend)
            row.images = target.validate_.stand_in_images
            rows.append(row)
    return rows


def measure_serving_exports(
    files: BuildFiles, target: Target, meta: ModelMeta, threads: int | None = None
) -> DeepStreamPreprocessing | None:
    """What the report measures for the serving engines the bundle will carry configs for: nvinfer's preprocessing
    on the validation images when the backend exports DeepStream configs for the artifact (a Jetson kit), else None."""
    from edgeresnext.backends import Artifact, get_backend
    from edgeresnext.data.validation import validation_images
    from edgeresnext.validate.deepstream import measure_deepstream

    artifact = Artifact.load(files.artifact_json)
    if not get_backend(artifact.backend).exports_deepstream(artifact):
        return None
    images = validation_images(target.data, list(meta.class_names or []))
    return measure_deepstream(files.fp32_onnx, images, meta.preprocess, threads)
