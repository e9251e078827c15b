"""INT8 quantization: PTQ (:mod:`.ptq`), QAT (:mod:`.qat`), the one entry point of both (:mod:`.int8`),
per-layer sensitivity and float fallback (:mod:`.sensitivity`), and the Q/DQ rewrites that make NNCF's output
TensorRT-ready (:mod:`.qdq`).

Submodules import NNCF lazily, so ``import edgeresnext.quantize`` is cheap.
"""
