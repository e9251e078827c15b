"""The Runner both test-folder backends (tests/toy_backend.py, tests/device_backend.py) run their ONNX with: one ONNX
Runtime session made by edgeresnext's own :func:`~edgeresnext.onnx_io.ort_session`."""

from __future__ import annotations

import numpy as np

from edgeresnext.backends import Artifact, Runner, RunOptions
from edgeresnext.onnx_io import ort_session


class OrtRunner(Runner):
    """``model``: the ONNX file's path, or its bytes (a suffix ONNX Runtime does not know); ``threads``: intra-op
    threads (None: ONNX Runtime's default)."""

    def __init__(self, artifact: Artifact, options: RunOptions, model: object, threads: int | None) -> None:
        super().__init__(artifact, options)
        self.session = ort_session(model, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = tuple(self.session.get_inputs()[0].shape[1:])

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: batch})
        return logits

    def close(self) -> None:
        self.session = None
