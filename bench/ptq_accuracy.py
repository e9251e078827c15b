"""Top-1 of a Fashion-MNIST checkpoint's FP32 ONNX and of its PTQ Q/DQ ONNX on the full test set (10,000),
run in ONNX Runtime and in OpenVINO. Calibration: 300 class-balanced training images (seed 0).

    .venv/bin/python bench/ptq_accuracy.py edgeresnext/weights/fashion_mnist_resnext20_4x8d.safetensors
    (add --bias-correction to turn NNCF's fast bias correction on)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def top1(predict, images: np.ndarray, labels: np.ndarray) -> float:
    logits = np.concatenate([predict(images[i:i + 1000]) for i in range(0, len(images), 1000)])
    return float(np.mean(logits.argmax(1) == labels))


def main(checkpoint: str, bias_correction: bool = False) -> int:
    import openvino as ov

    from edgeresnext.config import QuantSpec
    from edgeresnext.data import load_dataset
    from edgeresnext.data.calibration import load_calibration_images, write_calibration_set
    from edgeresnext.export import onnx_from_torch, onnx_runner
    from edgeresnext.models import load_checkpoint
    from edgeresnext.quantize.ptq import quantize_ptq

    model = load_checkpoint(checkpoint)
    preprocess = model.meta.preprocess
    scratch = Path(tempfile.mkdtemp(prefix="ptq-accuracy-"))
    write_calibration_set(scratch / "calib", count=300, seed=0)
    calib = load_calibration_images(scratch / "calib", preprocess, 300)
    test = load_dataset("fashion-mnist", split="test")
    images = np.stack([preprocess.image_to_array(image) for image in test.images])
    onnx_from_torch(model, scratch / "fp32.onnx")
    began = time.perf_counter()
    quantize_ptq(model, calib, QuantSpec(fast_bias_correction=bias_correction), scratch / "int8.onnx")
    print(f"ptq {time.perf_counter() - began:.1f} s")
    core = ov.Core()
    for name in ("fp32", "int8"):
        compiled = core.compile_model(str(scratch / f"{name}.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        print(f"{name}: ONNX Runtime top-1 {top1(onnx_runner(scratch / f'{name}.onnx'), images, test.labels):.4f}  "
              f"OpenVINO top-1 {top1(lambda batch, net=compiled: net(batch)[0], images, test.labels):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--bias-correction", action="store_true", help="NNCF fast bias correction on")
    args = parser.parse_args()
    sys.exit(main(args.checkpoint, args.bias_correction))
