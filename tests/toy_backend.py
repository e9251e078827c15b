"""A backend that lives in the test folder alone: ONNX Runtime's CPU session under another name, with its own
artifact kind (``toy``), file suffix (``.toy``), display name and a target key no shipped backend has.

tests/test_toy_backend.py registers it (one registry entry) and carries it through build, ``validate``, bundle,
``bundle verify`` and ``load_bundle``: if any of those needed an edit elsewhere for a new backend (a hand-listed
options section, schema enum or package list), that test fails.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from ort_runner import OrtRunner

from edgeresnext.backends import Artifact, ArtifactInfo, Backend, PrecisionReport, Runner, RunOptions, option

if TYPE_CHECKING:
    from edgeresnext.config import Target

NAME = "toy"
SPEC = "toy_backend:ToyBackend"


@dataclass(frozen=True)
class ToyOptions(RunOptions):
    threads: int | None = option(None, ge=1, recorded=True)
    flavour: Literal["plain", "fancy"] = option("plain", description="a key only the toy has", recorded=True)


class ToyRunner(OrtRunner):
    def __init__(self, artifact: Artifact, options: ToyOptions) -> None:
        # ONNX Runtime reads the model from bytes: the .toy suffix means nothing to it.
        super().__init__(artifact, options, Path(artifact.path).read_bytes(), options.threads)
        self.options: ToyOptions = options

    def precision_report(self) -> PrecisionReport:
        return PrecisionReport(self.artifact.precision, self.artifact.backend, extra={"flavour": self.options.flavour})


class ToyBackend(Backend):
    name = NAME
    display_name = "Toy Runtime"
    kinds = ("toy",)
    suffixes = (".toy",)
    package = "onnxruntime"
    options_type = ToyOptions

    def compile_input(self, target: Target) -> str:
        return "fp32"  # the toy runs float models only

    def io_signature(self, artifact: Artifact) -> dict[str, Any]:
        from edgeresnext.onnx_io import onnx_signature

        return onnx_signature(artifact.path)  # a .toy file is an ONNX model

    def _compile_impl(
        self, onnx_path: Path, target: Target, out_dir: Path, calibration: np.ndarray | None = None
    ) -> Artifact:
        dest = out_dir / "model.toy"
        shutil.copyfile(onnx_path, dest)
        options = target.backend_options.toy
        info = ArtifactInfo(source_onnx=str(onnx_path), extra={"threads": options.threads, "flavour": options.flavour})
        return Artifact(NAME, target.precision, "toy", dest, [dest], info)

    def _load_impl(self, artifact: Artifact, options: RunOptions) -> Runner:
        return ToyRunner(artifact, options)
