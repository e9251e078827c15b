"""INT8 quantization: PTQ (:mod:`.ptq`), QAT (:mod:`.qat`), the one entry point of both (:mod:`.int8`),
per-layer sensitivity and float fallback (:mod:`.sensitivity`), and the Q/DQ rewrites that make NNCF's output
TensorRT-ready (:mod:`.qdq`).

Submodules import NNCF lazily, so ``import edgeresnext.quantize`` is cheap.

The Q/DQ ONNX (INT8 QuantizeLinear/DequantizeLinear pairs around float operators, in TensorRT's form) is the one
INT8 file every backend reads; it is called that in the code (``qdq_onnx``) and the docs, and ``model.qdq.onnx``
wherever edgeresnext writes it (the quantize stage, the Jetson kit).
"""

QDQ_ONNX = "model.qdq.onnx"
