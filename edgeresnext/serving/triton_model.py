"""The end-to-end model of a Triton repository written by ``edgeresnext bundle triton``: image bytes in, the bundle's
own preprocessing and Runner (:func:`edgeresnext.runtime.load_bundle`), softmax scores out.

This file is copied verbatim into ``<repository>/<name>_images/1/model.py`` and run by Triton's Python backend; the
bundle it serves is a verified copy in ``1/bundle/``. The server's Python must import edgeresnext and the bundle's
runtime: installed into the server's Python, or in the site-packages the server's ``PYTHONPATH`` names.

- Input ``IMAGE``: UINT8 ``[batch, bytes]``, each row one encoded image file (PNG, JPEG, BMP, WebP, GIF, TIFF, PNM: the
  formats and pixel limit of the build), rows zero-padded to the longest one of the request (image formats end at
  their own end marker or size, so the padding is never read).
- Output ``SCORES``: FP32 ``[batch, classes]``, the probabilities ``load_bundle(...).predict`` gives, class i = line
  i of labels.txt. Asked for with ``class_count=K`` (Triton's classification extension, ``label_filename``), it
  comes back as the top K ``"score:index:label"`` strings, best first.

A request whose image cannot be read (not an image, truncated, a decompression bomb, too small for the bundle's
resize) gets Triton's error with the reason; the other requests of the batch are answered.

numpy 2: tensors cross with dlpack (``np.from_dlpack``, ``pb_utils.Tensor.from_dlpack``). ``as_numpy()`` and
``pb_utils.Tensor(name, array)`` mis-convert buffers in the Python backend of Triton 2.51 with numpy 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# The backend's stub starts Python isolated (PYTHONPATH is not read), but the server's environment reaches it: the
# PYTHONPATH the server was started with names the site-packages holding edgeresnext, numpy and the runtime.
for _entry in reversed([e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]):
    if _entry not in sys.path:
        sys.path.insert(1, _entry)
sys.dont_write_bytecode = True  # the modules imported below write no __pycache__ beside themselves

import numpy as np  # noqa: E402 (after the path above)
import triton_python_backend_utils as pb_utils  # noqa: E402

IMAGE = "IMAGE"
SCORES = "SCORES"


def _error(message: str, bad_request: bool = True):
    """Triton's error for a response: the client's fault (HTTP 400) where this backend can say so, else 500."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if bad_request else None
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from edgeresnext.runtime import load_bundle

        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / str(args["model_version"]) / params.get("bundle", "bundle")
        self.classifier = load_bundle(
            folder, backend=params.get("backend") or None, stand_in=params.get("stand_in") == "true"
        )
        self.num_classes = len(self.classifier.labels)

    def _inputs(self, request) -> np.ndarray:
        """The request's images, decoded and preprocessed as the bundle says (float32 NCHW)."""
        from edgeresnext.data.folder import decode_image

        rows = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, IMAGE))
        images = [decode_image(row.tobytes(), f"{IMAGE}[{index}]") for index, row in enumerate(rows)]
        return self.classifier.preprocess_images(images)

    def _scores(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities (float32), as predict computes them (float64, rounded once to float32)."""
        scores = np.zeros((len(batch), self.num_classes), np.float32)
        for row, prediction in zip(scores, self.classifier.predict(batch, top_k=self.num_classes), strict=True):
            row[prediction.indices] = prediction.scores
        return scores

    def execute(self, requests: list) -> list:
        from edgeresnext.errors import EdgeResNeXtError

        batches: list[np.ndarray | str] = []
        for request in requests:
            try:
                batches.append(self._inputs(request))
            except EdgeResNeXtError as err:  # this request's images: refused with the reason, the others answered
                batches.append(str(err))
        good = [batch for batch in batches if not isinstance(batch, str)]
        try:
            scores = self._scores(np.concatenate(good)) if good else np.zeros((0, self.num_classes), np.float32)
        except Exception as err:  # a runtime failure: every request of the batch gets it, the server stays up
            message = f"inference failed: {type(err).__name__}: {err}"
            return [
                pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)) for _ in requests
            ]
        responses, start = [], 0
        for batch in batches:
            if isinstance(batch, str):
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=_error(batch)))
                continue
            part = np.ascontiguousarray(scores[start : start + len(batch)])
            start += len(batch)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor.from_dlpack(SCORES, part)]))
        return responses

    def finalize(self) -> None:
        self.classifier.close()
