"""Top-1 of a Fashion-MNIST checkpoint's FP32 ONNX and of its PTQ Q/DQ ONNX on the full test set (10,000),
run in ONNX Runtime and in OpenVINO. Calibration: 300 class-balanced training images (seed 0).

    .venv/bin/python bench/ptq_accuracy.py edgeresnext/weights/fashion_mnist_resnext20_4x8d.safetensors
    (add --bias-correction to turn NNCF's fast bias correction on; --int8 FILE.onnx measures that Q/DQ ONNX,
    e.g. the output of `edgeresnext quantize --method qat`, instead of making one by PTQ)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def top1(predict, images: np.ndarray, labels: np.ndarray) -> float:
    logits = np.concatenate([predict(images[i : i + 1000]) for i in range(0, len(images), 1000)])
    return float(np.mean(logits.argmax(1) == labels))


def main(checkpoint: str, bias_correction: bool = False, int8: str | None = None) -> int:
    import openvino as ov

    from edgeresnext.config import QuantSpec
    from edgeresnext.data import load_dataset
    from edgeresnext.data.calibration import load_calibration_images, write_calibration_set
    from edgeresnext.export import onnx_from_torch, onnx_runner
    from edgeresnext.models import load_checkpoint
    from edgeresnext.quantize.ptq import quantize_ptq

    if int8 and not Path(int8).is_file():
        raise SystemExit(f"error: {int8}: no such file (expected a Q/DQ ONNX made from {checkpoint})")
    model = load_checkpoint(checkpoint)
    preprocess = model.meta.preprocess
    scratch = Path(tempfile.mkdtemp(prefix="ptq-accuracy-"))
    test = load_dataset("fashion-mnist", split="test")
    images = np.stack([preprocess.image_to_array(image) for image in test.images])
    onnx_from_torch(model, scratch / "fp32.onnx")
    files = {"fp32": scratch / "fp32.onnx", "int8": Path(int8) if int8 else scratch / "int8.onnx"}
    if not int8:
        write_calibration_set(scratch / "calib", count=300, seed=0)
        calib = load_calibration_images(scratch / "calib", preprocess, 300)
        began = time.perf_counter()
        quantize_ptq(model, calib, QuantSpec(bias_correction=bias_correction), files["int8"])
        print(f"ptq {time.perf_counter() - began:.1f} s")
    core = ov.Core()
    for name, path in files.items():
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        print(
            f"{name}: ONNX Runtime top-1 {top1(onnx_runner(path), images, test.labels):.4f}  "
            f"OpenVINO top-1 {top1(lambda batch, net=compiled: net(batch)[0], images, test.labels):.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--bias-correction", action="store_true", help="NNCF fast bias correction on")
    parser.add_argument("--int8", default=None, metavar="ONNX", help="measure this Q/DQ ONNX instead of making one")
    args = parser.parse_args()
    sys.exit(main(args.checkpoint, args.bias_correction, args.int8))
