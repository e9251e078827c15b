"""``edgeresnext train``: FP32 training with resume, on one process or under torchrun (``--nproc``)."""

from __future__ import annotations

import argparse
import logging
import sys

from edgeresnext.cli.common import add_model_flag, check_output, float_in, int_in, is_rank0
from edgeresnext.errors import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_IMAGES,
    MAX_LEARNING_RATE,
    MAX_NODE_RANK,
    MAX_PROCESSES,
    MAX_SEED,
    MAX_THREADS,
)


def run_train(args: argparse.Namespace) -> int:
    from edgeresnext.config import TrainConfig

    launch_torchrun_if_asked(args)
    from edgeresnext.train import fit

    recipe = "edgeresnext train " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else None
    config = TrainConfig(
        arch=args.model,
        dataset=args.dataset,
        data_root=args.data_root,
        out_dir=str(check_output(args.out, "--out")),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        threads=args.threads,
        resume=not args.no_resume,
        progress=not args.quiet,
        limit_train=args.limit_train,
        recipe=recipe,
        limit_test=args.limit_test,
        sync_bn=args.sync_bn,
        workers=args.workers,
        device=args.device,
        augment=not args.no_augment,
        stop_after=args.stop_after_epoch,
    )
    final = fit(config)
    if not is_rank0():
        return 0
    if final.suffix == ".pt":
        print(f"stopped after epoch {args.stop_after_epoch}/{config.epochs}; resume with the same command -> {final}")
        return 0
    from edgeresnext.models import read_checkpoint

    meta = read_checkpoint(final).meta
    print(f"test top-1 {meta.metrics['test_top1']:.4f}  ({meta.metrics['train_seconds']:.0f} s training)  -> {final}")
    return 0


# Launcher options that only the outer `edgeresnext ... --nproc N` process reads (True: takes a value).
_LAUNCHER_OPTIONS = {"--nproc": True, "--nnodes": True, "--node-rank": True, "--rdzv-endpoint": True, "--rdzv-id": True}


def launch_torchrun_if_asked(args: argparse.Namespace) -> None:
    """With ``--nproc N`` (or ``--nnodes``) outside torchrun: replace this process with torchrun running the same
    command once per process. Inside torchrun (RANK/WORLD_SIZE set), quiet the logs of ranks other than 0."""
    from edgeresnext import distributed

    if distributed.launched_by_torchrun():
        if not is_rank0():
            logging.getLogger().setLevel(logging.WARNING)
        return
    if args.nproc is None and args.nnodes == "1":
        return
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    command_argv = distributed.strip_launcher_options(argv, _LAUNCHER_OPTIONS)
    distributed.exec_torchrun(
        distributed.torchrun_argv(
            args.nproc or 1,
            command_argv,
            nnodes=args.nnodes,
            node_rank=args.node_rank,
            rdzv_endpoint=args.rdzv_endpoint,
            rdzv_id=args.rdzv_id,
        )
    )


def add_distributed_options(p: argparse.ArgumentParser, training: bool = True) -> None:
    """--nproc and torchrun's multi-node options (also usable as `torchrun ... -m edgeresnext.cli <command>`);
    ``training``: also --sync-bn, --workers and --device (the FP32 training loop)."""
    g = p.add_argument_group("distributed (torchrun/DDP; the batch size is the global batch)")
    launch = "launch N processes on this node with torchrun (DDP: gloo on CPU, nccl on GPU)"
    g.add_argument("--nproc", type=int_in(1, MAX_PROCESSES), default=None, metavar="N", help=launch)
    g.add_argument("--nnodes", default="1", help="nodes in the job (torchrun --nnodes; default 1)")
    g.add_argument(
        "--node-rank", type=int_in(0, MAX_NODE_RANK), default=None, help="this node's rank (torchrun --node-rank)"
    )
    g.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT", help="node 0's address for a multi-node job")
    g.add_argument("--rdzv-id", default=None, help="job id shared by all nodes (default edgeresnext)")
    if not training:
        return
    g.add_argument("--sync-bn", action="store_true", help="BatchNorm statistics over the global batch")
    g.add_argument(
        "--workers", type=int_in(0, MAX_PROCESSES), default=None, help="data loader worker processes for image folders"
    )
    g.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")


def add_train(sub: argparse._SubParsersAction) -> None:
    from edgeresnext.config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a ResNeXt (FP32) with checkpoints every epoch and resume")
    add_model_flag(p, f"the model to train (default {d.arch}; see `edgeresnext inspect --models`)", d.arch)
    p.add_argument("--dataset", default=d.dataset, help="fashion-mnist | cifar10 | path to an image folder")
    p.add_argument("--data-root", default=None, help="where the dataset files are (default: search the usual places)")
    p.add_argument("--out", default=d.out_dir, help=f"run folder (default {d.out_dir})")
    p.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), default=d.epochs)
    p.add_argument("--batch-size", type=int_in(1, MAX_BATCH), default=d.batch_size)
    p.add_argument(
        "--lr", type=float_in(0, MAX_LEARNING_RATE), default=d.lr, help="peak learning rate of the one-cycle schedule"
    )
    p.add_argument("--weight-decay", type=float_in(0, 1, inclusive=True), default=d.weight_decay)
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=d.seed)
    p.add_argument(
        "--threads", type=int_in(1, MAX_THREADS), default=None, help="torch intra-op threads (default: all cores)"
    )
    p.add_argument(
        "--limit-train", type=int_in(1, MAX_IMAGES), default=None, help="train on the first N images only (smoke runs)"
    )
    p.add_argument("--no-resume", action="store_true", help="start over even if the run folder has last.pt")
    p.add_argument(
        "--limit-test", type=int_in(1, MAX_IMAGES), default=None, help="evaluate on the first N test images only"
    )
    p.add_argument("--no-augment", action="store_true", help="no random crop/flip (deterministic batches)")
    stop = "end after epoch N of the schedule (time-limited jobs); the same command resumes"
    p.add_argument("--stop-after-epoch", type=int_in(1, MAX_EPOCHS), default=None, metavar="N", help=stop)
    add_distributed_options(p)


# This module's commands: name -> (add the sub-parser, run it).
COMMANDS = {
    "train": (add_train, run_train),
}
