"""Quantization-aware training: NNCF fake-quantizes the torch model, initialised by PTQ on the calibration
images. The model is fine-tuned for a few epochs on labelled training data, then written in the same Q/DQ
ONNX form as PTQ.

The fine-tuned *weights* are what QAT contributes: they have learned to sit well on the INT8 grid. The
Q/DQ ONNX is made from them by :func:`~edgeresnext.quantize.ptq.quantize_ptq`, so its quantizer ranges
are re-calibrated min-max ranges rather than NNCF's learned scales. This keeps one placement, one signedness
and one lint for PTQ and QAT alike.

Under torchrun (``edgeresnext quantize --method qat --nproc N``) every rank runs NNCF's initialisation on the
same calibration batches, then takes rank 0's quantizer state (broadcast, and the digests compared), and
fine-tunes under DistributedDataParallel: each step's ``qat_batch_size`` images are dealt round-robin to the
ranks, so a step is the single-process step on the same global batch. Rank 0 alone writes the ONNX.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import numpy as np

from edgeresnext.config import QuantSpec
from edgeresnext.errors import DataError

logger = logging.getLogger(__name__)

# NNCF compiles its fake-quantization C++ extension on first use and gives up after 60 s by default; on a
# fresh two-core machine the compile alone takes longer, so QAT would fail on every new machine (seen in CI).
EXTENSION_LOAD_TIMEOUT_S = "900"


def fine_tune_quantized(
    model,
    calib: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    spec: QuantSpec,
    progress: bool = True,
    seed: int = 0,
    ctx=None,
):
    """NNCF fake-quantized copy of ``model`` (PTQ-initialised), fine-tuned on ``images``/``labels``.

    Returns ``model``'s architecture with the fine-tuned float weights (the original is not modified), with
    ``qat_history`` (per-epoch mean loss over all ranks) and ``quantizer_digests`` (one per rank) attached.
    ``ctx``: a :class:`~edgeresnext.distributed.DistContext` (default: single process).
    """
    import torch

    from edgeresnext import distributed
    from edgeresnext.progress import progress_bar

    if len(images) != len(labels) or len(images) == 0:
        raise DataError(f"QAT needs labelled images: got {len(images)} images and {len(labels)} labels")
    torch.manual_seed(seed)
    ctx = ctx or distributed.DistContext()
    quantized, digests = _ptq_initialised(model, calib, ctx)
    ddp = distributed.wrap_ddp(ctx, quantized)
    history = []
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    steps_per_epoch = -(-len(x) // spec.qat_batch_size)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=spec.qat_lr, momentum=0.9, weight_decay=5e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, spec.qat_epochs * steps_per_epoch)
    quantized.train()
    bar = progress_bar(
        total=spec.qat_epochs * steps_per_epoch, desc="QAT", unit="step", disable=not (progress and ctx.is_main)
    )
    for epoch in range(spec.qat_epochs):
        order = torch.randperm(len(x))  # the same on every rank: all seeded alike
        loss_sum = 0.0
        for start in range(0, len(x), spec.qat_batch_size):
            index = order[start : start + spec.qat_batch_size]
            mine = index[ctx.rank :: ctx.world_size]  # this rank's share of the global batch
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(ddp(x[mine]), y[mine])
            # DDP averages gradients over ranks; weighting by the share keeps uneven last batches exact.
            (loss * (len(mine) * ctx.world_size / len(index))).backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(mine)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        total = distributed.all_reduce_sums(ctx, {"loss_sum": loss_sum})["loss_sum"]
        history.append({"epoch": epoch + 1, "train_loss": total / len(x)})
        if ctx.is_main:
            logger.info("QAT epoch %d/%d: train loss %.4f", epoch + 1, spec.qat_epochs, history[-1]["train_loss"])
    bar.close()
    quantized.eval()
    tuned = _with_weights_of(model, quantized)
    tuned.qat_history, tuned.quantizer_digests = history, digests
    return tuned.eval()


def _ptq_initialised(model, calib: np.ndarray, ctx):
    """NNCF's fake-quantized copy of ``model`` calibrated on ``calib`` (every image, batches of 32), with rank 0's
    quantizer state on every rank; returns it and each rank's quantizer digest (all equal)."""
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", EXTENSION_LOAD_TIMEOUT_S)
    import nncf
    import torch

    from edgeresnext import distributed

    calib_t = torch.from_numpy(np.ascontiguousarray(calib, dtype=np.float32))
    batches = [calib_t[i : i + 32] for i in range(0, len(calib_t), 32)]
    quantized = nncf.quantize(
        copy.deepcopy(model).eval(),
        nncf.Dataset(batches),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(batches),  # NNCF counts dataset items: batches here
        fast_bias_correction=True,
    )
    # The same calibration batches give the same ranges on every rank; rank 0's state is broadcast anyway so a
    # reduction-order difference cannot leave the ranks with different quantizers, and the digests prove it.
    distributed.broadcast_state(ctx, quantized)
    digests = distributed.gather_digests(ctx, quantized)
    if len(set(digests)) != 1:
        raise RuntimeError(f"NNCF quantizer state differs between ranks after broadcast: {digests}")
    return quantized, digests


def _with_weights_of(model, quantized):
    """A copy of ``model`` with the fine-tuned float weights of NNCF's ``quantized`` copy (quantizers dropped)."""
    tuned = copy.deepcopy(model)
    state = quantized.state_dict()
    wanted = tuned.state_dict()
    missing = [key for key in wanted if key not in state]
    if missing:
        raise RuntimeError(f"NNCF renamed the model's parameters; cannot copy back {missing[:3]}")
    tuned.load_state_dict({key: state[key] for key in wanted})
    return tuned


def quantize_qat(
    model,
    calib: np.ndarray,
    spec: QuantSpec,
    out_path: str | os.PathLike[str],
    *,
    train_images: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
    train_limit: int | None = None,
    progress: bool = True,
    ctx=None,
) -> Path:
    """QAT into the Q/DQ INT8 ONNX at ``out_path`` (same form and lint as :func:`quantize_ptq`).

    Training data defaults to the training split of the model's dataset (``model.meta.dataset``), preprocessed
    as the model was trained; ``train_limit`` takes its first N images. Under torchrun (or with ``ctx``) the
    fine-tuning runs on every rank and rank 0 alone writes ``out_path``.
    """
    from edgeresnext import distributed
    from edgeresnext.quantize.ptq import quantize_ptq

    if train_images is None:
        from edgeresnext.data import load_dataset

        meta = getattr(model, "meta", None)
        if meta is None or not meta.dataset:
            raise DataError(
                "QAT needs labelled training data: pass train_images/train_labels, or a model whose "
                "metadata names its dataset"
            )
        from edgeresnext.data.validation import without_tuning_holdout

        data = load_dataset(meta.dataset, split="train")
        keep = without_tuning_holdout(data.labels)  # never the fallback's held-out tuning images
        keep = keep if train_limit is None else keep[:train_limit]
        train_images = np.stack([meta.preprocess.image_to_array(image) for image in data.images[keep]])
        train_labels = data.labels[keep]
    elif train_limit is not None:
        train_images, train_labels = train_images[:train_limit], train_labels[:train_limit]
    own_group = ctx is None
    ctx = ctx or distributed.init_from_env(device="cpu")
    try:
        tuned = fine_tune_quantized(model, calib, train_images, train_labels, spec, progress=progress, ctx=ctx)
        if getattr(model, "meta", None) is not None:
            tuned.meta = model.meta
        if ctx.is_main:
            quantize_ptq(tuned, calib, spec, out_path)
        distributed.barrier(ctx)
    except BaseException:
        if own_group:
            distributed.shutdown(ctx, wait=False)  # a failed rank must not wait for the others
        raise
    if own_group:
        distributed.shutdown(ctx)
    return Path(out_path)
