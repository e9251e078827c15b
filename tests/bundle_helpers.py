"""Builds real bundles for the bundle/runtime/C++ tests: the model exported with ``onnx_from_torch``, compiled
by the OpenVINO and ONNX Runtime backends for FP32 targets, then bundled by :func:`bundle_from_artifacts`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeresnext.backends import get_backend
from edgeresnext.bundle import bundle_from_artifacts
from edgeresnext.config import Target, target_from_dict
from edgeresnext.export import onnx_from_torch
from edgeresnext.models import ModelMeta

TINY_ARCH = "resnext11_4x8d"

SUMMARY = {"top1": np.float64(0.91), "top1_drop": 0.0, "latency_ms_p50": 0.4}


def fp32_target(backend: str) -> Target:
    return target_from_dict(
        {
            "name": f"test-{backend}-fp32",
            "backend": backend,
            "precision": "fp32",
            "quant": {"method": "none"},
            "input": {"batch": {"min": 1, "opt": 1, "max": 8}},
        }
    )


def make_bundles(model, work: Path, summary: dict | None = None) -> dict[str, Path]:
    """``{"openvino": <bundle dir>, "onnxruntime": <bundle dir>}`` for ``model`` (needs ``model.meta``).

    The OpenVINO bundle also carries the ONNX Runtime artifact (a second artifact travelling along)."""
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = onnx_from_torch(model, work / "model.onnx")
    summary = SUMMARY if summary is None else summary
    bundles = {}
    artifacts = {}
    for backend in ("openvino", "onnxruntime"):
        target = fp32_target(backend)
        artifacts[backend] = get_backend(backend).compile(onnx_path, target, work / backend / "compile")
    bundles["openvino"] = bundle_from_artifacts(
        work / "openvino" / "bundle",
        [artifacts["openvino"], artifacts["onnxruntime"]],
        model.meta,
        summary,
        fp32_target("openvino"),
    )
    bundles["onnxruntime"] = bundle_from_artifacts(
        work / "onnxruntime" / "bundle", artifacts["onnxruntime"], model.meta, summary, fp32_target("onnxruntime")
    )
    return bundles


def tiny_meta(**extra) -> ModelMeta:
    """Metadata of an untrained Fashion-MNIST-sized model (10 classes c0..c9, 1x28x28)."""
    from edgeresnext.data.fashion_mnist import PREPROCESS

    return ModelMeta(
        arch=TINY_ARCH,
        num_classes=10,
        in_channels=1,
        preprocess=PREPROCESS,
        class_names=[f"c{i}" for i in range(10)],
        input_size=28,
        **extra,
    )


def tiny_onnxruntime_bundle(work: Path) -> Path:
    """A real ONNX Runtime FP32 bundle of an untrained resnext11_4x8d (seeded), built in ``work``."""
    import torch

    from edgeresnext.models import create

    torch.manual_seed(0)
    model = create(TINY_ARCH, num_classes=10, in_channels=1).eval()
    onnx_path = onnx_from_torch(model, work / "model.onnx", input_shape=(1, 28, 28))
    target = fp32_target("onnxruntime")
    artifact = get_backend("onnxruntime").compile(onnx_path, target, work / "compile")
    return bundle_from_artifacts(work / "bundle", artifact, tiny_meta(), SUMMARY, target)


def key_pair(folder: Path, name: str, password: bytes | None = None) -> tuple[Path, Path]:
    """A P-256 private key (PEM, encrypted with ``password`` if given) and its public key, as `openssl ecparam` and
    `openssl ec -pubout` write them: ``(<name>.key, <name>.pub)`` in ``folder``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    private = folder / f"{name}.key"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public = folder / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def reseal(bundle: Path, name: str) -> None:
    """Record ``name``'s new sha256 and size in manifest.json (listing it if it is new), as whoever edits a bundle's
    files can: the sha256 values catch accidents, not this."""
    import hashlib
    import json

    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = next((f for f in manifest["files"] if f["path"] == name), None)
    if entry is None:
        entry = {"path": name}
        manifest["files"].append(entry)
    entry["sha256"] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    entry["bytes"] = (bundle / name).stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
