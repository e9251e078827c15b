"""What a device app imports: load a bundle, preprocess images exactly as in training, predict top-k labels.

```python
from edgeresnext.runtime import load_bundle

clf = load_bundle("build/cpu/bundle")          # checks manifest.json and the sha256 of every file
result = clf.predict("shoe.png", top_k=5)      # path, PIL image, uint8 array, or a list of them
print(result.labels, result.scores)
```

Needs numpy, Pillow and the one runtime the bundle's artifact runs on (``openvino``, ``onnxruntime``, or
``tensorrt`` with ``cuda-python``) — never torch, nncf, pydantic or onnx. Inference is the backend's own
:class:`~edgeresnext.backends.base.Runner` (``get_backend(name).load(...)``): the very code validation scored and
timed. Preprocessing is :class:`edgeresnext.data.preprocess.Preprocess` rebuilt from the manifest: the same code
training, calibration and validation use.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnext.backends import Runner, backend_facts, get_backend
from edgeresnext.bundle import BundleError, read_manifest, verify_bundle
from edgeresnext.bundle.manifest import BundleInputs, bundle_inputs
from edgeresnext.bundle.model import ArtifactEntry, Manifest
from edgeresnext.bundle.signature import check_signature, public_key_from
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


# --------------------------------------------------------------------------------------------- classifier
class Classifier:
    """A loaded bundle. ``predict`` takes images, ``logits`` takes preprocessed float32 NCHW batches of any size.

    Inference is ``runner`` (the backend's Runner); ``close()`` frees it, and ``with load_bundle(...) as clf:``
    closes on exit.
    """

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        artifact: ArtifactEntry,
        runner: Runner,
        inputs: BundleInputs | None = None,
    ) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.artifact = artifact
        self.runner = runner
        # Read and checked by the function `bundle verify` runs too: what verify passes, this loads.
        inputs = inputs or bundle_inputs(bundle_dir, manifest)
        self.labels = inputs.labels
        self.preprocess: Preprocess = inputs.preprocess
        self.input_shape: tuple[int, int, int] = inputs.input_shape
        # What runs in place of an artifact this host cannot run (load_bundle(..., stand_in=True)); None: itself.
        self.stand_in: str | None = None
        # The batch sizes the bundle was built and validated for; logits() takes any size (the runner splits).
        self.batch_range = inputs.batch_range

    def close(self) -> None:
        """Free the runtime's resources (session, compiled model, device memory)."""
        self.runner.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return self.artifact.backend

    @property
    def device_check(self) -> str | None:
        """An artifact built on the device (a TensorRT engine): ``checked``, ``failed`` or ``unchecked`` (see
        :func:`load_bundle`); None for other artifacts. Its backend reads the full record from the manifest entry
        (TensorRT: ``artifact.engine.device_check``)."""
        return device_check_status(self.artifact)

    @property
    def precision(self) -> str:
        return self.artifact.precision

    def preprocess_images(self, images: list[Any]) -> np.ndarray:
        """Images (paths, PIL images, uint8 arrays) to the float32 NCHW batch the model takes."""
        arrays = []
        for image in images:
            try:
                arrays.append(self.preprocess.image_to_array(_open_image(image)))
            except DataError as err:  # a size refused by the preprocessing: name the file it came from
                if isinstance(image, str | os.PathLike) and os.fspath(image) not in str(err):
                    raise DataError(f"{os.fspath(image)}: {err}") from err
                raise
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
        if not len(batch):
            return np.zeros((0, len(self.labels)), np.float32)
        return self.runner(batch)

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
        return (
            f"Classifier({self.bundle_dir}, {self.manifest.model.arch}, {self.backend} {self.precision}, "
            f"{len(self.labels)} classes)"
        )


def _open_image(image: Any) -> Any:
    """A path is decoded as the build decodes images (same formats, same pixel limit, errors name the file); other
    images pass through to ``Preprocess``."""
    if isinstance(image, str | os.PathLike):
        from edgeresnext.data.folder import decode_image

        return decode_image(image)
    if isinstance(image, np.ndarray) and image.ndim not in (2, 3):
        raise DataError(f"an image array must be HW or HWC uint8, got shape {image.shape}; pass a batch as a list")
    return image


def device_check_status(artifact: ArtifactEntry) -> str | None:
    """What the device check recorded for an artifact built on the device (None: not such an artifact)."""
    return _status(_device_check(artifact))


def _status(record: dict[str, Any] | None) -> str | None:
    return None if record is None else str(record.get("status") or "unchecked")


def _device_check(artifact: ArtifactEntry) -> dict[str, Any] | None:
    """The device step's check of a manifest entry, as its backend reads it (None: not built on a device, or a
    backend not registered here)."""
    backend = backend_facts(artifact.backend)
    return backend.device_check(artifact.to_json()) if backend is not None else None


def _chosen_artifact(bundle_dir: Path, manifest: Manifest, backend: str | None) -> ArtifactEntry:
    """The manifest entry of the artifact to load: the primary one, or the first of ``backend``."""
    artifacts = manifest.artifacts
    if backend is None:
        return artifacts[0]
    matching = [a for a in artifacts if a.backend == backend]
    if not matching:
        raise ConfigError(
            f"{bundle_dir}: no {backend!r} artifact; the bundle has {', '.join(sorted({a.backend for a in artifacts}))}"
        )
    return matching[0]


def _check_loadable(bundle_dir: Path, artifact: ArtifactEntry, allow_failed_check: bool) -> None:
    """Refuse what the device has not built yet (a kit) and what failed its device check; warn about an unchecked
    one. The artifact's backend says which is which."""
    where = bundle_dir / artifact.path
    not_yet = get_backend(artifact.backend).not_loadable_yet(bundle_dir, artifact.to_json())
    if not_yet is not None:
        raise BackendUnavailable(not_yet)
    found = _device_check(artifact)
    check, status = found or {}, _status(found)
    if status == "failed" and not allow_failed_check:
        said = ((check.get("gate") or {}).get("message")) or "see the manifest"
        raise BundleError(
            f"{where}: this engine FAILED its device check ({said}); it is refused. Rebuild it "
            f"(`edgeresnext bundle build-engine {bundle_dir}`), or load_bundle(..., allow_failed_check=True) to run it "
            "anyway"
        )
    if status == "unchecked":
        reason = check.get("reason") or "no device check recorded"
        logger.warning("%s: this engine is UNCHECKED on the device (%s)", where, reason)


def _loadable(bundle_dir: Path, artifact: ArtifactEntry) -> bool:
    """Whether the manifest entry ``artifact`` may load (its backend registered here, and nothing left for the
    device to build)."""
    backend = backend_facts(artifact.backend)
    return backend is not None and backend.not_loadable_yet(bundle_dir, artifact.to_json()) is None


def _runtime_device(manifest: Manifest, artifact: ArtifactEntry, runtime: Any) -> str:
    """The primary artifact's target device when the runtime knows that name (not ``jetson-orin``, say), else the
    runtime's default."""
    device = manifest.device.target_device if artifact is manifest.primary else runtime.default_device
    return device if device in runtime.devices else runtime.default_device


def _stand_in_classifier(
    bundle_dir: Path, manifest: Manifest, artifact: ArtifactEntry, threads: int | None, inputs: BundleInputs
) -> Classifier:
    """A classifier running the first stand-in the artifact's backend names (the files it is built from, run by
    another backend here); a BundleError when it has none."""
    # What the device step recorded (an engine's source ONNX) is the backend's to read.
    backend = get_backend(artifact.backend)
    stand_ins = backend.stand_ins(backend.artifact_from_manifest(bundle_dir, artifact.to_json()))
    if not stand_ins:
        raise BundleError(f"{bundle_dir}: the {artifact.backend} {artifact.kind} artifact has no host stand-in")
    name, chosen = stand_ins[0]
    runtime = get_backend(chosen.backend)
    runner = runtime.load(chosen, runtime.run_options(threads=threads))
    classifier = Classifier(bundle_dir, manifest, artifact, runner, inputs)
    classifier.stand_in = name
    logger.warning("%s: running the host stand-in %s, not the %s artifact itself", bundle_dir, name, artifact.kind)
    return classifier


def load_bundle(
    path: str | os.PathLike[str],
    backend: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    verify: bool = True,
    allow_failed_check: bool = False,
    stand_in: bool = False,
    public_key: str | os.PathLike[str] | None = None,
) -> Classifier:
    """Open a bundle folder for inference.

    ``verify`` checks the manifest schema and the sha256 of every file first (a tampered or missing file is a
    :class:`BundleError`). ``backend`` picks one of the bundle's artifacts (default: the primary one);
    ``device`` is the runtime's device name (OpenVINO ``CPU``/``GPU``/``NPU``, ONNX Runtime ``CPU``/``GPU``; default
    the one the bundle was built for) and ``threads`` its thread count (default: what the artifact recorded).
    Options the build recorded with the artifact (OpenVINO's hint, ONNX Runtime's graph optimisation) apply.

    A TensorRT engine built on the device carries its device check (the engine run on the bundle's check set and
    compared with the host): ``failed`` is refused (:class:`BundleError`) unless ``allow_failed_check``, because
    its predictions disagree with what the host validated; ``unchecked`` (no check set, no trtexec) loads with a
    warning; ``checked`` loads. :attr:`Classifier.device_check` says which.

    ``stand_in``: run what stands in for the artifact on a host that cannot run it, the row the validation report
    labels a stand-in (a Jetson engine: its FP16 Q/DQ ONNX in ONNX Runtime), e.g. to try the Triton repository of a
    Jetson bundle on a workstation. Never the device's own figures: :attr:`Classifier.stand_in` names what runs.

    ``public_key`` (a PEM file; default ``$EDGERESNEXT_BUNDLE_PUBLIC_KEY``): when one is configured, the bundle must
    carry a signature made with its private key over every file (``bundle.sig``, checked with the model-signing
    package, ``pip install 'edgeresnext[sign]'``); an unsigned bundle or a mismatch is a :class:`BundleError`, whatever
    ``verify`` says.
    """
    bundle_dir = Path(path)
    key = public_key_from(public_key)
    if key is not None:
        manifest = check_signature(bundle_dir, key)
    else:
        manifest = verify_bundle(bundle_dir) if verify else read_manifest(bundle_dir)
    inputs = bundle_inputs(bundle_dir, manifest)  # before a runtime is started
    artifact = _chosen_artifact(bundle_dir, manifest, backend)
    if stand_in:
        return _stand_in_classifier(bundle_dir, manifest, artifact, threads, inputs)
    _check_loadable(bundle_dir, artifact, allow_failed_check)
    runtime = get_backend(artifact.backend)
    if device is None:
        device = _runtime_device(manifest, artifact, runtime)
    # What the device step recorded (an engine's TensorRT version and SM) is checked by the backend before it loads.
    recorded = runtime.artifact_from_manifest(bundle_dir, artifact.to_json())
    try:
        runner = runtime.load(recorded, runtime.run_options(info=recorded.info, device=device, threads=threads))
    except BackendUnavailable as err:
        others = [a.backend for a in manifest.artifacts if a is not artifact and _loadable(bundle_dir, a)]
        hint = f"; the bundle also has: {', '.join(others)} (load_bundle(..., backend=...))" if others else ""
        raise BackendUnavailable(f"{bundle_dir}: {err}{hint}") from err
    classifier = Classifier(bundle_dir, manifest, artifact, runner, inputs)
    logger.info("loaded %r", classifier)
    return classifier
