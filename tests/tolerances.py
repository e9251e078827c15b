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


def int8_kernels_saturate() -> bool:
    """True on an x86 CPU without VNNI (plain AVX2, e.g. AMD Zen 2, most laptops before 2021).

    There oneDNN (OpenVINO's CPU kernels) multiplies u8 activations by s8 weights with ``vpmaddubsw``, which adds
    two products into a saturating int16: 255 x 127 x 2 = 64,770 overflows it, while 7-bit weights (|w| <= 64:
    255 x 64 x 2 = 32,640) cannot. So a Q/DQ file with full-range 8-bit weights is not computed as written there
    (measured on a Zen 2 EPYC: mean |d logit| 0.121 against the file on the shipped model, top-1 60.5 -> 58.0 % on
    the tiny test model), while the same file with 7-bit weights is (0.013, as with VNNI). ONNX Runtime's quantizer
    calls this ``reduce_range``. AVX512-VNNI, AVX-VNNI and AMX add into int32 and do not saturate; ARM is not x86.
    """
    import platform

    if platform.machine().lower() not in {"x86_64", "amd64", "i386", "i686"}:
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next(line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags"))
    except (OSError, StopIteration):
        return False  # not Linux: assume a VNNI-class CPU, the figures above were measured there
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def seven_bit_weights(qdq_onnx, out):
    """A copy of a Q/DQ file whose INT8 weights are halved to 7 bits (|w| <= 64) with twice the scale: what an
    x86 CPU without VNNI can compute exactly (see :func:`int8_kernels_saturate`). Round half to even, as numpy."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qdq_onnx))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        weight = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weight is None or weight.data_type != onnx.TensorProto.INT8 or len(weight.dims) != 4:
            continue
        scale = initializers[node.input[1]]
        halved = np.round(numpy_helper.to_array(weight).astype(np.float32) / 2).astype(np.int8)
        weight.CopyFrom(numpy_helper.from_array(halved, weight.name))
        scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 2, scale.name))
    onnx.save(model, str(out))
    return out
