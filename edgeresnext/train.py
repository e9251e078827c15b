"""FP32 training of a ResNeXt: progress bar, atomic checkpoint every epoch, resume after interruption,
single process or one rank of a torchrun/DDP job (see :mod:`edgeresnext.distributed`).

``fit(TrainConfig(...))`` is what ``edgeresnext train`` and ``make train`` run. The run folder holds
``last.pt`` (model + optimizer + scheduler + epoch, rewritten atomically after each epoch),
``history.json`` and, when training ends, ``model.safetensors`` (weights + metadata: arch, preprocessing,
class names, test accuracy, the command that made it). Under DDP rank 0 alone writes them; ``last.pt``
resumes with any number of processes because ``batch_size`` is the global batch.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeresnext.atomic import write_json_atomic
from edgeresnext.config import TrainConfig
from edgeresnext.distributed import DistContext, all_reduce_sums
from edgeresnext.errors import ConfigError

logger = logging.getLogger(__name__)


def evaluate(
    model: nn.Module, loader, progress: bool = False, desc: str = "eval", ctx: DistContext | None = None
) -> dict[str, float]:
    """Top-1 / top-5 accuracy and mean cross-entropy of ``model`` over ``loader``.

    With a distributed ``ctx`` each rank evaluates its own slice (:func:`make_eval_loader`) and the sums are
    all-reduced, so every rank returns the figures for the whole set.
    """
    from edgeresnext.progress import progress_bar

    model.eval()
    device = next(model.parameters()).device
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    with torch.inference_mode():
        for inputs, labels in progress_bar(loader, desc=desc, disable=not progress, leave=False):
            inputs, labels = inputs.to(device), labels.to(device)
            logits = model(inputs.contiguous(memory_format=torch.channels_last))
            loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            correct1 += (topk[:, 0] == labels).sum().item()
            correct5 += (topk == labels[:, None]).any(dim=1).sum().item()
            total += len(labels)
    if ctx is not None:
        sums = all_reduce_sums(ctx, {"correct1": correct1, "correct5": correct5, "loss_sum": loss_sum, "total": total})
        correct1, correct5, loss_sum, total = (sums["correct1"], sums["correct5"], sums["loss_sum"], int(sums["total"]))
    return {"top1": correct1 / total, "top5": correct5 / total, "loss": loss_sum / total, "count": total}


def load_datasets(config: TrainConfig):
    """(train, test) for ``config.dataset``: ArrayDatasets, or for an image folder a lazily read
    ``ImageFolder`` (train) and an in-memory ArrayDataset (test)."""
    from edgeresnext.data import load_dataset
    from edgeresnext.data.folder import is_image_folder_name, split_image_folder

    test = load_dataset(config.dataset, split="test", root=config.data_root)
    if config.limit_test:
        test.images, test.labels = test.images[: config.limit_test], test.labels[: config.limit_test]
    if is_image_folder_name(config.dataset):
        train = split_image_folder(config.dataset, "train", class_names=test.class_names)
        if config.limit_train:
            train.files, train.labels = train.files[: config.limit_train], train.labels[: config.limit_train]
        return train, test
    from edgeresnext.data.validation import TUNING_HOLDOUT_EVERY, without_tuning_holdout

    train = load_dataset(config.dataset, split="train", root=config.data_root)
    # 1 in 12 training images is held out for the quantize fallback's tuning (data/validation.py), never trained on
    keep = without_tuning_holdout(train.labels)
    logger.info(
        "training on %d of %d images (1 in %d held out for tuning)", len(keep), len(train.labels), TUNING_HOLDOUT_EVERY
    )
    train.images, train.labels = train.images[keep], train.labels[keep]
    if config.limit_train:
        train.images, train.labels = train.images[: config.limit_train], train.labels[: config.limit_train]
    return train, test


def fit(config: TrainConfig, ctx: DistContext | None = None) -> Path:
    """Train (or resume) and return the path of the final ``model.safetensors`` (``last.pt`` when ``stop_after``
    ends the run early).

    Single process, or one of ``world_size`` ranks under torchrun (DDP): ``config.batch_size`` is the global
    batch, split evenly over the ranks; rank 0 alone writes ``last.pt``, ``history.json`` and the final model.
    ``ctx``: an already joined process group; by default :func:`~edgeresnext.distributed.init_from_env` joins
    the one torchrun prepared (and leaves it again at the end).
    """
    from edgeresnext import distributed

    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    own_group = ctx is None
    ctx = ctx or distributed.init_from_env(device=config.device)
    try:
        final = _fit(config, ctx)
    except BaseException:
        if own_group:
            distributed.shutdown(ctx, wait=False)  # a failed rank must not wait for the others
        raise
    if own_group:
        distributed.shutdown(ctx)  # waits until every rank is done, then leaves
    return final


@dataclass
class _Run:
    """One training run's state across epochs: what ``last.pt`` saves and resumes."""

    config: TrainConfig
    ctx: DistContext
    out: Path
    model: nn.Module
    meta: Any
    optimizer: Any
    scheduler: Any
    steps_per_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0

    @property
    def last(self) -> Path:
        return self.out / "last.pt"


def _model_and_meta(config: TrainConfig, ctx: DistContext, train_set, test_set) -> tuple[nn.Module, Any]:
    """A freshly initialised ``config.arch`` on this rank's device, and the metadata its checkpoints carry."""
    from edgeresnext import distributed
    from edgeresnext.models import ModelMeta, create

    first = test_set.images[0]  # the test split is in memory for every kind of dataset
    in_channels = 1 if first.ndim == 2 else first.shape[-1]
    model = create(config.arch, num_classes=len(train_set.class_names), in_channels=in_channels)
    if config.sync_bn and ctx.distributed:
        model = distributed.convert_sync_batchnorm(model, ctx.device)
    # channels_last runs the grouped convolutions ~1.6x faster on CPU (oneDNN's native layout).
    model = model.to(ctx.device, memory_format=torch.channels_last)
    meta = ModelMeta(
        arch=config.arch,
        num_classes=len(train_set.class_names),
        in_channels=in_channels,
        preprocess=test_set.preprocess,
        class_names=list(train_set.class_names),
        input_size=int(first.shape[0]),
        dataset=config.dataset,
        recipe=config.recipe,
    )
    return model, meta


def _optimizer_and_schedule(model: nn.Module, config: TrainConfig, steps: int) -> tuple[Any, Any]:
    """Nesterov SGD and a one-cycle learning rate over ``steps`` optimizer steps."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.15, div_factor=10.0, final_div_factor=100.0
    )
    return optimizer, scheduler


def _check_resumable(last: Path, made_with: dict[str, Any], config: TrainConfig) -> None:
    """``last.pt`` resumes only the run it was made by: the same arch, epochs and global batch."""
    if made_with.get("arch") != config.arch or made_with.get("epochs") != config.epochs:
        raise ConfigError(
            f"{last}: was made with a different arch/epochs ({made_with}); use another --out or --no-resume"
        )
    if made_with.get("batch_size", config.batch_size) != config.batch_size:
        raise ConfigError(
            f"{last}: was made with global batch {made_with.get('batch_size')}, not "
            f"{config.batch_size}; the learning-rate schedule depends on it (the number of "
            "processes may change, the global batch may not)"
        )


def _resume(run: _Run) -> None:
    """Continue from ``last.pt`` when asked and present. Rank 0 reads it and hands it to the others, so nodes
    without the run folder can resume too."""
    from edgeresnext import distributed
    from edgeresnext.models import read_checkpoint

    config, ctx, last = run.config, run.ctx, run.last
    resume_state = None
    if config.resume and ctx.is_main and last.is_file():
        ckpt = read_checkpoint(last)
        resume_state = {"state_dict": ckpt.state_dict, "training": ckpt.training}
    resume_state = distributed.broadcast_object(ctx, resume_state)
    if resume_state is None:
        return
    state = resume_state["training"]
    _check_resumable(last, state.get("config", {}), config)
    run.model.load_state_dict(resume_state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.start_epoch = int(state["epoch"])
    run.history = list(state.get("history", []))
    torch.set_rng_state(state["rng"])
    if ctx.is_main:
        logger.info(
            "resuming %s from epoch %d/%d (saved by %d process(es), now %d)",
            last,
            run.start_epoch,
            config.epochs,
            int(state.get("world_size", 1)),
            ctx.world_size,
        )


def _train_and_evaluate(run: _Run, ddp_model: nn.Module, loaders: tuple, criterion, epoch: int) -> dict[str, Any]:
    """One epoch of training, then the test figures of rank 0's weights; the epoch's history record."""
    from edgeresnext import distributed

    config, ctx = run.config, run.ctx
    train_loader, test_loader = loaders
    train_loader.set_epoch(epoch)
    began = time.perf_counter()
    totals = train_one_epoch(
        ddp_model,
        train_loader,
        run.optimizer,
        criterion,
        ctx,
        run.steps_per_epoch,
        scheduler=run.scheduler,
        progress=config.progress and ctx.is_main,
        desc=f"epoch {epoch + 1}/{config.epochs}",
    )
    # Without SyncBN each rank's BatchNorm statistics saw only its shard: evaluate and save rank 0's everywhere.
    distributed.broadcast_state(ctx, run.model)
    metrics = evaluate(run.model, test_loader, ctx=ctx)
    return {
        "epoch": epoch + 1,
        "train_loss": totals["loss"],
        "train_top1": totals["top1"],
        "test_top1": metrics["top1"],
        "test_loss": metrics["loss"],
        "seconds": round(time.perf_counter() - began, 1),
    }


def _save_epoch(run: _Run, record: dict[str, Any]) -> None:
    """Rank 0: the epoch in the log, ``last.pt`` (everything a resume needs) and ``history.json``."""
    from edgeresnext.models import save_checkpoint

    config = run.config
    logger.info(
        "epoch %d/%d: train loss %.4f acc %.4f | test acc %.4f | %.0f s",
        record["epoch"],
        config.epochs,
        record["train_loss"],
        record["train_top1"],
        record["test_top1"],
        record["seconds"],
    )
    training = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "epoch": record["epoch"],
        "history": run.history,
        "rng": torch.get_rng_state(),
        "config": asdict(config),
        "world_size": run.ctx.world_size,
    }
    save_checkpoint(run.last, run.model, run.meta, training=training)
    write_json_atomic(run.out / "history.json", run.history)


def _stops_early(run: _Run, epoch: int) -> bool:
    """Whether ``stop_after`` ends the run after ``epoch`` (0-based), before its last epoch."""
    config = run.config
    return config.stop_after is not None and epoch + 1 >= config.stop_after and epoch + 1 < config.epochs


def _save_final(run: _Run, test_loader) -> Path:
    """The trained model with its test figures in ``model.safetensors`` (rank 0 writes, every rank waits)."""
    from edgeresnext import distributed
    from edgeresnext.models import save_checkpoint

    metrics = evaluate(run.model, test_loader, ctx=run.ctx)
    run.meta.metrics = {
        "test_top1": round(metrics["top1"], 4),
        "test_top5": round(metrics["top5"], 4),
        "train_seconds": round(sum(r["seconds"] for r in run.history), 1),
    }
    final = run.out / "model.safetensors"
    if run.ctx.is_main:
        final = save_checkpoint(final, run.model, run.meta)
        logger.info("test top-1 %.4f (%d images); saved %s", metrics["top1"], metrics["count"], final)
    distributed.barrier(run.ctx)  # the other ranks return once the file exists
    return final


def _fit(config: TrainConfig, ctx: DistContext) -> Path:
    from edgeresnext import distributed

    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    out = Path(config.out_dir)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    train_set, test_set = load_datasets(config)
    model, meta = _model_and_meta(config, ctx, train_set, test_set)
    train_loader = make_train_loader(train_set, test_set.preprocess, config, ctx, input_size=meta.input_size)
    # Steps per epoch come from the global batch, so the schedule and last.pt do not depend on the world size.
    steps_per_epoch = len(train_set.labels) // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"train.batch_size={config.batch_size} exceeds the {len(train_set.labels)} training images")
    test_loader = make_eval_loader(test_set, ctx)
    optimizer, scheduler = _optimizer_and_schedule(model, config, config.epochs * steps_per_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    run = _Run(config, ctx, out, model, meta, optimizer, scheduler, steps_per_epoch)
    _resume(run)
    ddp_model = distributed.wrap_ddp(ctx, model)
    for epoch in range(run.start_epoch, config.epochs):
        record = _train_and_evaluate(run, ddp_model, (train_loader, test_loader), criterion, epoch)
        run.history.append(record)
        if ctx.is_main:
            _save_epoch(run, record)
        if _stops_early(run, epoch):
            if ctx.is_main:
                logger.info(
                    "stopping after epoch %d/%d as asked; resume with the same command", epoch + 1, config.epochs
                )
            distributed.barrier(ctx)
            return run.last
    return _save_final(run, test_loader)


def make_train_loader(train_set, preprocess, config: TrainConfig, ctx: DistContext, input_size: int = 32):
    """This rank's shuffled shard of the training set, ``batch_size / world_size`` images per batch.

    Every epoch is one global permutation seeded by ``seed + epoch`` (ArrayLoader and DistributedSampler agree),
    split round-robin over the ranks: the images of global step k are the same for any number of processes.
    """
    from edgeresnext.data.loaders import ArrayLoader

    local_batch = ctx.local_batch(config.batch_size)
    if hasattr(train_set, "images"):
        return ArrayLoader(
            train_set,
            local_batch,
            shuffle=True,
            augment=config.augment,
            seed=config.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            drop_last=True,
        )
    from edgeresnext.data.loaders import ImageFolderDataset

    folder_data = ImageFolderDataset(
        train_set.files, train_set.labels, preprocess, augment=config.augment, pad=max(1, input_size // 8)
    )
    return ShardedFolderLoader(
        folder_data,
        local_batch,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=config.seed,
        workers=config.workers,
        pin_memory=ctx.device.type == "cuda",
    )


class ShardedFolderLoader:
    """Lazy image-folder batches for one rank: DistributedSampler + DataLoader worker processes.

    Images are decoded in ``workers`` processes (default: up to 4, at most the cores); pinned memory on GPU.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        workers: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        import os

        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self.workers = min(4, os.cpu_count() or 1) if workers is None else workers
        self.pin_memory = pin_memory

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self):
        from edgeresnext.errors import DataError

        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            drop_last=True,
        )
        try:
            yield from loader
        except DataError as err:
            # A worker's error comes back with its traceback; keep the one line that names the file.
            lines = [line for line in str(err).splitlines() if line.strip()]
            raise DataError(lines[-1].removeprefix("edgeresnext.errors.DataError: ") if lines else str(err)) from err


def make_eval_loader(test_set, ctx: DistContext, batch_size: int = 500):
    """This rank's slice ``test_set[rank::world_size]`` (no padding, so all-reduced counts are exact)."""
    import dataclasses

    from edgeresnext.data.loaders import ArrayLoader

    if ctx.distributed:
        test_set = dataclasses.replace(
            test_set,
            images=test_set.images[ctx.rank :: ctx.world_size],
            labels=test_set.labels[ctx.rank :: ctx.world_size],
        )
    return ArrayLoader(test_set, batch_size)


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer,
    criterion,
    ctx: DistContext,
    steps: int,
    *,
    scheduler=None,
    progress: bool = False,
    desc: str = "train",
) -> dict[str, float]:
    """``steps`` optimizer steps over ``loader`` (this rank's shard); loss and accuracy summed over all ranks.

    The same loop serves FP32 training and QAT fine-tuning; ``model`` may be wrapped in DDP, which averages
    the gradients so a step equals one step on the global batch.
    """
    from edgeresnext.progress import progress_bar

    model.train()
    loss_sum = correct = seen = 0.0
    bar = progress_bar(itertools.islice(loader, steps), total=steps, desc=desc, disable=not progress, leave=False)
    for inputs, labels in bar:
        inputs = inputs.to(ctx.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = labels.to(ctx.device, non_blocking=True)
        logits = model(inputs)
        loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    totals = all_reduce_sums(ctx, {"loss_sum": loss_sum, "correct": correct, "seen": seen})
    if totals["seen"] == 0:
        raise ConfigError(f"{desc}: the training loader yielded no batches")
    return {
        "loss": totals["loss_sum"] / totals["seen"],
        "top1": totals["correct"] / totals["seen"],
        "count": int(totals["seen"]),
    }
