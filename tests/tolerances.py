"""Tolerances shared by tests that compare results of different float kernels, each derived once, here, and the
continuous measure used where a top-1 count on a few hundred images would be decided by a handful of near-ties.

The same model gives slightly different logits from PyTorch, ONNX Runtime and OpenVINO, and from one CPU to another
(AVX2, AVX512, AMX, NEON pick other kernels and summation orders). Figures below were measured on an AMD EPYC with
the shipped model (resnext20_4x8d: 22 convolutions, fan-in <= 288, logits up to 15) on the first 512 test images.
"""

from __future__ import annotations

import numpy as np

# FP32 logits from another runtime or kernel. float32 gives 3.5e-6 vs float64 here, so two float32 kernels differ by
# a few times that (measured 9.5e-6 OpenVINO, 8.6e-6 ONNX Runtime, 1.7e-5 over all 10,000 test images); BF16 float
# layers (OpenVINO's default on AVX512-BF16/AMX CPUs when not pinned to f32) move them by 0.22.
FP32_LOGIT_ATOL = 1e-3
# Softmax scores from those logits: |d softmax_i| <= 2 p_i (1 - p_i) max|d logit| <= max|d logit| / 2.
FP32_SCORE_ATOL = FP32_LOGIT_ATOL / 2

# Logits of a backend's INT8 kernels vs the Q/DQ file run as written (fake quantization in FP32): kernels round some
# activations to the neighbouring INT8 step, and one step at the classifier input moves a logit by 0.004 on average.
# Mean |d logit| measured: 0.013 (OpenVINO), 0.040 (ONNX Runtime), 0.049 (FP16 Q/DQ); one convolution's weight scale
# 10 % off gives 0.12 to 0.19, a wrong zero point or scale much more.
QDQ_MEAN_ATOL = 0.1
# Images whose Q/DQ top-2 logit gap is at least this cannot change class unless a logit moves by half of it: 2x the
# largest single difference measured (0.56, FP16 Q/DQ). 480 of the 512 images; near-ties flip freely between kernels.
QDQ_CONFIDENT_GAP = 1.0


def mean_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy (nats) of ``logits`` for ``labels``, computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), np.asarray(labels, dtype=np.int64)]))
