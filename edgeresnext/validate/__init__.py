"""Each artifact of a build against the FP32 PyTorch model: accuracy, agreement, latency, memory, gates.

Every artifact is anything that maps a float32 NCHW batch to logits (a backend :class:`Runner`, the FP32
torch model, a plain function), so the same code measures ONNX Runtime, OpenVINO, TensorRT and PyTorch.
All of them see the same preprocessed validation array, the same batch for latency (1), the same warm-up
and run counts, and the same thread count.

What the numbers mean (they go into report.json under these names):

* ``top1``/``top5``: share of images whose label is the top / among the top-5 logits;
* ``top1_drop``: reference top-1 minus this artifact's top-1 (fraction; positive = worse than FP32);
* ``agreement``: share of images where this artifact's top-1 class equals the reference's;
* ``cosine_mean``/``cosine_min``: cosine similarity of each image's logit vector with the reference's;
* ``max_abs_error``: largest absolute logit difference over all images and classes;
* ``uncertainty``: from the paired per-image outcomes against the reference (which images each gets right), the
  drop's interval (Tango, corrected) and one-sided upper bound, the agreement's exact interval and lower bound, and the
  exact McNemar p; the accuracy gates compare the bounds (see :mod:`.gates`);
* ``speedup``: p50 of ``speedup_baseline``, the same runtime's float build (OpenVINO FP32, ONNX Runtime
  FP32, TensorRT FP16), over this artifact's; None when no such build was timed (never PyTorch eager's);
* latency (``p50_ms``...): wall-clock of one inference at batch 1 with the input bound once (as benchmark_app and
  trtexec time it; see :func:`measure_latency`) after ``warmup`` calls, over ``runs`` calls; ``call_p50_ms``: the
  median of whole ``runner(batch)`` calls from Python, input checks and conversion included;
* ``peak_rss_delta_mb``: the process's peak resident memory while validating this artifact (accuracy pass
  and timing) minus its resident memory just before; the peak is reset per artifact through
  ``/proc/self/clear_refs`` where the kernel allows it, else it is the growth of ``ru_maxrss``.
"""

from edgeresnext.validate.artifacts import (
    ArtifactUnderTest,
    artifacts_from_specs,
    pick_primary,
    runner_from_file,
    target_threads,
)
from edgeresnext.validate.core import (
    compare_artifacts,
    normalize_sensitivity,
    read_sensitivity,
    validate,
    validate_target,
)
from edgeresnext.validate.gates import REFERENCE_NAME, evaluate_gates, raise_for_gates
from edgeresnext.validate.measure import PeakMemory, TorchRunner, measure_latency, run_logits
from edgeresnext.validate.metrics import classification_metrics, compare_outputs, fidelity_metrics
from edgeresnext.validate.results import ArtifactResult, GateResult, Latency, ValidationReport

__all__ = [
    "REFERENCE_NAME",
    "ArtifactResult",
    "ArtifactUnderTest",
    "GateResult",
    "Latency",
    "PeakMemory",
    "TorchRunner",
    "ValidationReport",
    "artifacts_from_specs",
    "classification_metrics",
    "compare_artifacts",
    "compare_outputs",
    "evaluate_gates",
    "fidelity_metrics",
    "measure_latency",
    "normalize_sensitivity",
    "pick_primary",
    "raise_for_gates",
    "read_sensitivity",
    "run_logits",
    "runner_from_file",
    "target_threads",
    "validate",
    "validate_target",
]
