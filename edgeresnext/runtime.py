"""What a device app imports: load a bundle, preprocess images exactly as in training, predict top-k labels.

```python
from edgeresnext.runtime import load_bundle

clf = load_bundle("build/cpu/bundle")          # checks manifest.json and the sha256 of every file
result = clf.predict("shoe.png", top_k=5)      # path, PIL image, uint8 array, or a list of them
print(result.labels, result.scores)
```

Needs numpy, Pillow and the one runtime the bundle's artifact runs on (``openvino``, ``onnxruntime``, or
``tensorrt`` with ``cuda-python``) — never torch, nncf or pydantic. Preprocessing is
:class:`edgeresnext.data.preprocess.Preprocess` rebuilt from the manifest: the same code training,
calibration and validation use.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnext.bundle import BundleError, read_labels, read_manifest, verify_bundle
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import BackendUnavailable, ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = ["BundleError", "Classifier", "Prediction", "load_bundle"]


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image, best first: ``labels[i]`` has probability ``scores[i]`` (softmax)."""

    labels: list[str]
    scores: list[float]
    indices: list[int]

    @property
    def label(self) -> str:
        return self.labels[0]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "scores": self.scores, "indices": self.indices}


# --------------------------------------------------------------------------------------------- sessions
class _Session:
    """One loaded artifact: ``run(batch)`` with a float32 NCHW batch inside the artifact's batch range."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# OpenVINO's CPU plugin runs float layers in bf16 by default on CPUs that have it (AVX512-BF16, AMX); the
# backend validates in f32 (edgeresnext.backends.openvino.compile_config), so the runtime does too.
OPENVINO_DEFAULT_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


class _OpenVINOSession(_Session):
    def __init__(self, path: Path, device: str, threads: int | None, info: dict[str, Any]) -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = dict(OPENVINO_DEFAULT_CONFIG)
        if info.get("hint"):  # the target's backend_options.openvino, recorded by the backend
            config["PERFORMANCE_HINT"] = str(info["hint"]).upper()
        threads = threads or info.get("threads")
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(core.read_model(str(path)), device, config)
        self.request = self.compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch})
        return np.asarray(self.request.get_output_tensor(0).data, dtype=np.float32).copy()


class _ONNXRuntimeSession(_Session):
    def __init__(self, path: Path, device: str, threads: int | None, info: dict[str, Any]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.upper() == "GPU" else ["CPUExecutionProvider"]
        )
        providers = [p for p in providers if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: batch})[0], dtype=np.float32)


class _TensorRTSession(_Session):
    """TensorRT 10/11 name-based I/O (``set_input_shape``/``set_tensor_address``/``execute_async_v3``), device
    memory through cuda-python. Engines run only on the TensorRT version and GPU that built them."""

    def __init__(self, path: Path, device: str, threads: int | None, info: dict[str, Any]) -> None:
        import tensorrt as trt

        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
        self.trt, self.cudart = trt, cudart
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendUnavailable(
                f"{path}: TensorRT {trt.__version__} could not deserialize the engine (built by "
                "another TensorRT version or for another GPU?)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result: tuple) -> Any:
        error, *values = result
        if int(error) != 0:
            raise BackendUnavailable(f"CUDA call failed: {self.cudart.cudaGetErrorString(error)[1]}")
        return values[0] if values else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        cudart, trt = self.cudart, self.trt
        self.context.set_input_shape(self.input_name, tuple(batch.shape))
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        out_dtype = trt.nptype(self.engine.get_tensor_dtype(self.output_name))
        in_dtype = trt.nptype(self.engine.get_tensor_dtype(self.input_name))
        host_in = np.ascontiguousarray(batch.astype(in_dtype, copy=False))
        host_out = np.empty(out_shape, dtype=out_dtype)
        d_in = self._check(cudart.cudaMalloc(host_in.nbytes))
        d_out = self._check(cudart.cudaMalloc(host_out.nbytes))
        try:
            kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._check(cudart.cudaMemcpyAsync(d_in, host_in.ctypes.data, host_in.nbytes, kind_h2d, self.stream))
            self.context.set_tensor_address(self.input_name, int(d_in))
            self.context.set_tensor_address(self.output_name, int(d_out))
            if not self.context.execute_async_v3(int(self.stream)):
                raise BackendUnavailable("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            self._check(cudart.cudaMemcpyAsync(host_out.ctypes.data, d_out, host_out.nbytes, kind_d2h, self.stream))
            self._check(cudart.cudaStreamSynchronize(self.stream))
        finally:
            cudart.cudaFree(d_in)
            cudart.cudaFree(d_out)
        return host_out.astype(np.float32)


_SESSIONS: dict[str, tuple[str, type[_Session]]] = {
    "openvino": ("openvino", _OpenVINOSession),
    "onnxruntime": ("onnxruntime", _ONNXRuntimeSession),
    "tensorrt": ("tensorrt", _TensorRTSession),
}


# --------------------------------------------------------------------------------------------- classifier
class Classifier:
    """A loaded bundle. ``predict`` takes images, ``logits`` takes preprocessed float32 NCHW batches."""

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], artifact: dict[str, Any], session: _Session) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.artifact = artifact
        self.session = session
        self.labels = read_labels(bundle_dir, manifest)
        fields = set(Preprocess.__dataclass_fields__)
        self.preprocess = Preprocess.from_dict(
            {k: v for k, v in manifest["preprocess"].items() if k in fields}, f"{bundle_dir}/manifest.json: preprocess"
        )
        shape = manifest["input"]["shape"]
        self.input_shape: tuple[int, int, int] = (shape[1], shape[2], shape[3])
        batch = manifest["input"].get("batch", {"min": 1, "max": 1})
        self.batch_range = (int(batch["min"]), int(batch["max"]))
        if shape[0] > 0:  # a static batch dimension
            self.batch_range = (shape[0], shape[0])

    @property
    def backend(self) -> str:
        return self.artifact["backend"]

    @property
    def precision(self) -> str:
        return self.artifact["precision"]

    def preprocess_images(self, images: list[Any]) -> np.ndarray:
        """Images (paths, PIL images, uint8 arrays) to the float32 NCHW batch the model takes."""
        arrays = [self.preprocess.image_to_array(_open_image(image)) for image in images]
        batch = np.stack(arrays).astype(np.float32, copy=False)
        if tuple(batch.shape[1:]) != self.input_shape:
            raise DataError(
                f"preprocessed images have shape {tuple(batch.shape[1:])}, the model takes "
                f"{self.input_shape} (C, H, W); the bundle's preprocess has resize={self.preprocess.resize}"
                f", crop={self.preprocess.crop}, so images must be {self.input_shape[2]}x"
                f"{self.input_shape[1]} already"
            )
        return batch

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits (N, num_classes) of a preprocessed float32 NCHW batch of any size."""
        batch = np.asarray(batch)
        if batch.dtype != np.float32 or batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape:
            raise DataError(
                f"expected a float32 batch of shape (N, {', '.join(map(str, self.input_shape))}), got "
                f"{batch.dtype} {batch.shape}"
            )
        low, high = self.batch_range
        outputs = []
        for start in range(0, len(batch), high):
            chunk = np.ascontiguousarray(batch[start : start + high])
            count = len(chunk)
            if count < low:  # a static or minimum batch: pad, then drop the padding's outputs
                chunk = np.concatenate([chunk, np.zeros((low - count, *chunk.shape[1:]), np.float32)])
            outputs.append(self.session.run(chunk)[:count])
        return np.concatenate(outputs) if outputs else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, images: Any, top_k: int = 5) -> Prediction | list[Prediction]:
        """Top-k labels and softmax scores. One image (path, PIL image, uint8 HW/HWC array, float32 CHW array)
        gives a :class:`Prediction`; a list of images or a float32 NCHW batch gives a list of them."""
        if not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k={top_k!r}; expected an integer >= 1")
        single = True
        if isinstance(images, np.ndarray) and images.dtype == np.float32:
            batch = images[None] if images.ndim == 3 else images
            single = images.ndim == 3
        else:
            if isinstance(images, list | tuple):
                single = False
                items = list(images)
            else:
                items = [images]
            if not items:
                return []
            batch = self.preprocess_images(items)
        logits = self.logits(batch).astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        k = min(top_k, probs.shape[1])
        results = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:k]
            results.append(
                Prediction(
                    labels=[self.labels[i] for i in order],
                    scores=[float(row[i]) for i in order],
                    indices=[int(i) for i in order],
                )
            )
        return results[0] if single else results

    def __repr__(self) -> str:
        model = self.manifest["model"]
        return (
            f"Classifier({self.bundle_dir}, {model['arch']}, {self.backend} {self.precision}, "
            f"{len(self.labels)} classes)"
        )


def _open_image(image: Any) -> Any:
    """A path is opened with Pillow (errors name the file); other images pass through to ``Preprocess``."""
    if isinstance(image, str | os.PathLike):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as handle:
                handle.load()
                return handle.copy()
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{image}: cannot read the image ({err})") from err
    if isinstance(image, np.ndarray) and image.ndim not in (2, 3):
        raise DataError(f"an image array must be HW or HWC uint8, got shape {image.shape}; pass a batch as a list")
    return image


def load_bundle(
    path: str | os.PathLike[str],
    backend: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    verify: bool = True,
) -> Classifier:
    """Open a bundle folder for inference.

    ``verify`` checks the manifest schema and the sha256 of every file first (a tampered or missing file is a
    :class:`BundleError`). ``backend`` picks one of the bundle's artifacts (default: the primary one);
    ``device`` is the runtime's device name (OpenVINO ``CPU``/``GPU``; default the one the bundle was built for).
    """
    bundle_dir = Path(path)
    manifest = verify_bundle(bundle_dir) if verify else read_manifest(bundle_dir)
    artifacts = manifest["artifacts"]
    if backend is None:
        artifact = artifacts[0]
    else:
        matching = [a for a in artifacts if a["backend"] == backend]
        if not matching:
            raise ConfigError(
                f"{bundle_dir}: no {backend!r} artifact; the bundle has "
                f"{', '.join(sorted({a['backend'] for a in artifacts}))}"
            )
        artifact = matching[0]
    if artifact["kind"] == "kit":
        raise BackendUnavailable(
            f"{bundle_dir / artifact['path']}: an on-device build kit, not an engine; build the "
            "engine on the device first (see the kit's README)"
        )
    module, session_class = _SESSIONS[artifact["backend"]]
    try:
        __import__(module)
    except ImportError as err:
        others = [a["backend"] for a in artifacts if a is not artifact]
        hint = f"; the bundle also has: {', '.join(others)} (load_bundle(..., backend=...))" if others else ""
        raise BackendUnavailable(
            f"{bundle_dir}: the {artifact['backend']} artifact needs the {module!r} package, "
            f"which is not installed ({err}){hint}"
        ) from err
    if device is None:
        device = manifest["device"]["target_device"] if artifact is artifacts[0] else "CPU"
        if artifact["backend"] == "openvino" and device not in ("CPU", "GPU", "NPU", "AUTO"):
            device = "CPU"
    session = session_class(bundle_dir / artifact["path"], device, threads, artifact.get("info", {}))
    classifier = Classifier(bundle_dir, manifest, artifact, session)
    logger.info("loaded %r", classifier)
    return classifier
