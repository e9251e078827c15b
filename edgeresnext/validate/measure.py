"""Running an artifact over the validation set and measuring it: logits in batches, latency (bound inference and
whole calls), throughput, and the process's peak memory. The FP32 reference runs through :class:`TorchRunner`."""

from __future__ import annotations

import functools
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from edgeresnext.errors import ConfigError
from edgeresnext.timing import time_calls
from edgeresnext.validate.results import Latency, Throughput

if TYPE_CHECKING:
    import torch

RunnerLike = Callable[[np.ndarray], np.ndarray]
EVAL_BATCH = 64


def run_logits(
    runner: RunnerLike, inputs: np.ndarray, batch_size: int = EVAL_BATCH, progress: bool = False, desc: str = ""
) -> np.ndarray:
    """Logits of every input, ``batch_size`` images per call (a backend Runner splits or pads to its artifact's
    batch range itself)."""
    starts = range(0, len(inputs), batch_size)
    if progress:
        from edgeresnext.progress import progress_bar

        starts = progress_bar(starts, desc=desc or "inference", unit="batch", leave=False)
    chunks = [np.asarray(runner(np.ascontiguousarray(inputs[s : s + batch_size])), np.float32) for s in starts]
    return np.concatenate(chunks)


def measure_latency(runner: RunnerLike, sample: np.ndarray, runs: int = 50, warmup: int = 10) -> Latency:
    """Time ``runs`` inferences of ``sample`` after ``warmup`` untimed ones (perf_counter, per call).

    A runner with ``bind()`` (every backend :class:`Runner`, the torch reference) is timed on its bound
    call: the input is set once and each call is inference alone, which is how OpenVINO's benchmark_app and
    trtexec time a model. A plain callable is timed on ``runner(sample)``. Either way, ``runs`` plain
    ``runner(sample)`` calls follow, for ``call_samples_ms``: what a Python caller sees, input checks and
    conversions included.
    """
    if runs < 1:
        raise ConfigError(f"latency runs={runs}; expected >= 1")
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    bind = getattr(runner, "bind", None)
    infer = bind(sample) if callable(bind) else functools.partial(runner, sample)
    samples = time_calls(infer, runs, warmup)
    calls = time_calls(functools.partial(runner, sample), runs, min(warmup, 3))
    return Latency.from_samples(int(sample.shape[0]), warmup, samples, calls, bound=callable(bind))


def measure_throughput(runner: RunnerLike, sample: np.ndarray, runs: int = 10, warmup: int = 2) -> Throughput:
    """Images per second over ``runs`` back-to-back inferences at the batch of ``sample`` (bound as latency is)."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    bind = getattr(runner, "bind", None)
    samples = time_calls(bind(sample) if callable(bind) else functools.partial(runner, sample), runs, warmup)
    batch = int(sample.shape[0])
    return Throughput(
        batch=batch,
        runs=runs,
        images_per_s=batch * runs / (sum(samples) / 1e3),
        batch_p50_ms=float(np.percentile(samples, 50)),
    )


class PeakMemory:
    """Peak resident memory of this process over a ``with`` block, relative to the RSS at its start (MB)."""

    def __init__(self) -> None:
        self.method = ""
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self.delta_mb = 0.0

    @staticmethod
    def _status_mb(key: str) -> float | None:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> PeakMemory:
        self._reset = False
        try:
            # Writing 5 resets the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0).
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self._reset = True
        except OSError:
            self._reset = False
        self.start_mb = self._status_mb("VmRSS") or 0.0
        self._maxrss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = self._status_mb("VmHWM") if self._reset else None
        if hwm is not None:
            self.method = "VmHWM after /proc/self/clear_refs reset"
            self.peak_mb = hwm
            self.delta_mb = max(0.0, hwm - self.start_mb)
        else:
            self.method = "ru_maxrss growth (a lower bound: the earlier peak hides smaller ones)"
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.delta_mb = max(0.0, self.peak_mb - self._maxrss_start)


class TorchRunner:
    """The FP32 reference: a torch module as a batch -> logits callable."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    def bind(self, batch: np.ndarray) -> Callable[[], object]:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))

        def run() -> torch.Tensor:
            with torch.inference_mode():
                return self.model(tensor)

        return run


def _tile(inputs: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // len(inputs))
    return np.ascontiguousarray(np.concatenate([inputs] * reps)[:batch]) if reps > 1 else inputs[:batch].copy()
