"""torch.distributed plumbing shared by training and QAT: one loop runs single-process and under torchrun/DDP.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`init_from_env` reads them and joins the
process group (nccl when the process has a GPU, gloo on CPU). Without those variables it returns a
single-process :class:`DistContext`, so callers never branch on "am I distributed".

What the loops rely on:

- the *global* batch is the config's ``batch_size``; each rank takes ``batch_size / world_size`` images of it,
  so the number of optimizer steps, the learning-rate schedule and the checkpoint do not depend on the world
  size (a run saved with 2 processes resumes with 1 or 4);
- rank 0 alone writes files and logs; metrics are sums all-reduced over ranks;
- :class:`SyncBatchNorm2d` gives synchronized BatchNorm on gloo/CPU, where ``torch.nn.SyncBatchNorm`` refuses
  CPU tensors; :func:`convert_sync_batchnorm` picks the right one for the device.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import torch
from torch import nn

from edgeresnext.errors import ConfigError

logger = logging.getLogger(__name__)

# Environment variables torchrun sets in every worker; WORLD_SIZE alone is enough to know we were launched by it.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("gloo", "nccl")
# How long the end-of-run barrier waits for the slowest rank. The loops already meet at a barrier after their
# last file is written, so the ranks arrive within moments of each other; this only bounds a broken job.
SHUTDOWN_TIMEOUT_S = 300.0


@dataclass
class DistContext:
    """Where this process sits in the job: rank among ``world_size`` processes, its device and backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: single process, no process group

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, history and logs."""
        return self.rank == 0

    def local_batch(self, global_batch: int, what: str = "train.batch_size") -> int:
        """Images per rank for a global batch; the global batch must split evenly so every step sees it whole."""
        if global_batch % self.world_size:
            raise ConfigError(
                f"{what}={global_batch} does not split over {self.world_size} processes; "
                f"use a multiple of {self.world_size} (it is the global batch, shared by all ranks)"
            )
        return global_batch // self.world_size


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def choose_backend(device: torch.device) -> str:
    """nccl for CUDA devices, gloo otherwise (the only backend that runs on CPU everywhere)."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(backend: str | None = None, device: str | None = None) -> DistContext:
    """Join the process group torchrun prepared, or return a single-process context.

    ``device``: ``"cpu"``, ``"cuda"`` or None (CUDA when available). Under torchrun each process takes the GPU
    ``LOCAL_RANK``. ``backend``: ``"gloo"``, ``"nccl"`` or None (:func:`choose_backend`).
    """
    import torch.distributed as dist

    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"distributed backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if device not in (None, "cpu", "cuda"):
        raise ConfigError(f"device {device!r}; expected cpu or cuda")
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but torch sees no GPU here")
    if not launched_by_torchrun():
        return DistContext(device=torch.device("cuda" if use_cuda else "cpu"))
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise ConfigError(f"torchrun environment: RANK/WORLD_SIZE/LOCAL_RANK must be integers ({err})") from err
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    backend = backend or choose_backend(torch_device)
    if backend == "nccl" and torch_device.type != "cuda":
        raise ConfigError("the nccl backend needs a GPU per process; use gloo on CPU")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size, device_id=torch_device if backend == "nccl" else None
        )
    logger.debug("rank %d/%d joined the %s process group on %s", rank, world_size, backend, torch_device)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device, backend=backend)


def shutdown(ctx: DistContext, wait: bool = True, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Leave the process group; with ``wait``, only once every rank has reached this point.

    ``wait=True`` (the normal end of a run) first meets the other ranks at a barrier, so that no rank tears down
    its connections (rank 0: also the rendezvous store it hosts) while another is still working or in a
    collective. The barrier gives up after ``timeout`` seconds (gloo) with a warning naming the ranks that did
    not arrive, and the group is destroyed either way. ``wait=False``: after an error on this rank, which must
    not hang waiting for ranks that will never get here (torchrun stops the others when one fails).
    """
    import torch.distributed as dist

    if not (ctx.distributed and dist.is_initialized()):
        return
    try:
        if wait:
            _final_barrier(ctx, timeout)
    except RuntimeError as err:  # torch.distributed.DistError and gloo's errors
        logger.warning("rank %d: not every rank reached the end of the run (%s)", ctx.rank, str(err).strip()[:400])
    finally:
        dist.destroy_process_group()


def _final_barrier(ctx: DistContext, timeout: float) -> None:
    import torch.distributed as dist

    if ctx.backend == "gloo":
        # monitored_barrier: a timeout of its own, and an error that names the missing ranks.
        dist.monitored_barrier(timeout=timedelta(seconds=timeout), wait_all_ranks=True)
    else:
        # nccl has no monitored barrier; the group's own timeout bounds this one.
        dist.barrier(device_ids=[ctx.device.index])


def barrier(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.distributed:
        dist.barrier()


def all_reduce_sums(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Sum each value over all ranks (float64 so counts of millions of images stay exact)."""
    if not ctx.distributed:
        return dict(values)
    import torch.distributed as dist

    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return {k: float(v) for k, v in zip(keys, tensor.tolist(), strict=True)}


def broadcast_object(ctx: DistContext, obj, src: int = 0):
    """Rank ``src``'s picklable object on every rank (only our own in-memory objects, never data read from disk)."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist

    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device(ctx))
    return box[0]


def broadcast_state(ctx: DistContext, module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers (BatchNorm running statistics, quantizer scales) to every rank."""
    if not ctx.distributed:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in module.state_dict().values():
            if isinstance(tensor, torch.Tensor):
                dist.broadcast(tensor, src=src)


def state_digest(module: nn.Module, include: str | None = None) -> str:
    """sha256 over the names and bytes of ``module``'s state (optionally only keys containing ``include``).

    Two ranks hold the same model exactly when their digests match.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if include is not None and include not in name:
            continue
        if not isinstance(tensor, torch.Tensor):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def gather_digests(ctx: DistContext, module: nn.Module, include: str | None = None) -> list[str]:
    """:func:`state_digest` of every rank, in rank order (the same list on all ranks)."""
    mine = state_digest(module, include)
    if not ctx.distributed:
        return [mine]
    import torch.distributed as dist

    digests: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(digests, mine)
    return [str(d) for d in digests]


def _comm_device(ctx: DistContext) -> torch.device:
    # nccl moves only CUDA tensors; gloo only CPU ones.
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


# --------------------------------------------------------------------------------------------- SyncBN
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks too (every rank used the total)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable all-reduce (sum) over the default process group."""
    return _AllReduceSum.apply(tensor)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are taken over the global batch of all ranks (any backend).

    ``torch.nn.SyncBatchNorm`` accepts only GPU tensors; this one all-reduces per-channel sums with
    :func:`all_reduce_with_grad`, which carries gradients back across ranks, so 2 ranks
    x B/2 images train exactly like 1 rank x B. Outside training or without a process group it is
    plain BatchNorm2d, and its state_dict keys are BatchNorm2d's (checkpoints stay interchangeable).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not self.training or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        dims = (0, 2, 3)
        count = torch.full((1,), x.numel() // channels, dtype=x.dtype, device=x.device)
        # Two passes (mean, then squared deviations) like BatchNorm itself: E[x^2]-E[x]^2 loses digits in float32.
        totals = all_reduce_with_grad(torch.cat([x.sum(dims), count]))
        n = totals[channels]
        mean = totals[:channels] / n
        centered = x - mean.view(1, -1, 1, 1)
        var = all_reduce_with_grad((centered * centered).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * (n / (n - 1)), alpha=momentum)
        out = centered * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d with a synchronized one: torch's on CUDA, :class:`SyncBatchNorm2d` elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SyncBatchNorm2d):
        sync = SyncBatchNorm2d(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=None,
            dtype=None,
        )
        sync.load_state_dict(module.state_dict())
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child, device)
        if converted is not child:
            setattr(module, name, converted)
    return module


def wrap_ddp(ctx: DistContext, model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks; otherwise ``model`` itself."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # DDP's default buffer sync gives every rank rank 0's BatchNorm running statistics at each forward.
    return DistributedDataParallel(model, device_ids=device_ids)


# --------------------------------------------------------------------------------------------- launcher
def torchrun_argv(
    nproc: int,
    command: Sequence[str],
    nnodes: str = "1",
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``python -m torch.distributed.run ...`` command line that runs ``edgeresnext <command>`` per process.

    One node: ``--standalone`` (a local rendezvous on a free port). Several nodes: a c10d rendezvous at
    ``rdzv_endpoint`` (host:port of node 0), the same command on every node.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc={nproc}; expected an integer >= 1")
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if nnodes == "1" and rdzv_endpoint is None:
        argv.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise ConfigError(f"--nnodes={nnodes} needs --rdzv-endpoint HOST:PORT (node 0's address)")
        argv += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id or 'edgeresnext'}"]
        if node_rank is not None:
            argv.append(f"--node-rank={node_rank}")
    argv += list(extra)
    argv += ["-m", "edgeresnext.cli", *command]
    return argv


def strip_launcher_options(argv: Sequence[str], options: dict[str, bool]) -> list[str]:
    """``argv`` without the launcher's own options (``{"--nproc": takes_value, ...}``), both ``--x v`` and ``--x=v``.

    The workers must not see ``--nproc`` again, or each would launch torchrun itself.
    """
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in options:
            skip = options[name] and "=" not in arg
            continue
        out.append(arg)
    return out


def exec_torchrun(argv: list[str]) -> None:
    """Replace this process with torchrun (signals such as Ctrl-C then reach torchrun and its workers directly)."""
    logger.info("launching: %s", shlex.join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 - argv is our own torchrun command line, no shell involved
