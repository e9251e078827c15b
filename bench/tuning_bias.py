"""How much tuning the float fallback on the FP32 model's own training images understates the INT8 top-1 drop.

The fallback used to decide on 500 class-balanced Fashion-MNIST *training* images (seed 1), images the shipped model
was trained on. This measures the INT8 drop (FP32 top-1 minus INT8 top-1, ONNX Runtime, same preprocessing) on:

- ``train-500``: that old default sample;
- ``train-all``: the whole training split (60,000; the shipped weights saw every one of them);
- ``holdout-5000``: the 1-in-12 part of the training split now held out of training (the new default tuning set;
  the *shipped* weights predate the hold-out and saw these too);
- ``test``: the whole test split (10,000, never trained on), which the gate judges.

The bias is ``drop(train-all) - drop(test)`` with the paired intervals of each (edgeresnext.stats). With ``--int8`` it
measures that Q/DQ ONNX (e.g. ``build/cpu/quantize/model.qdq.onnx``); otherwise it makes one by PTQ on 300
class-balanced training images (seed 0), as ``bench/ptq_accuracy.py`` does.

    .venv/bin/python -m bench.tuning_bias --out bench/tuning_bias.json [--int8 build/cpu/quantize/model.qdq.onnx]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHIPPED = "edgeresnext/weights/fashion_mnist_resnext20_4x8d.safetensors"


def _correct(runner, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    logits = np.concatenate([runner(images[i : i + 1000]) for i in range(0, len(images), 1000)])
    return logits.argmax(1) == labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=SHIPPED)
    parser.add_argument("--int8", help="a Q/DQ ONNX of the checkpoint (default: PTQ here)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from edgeresnext import stats
    from edgeresnext.config import QuantSpec
    from edgeresnext.data import load_dataset
    from edgeresnext.data.calibration import balanced_indices, load_calibration_images, write_calibration_set
    from edgeresnext.data.validation import TUNING_SEED, tuning_holdout_indices
    from edgeresnext.environment import cpu_model
    from edgeresnext.export import onnx_from_torch, onnx_runner
    from edgeresnext.models import load_checkpoint

    model = load_checkpoint(args.checkpoint)
    preprocess = model.meta.preprocess
    scratch = Path(tempfile.mkdtemp(prefix="tuning-bias-"))
    onnx_from_torch(model, scratch / "fp32.onnx")
    int8 = Path(args.int8) if args.int8 else scratch / "int8.onnx"
    if args.int8 is None:
        from edgeresnext.quantize.ptq import quantize_ptq

        write_calibration_set(scratch / "calib", count=300, seed=0)
        quantize_ptq(model, load_calibration_images(scratch / "calib", preprocess, 300), QuantSpec(), int8)
    elif not int8.is_file():
        print(f"error: --int8 {int8}: no such file", file=sys.stderr)
        return 2
    fp32_run, int8_run = onnx_runner(scratch / "fp32.onnx"), onnx_runner(int8)

    train, test = load_dataset("fashion-mnist", split="train"), load_dataset("fashion-mnist", split="test")
    began = time.perf_counter()
    outcomes = {}
    for split, data in (("train", train), ("test", test)):
        images = np.stack([preprocess.image_to_array(image) for image in data.images])
        outcomes[split] = (_correct(fp32_run, images, data.labels), _correct(int8_run, images, data.labels))
    sets = {
        "train-500": ("train", balanced_indices(train.labels, 500, seed=TUNING_SEED)),
        "train-all": ("train", np.arange(len(train.labels))),
        "holdout-5000": ("train", tuning_holdout_indices(train.labels)),
        "test": ("test", np.arange(len(test.labels))),
    }
    rows = {}
    for name, (split, index) in sets.items():
        fp32_correct, int8_correct = (array[index] for array in outcomes[split])
        counts = stats.paired_counts(fp32_correct, int8_correct)
        interval = stats.drop_interval(counts, 0.95)
        rows[name] = {
            "images": counts.n,
            "fp32_top1": counts.reference_top1,
            "int8_top1": counts.artifact_top1,
            "drop_pt": 100 * counts.drop,
            "drop_interval_pt": [100 * interval.lower, 100 * interval.upper],
            "only_fp32_right": counts.b,
            "only_int8_right": counts.c,
        }
        print(
            f"{name:13s} n={counts.n:6d}  FP32 {100 * counts.reference_top1:6.2f} %"
            f"  INT8 {100 * counts.artifact_top1:6.2f} %"
            f"  drop {100 * counts.drop:+.3f} pt [{100 * interval.lower:+.3f}, {100 * interval.upper:+.3f}]"
            f"  (b={counts.b}, c={counts.c})",
            flush=True,
        )
    bias = rows["train-all"]["drop_pt"] - rows["test"]["drop_pt"]
    print(f"bias drop(train-all) - drop(test): {bias:+.3f} pt")
    if args.out:
        record = {
            "what": "INT8 top-1 drop of one Q/DQ model on training vs test images (ONNX Runtime)",
            "checkpoint": args.checkpoint,
            "int8": str(args.int8) if args.int8 else "PTQ here: 300 class-balanced training images, seed 0",
            "sets": rows,
            "bias_train_minus_test_pt": bias,
            "cpu": cpu_model(),
            "machine": platform.machine(),
            "seconds": round(time.perf_counter() - began, 1),
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
