"""Serving engines people already run: a Triton model repository for any bundle (:mod:`.triton`,
``edgeresnext bundle triton``), and DeepStream ``nvinfer`` configs for a Jetson bundle (:mod:`.deepstream`).

This package sits with the pipeline and the device runtime: it reads bundles (:mod:`edgeresnext.bundle`), and the
Triton repository's end-to-end model (:mod:`.triton_model`) runs :func:`edgeresnext.runtime.load_bundle`.
"""

from edgeresnext.serving.triton import RECORD, TritonRepository, images_config, native_config, triton_repository

__all__ = ["RECORD", "TritonRepository", "images_config", "native_config", "triton_repository"]
