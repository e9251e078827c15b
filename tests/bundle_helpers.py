"""Builds real bundles for the bundle/runtime/C++ tests: the shipped model exported to ONNX, converted to an
OpenVINO IR (FP32) or kept as ONNX for ONNX Runtime, then bundled by :func:`bundle_from_artifacts`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeresnext.backends.base import Artifact
from edgeresnext.bundle import bundle_from_artifacts


def onnx_from_model(model, path: Path) -> Path:
    """FP32 ONNX with a dynamic batch (input ``input``, output ``logits``)."""
    import torch

    meta = model.meta
    example = torch.zeros(1, meta.in_channels, meta.input_size, meta.input_size)
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path


def ir_from_onnx(onnx_path: Path, out_dir: Path) -> Artifact:
    import openvino as ov

    xml = out_dir / "model.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return Artifact(backend="openvino", precision="fp32", kind="ir", path=xml, files=[xml, xml.with_suffix(".bin")])


def make_bundles(model, work: Path, summary: dict | None = None) -> dict[str, Path]:
    """``{"openvino": <bundle dir>, "onnxruntime": <bundle dir>}`` for ``model`` (needs ``model.meta``)."""
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = onnx_from_model(model, work / "model.onnx")
    ir = ir_from_onnx(onnx_path, work)
    onnx_artifact = Artifact(backend="onnxruntime", precision="fp32", kind="onnx", path=onnx_path, files=[onnx_path])
    summary = summary if summary is not None else {"top1": np.float64(0.91), "top1_drop": 0.0, "latency_ms_p50": 0.4}
    return {
        "openvino": bundle_from_artifacts(work / "openvino" / "bundle", [ir, onnx_artifact], model.meta, summary),
        "onnxruntime": bundle_from_artifacts(work / "onnxruntime" / "bundle", onnx_artifact, model.meta, summary),
    }
