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

from edgeresnext.backends import Artifact, ArtifactInfo, Backend, PrecisionReport, Runner, RunOptions, option
from edgeresnext.onnx_io import ort_session

if TYPE_CHECKING:
    from edgeresnext.config import Target

NAME = "toy"
SPEC = "toy_backend:ToyBackend"


@dataclass(frozen=True)
class ToyOptions(RunOptions):
    threads: int | None = option(None, ge=1, recorded=True)
    flavour: Literal["plain", "fancy"] = option("plain", description="a key only the toy has", recorded=True)


class ToyRunner(Runner):
    def __init__(self, artifact: Artifact, options: ToyOptions) -> None:
        super().__init__(artifact, options)
        self.options: ToyOptions = options
        # ONNX Runtime reads the model from bytes: the .toy suffix means nothing to it.
        self.session = ort_session(Path(artifact.path).read_bytes(), options.threads)
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = tuple(self.session.get_inputs()[0].shape[1:])

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: batch})
        return logits

    def precision_report(self) -> PrecisionReport:
        return PrecisionReport(self.artifact.precision, self.artifact.backend, extra={"flavour": self.options.flavour})

    def close(self) -> None:
        self.session = None


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
