"""Training across processes: ``torchrun --nproc-per-node N -m probgen train ...``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`setup` reads them and joins
the process group (gloo on the CPU, nccl on CUDA). A single process (no torchrun) is a world of
one and every function here is then a no-op, so training code calls them unconditionally.

Batches: every process draws the same seeded permutation of the training set for an epoch
(the role of ``DistributedSampler.set_epoch``), cuts it into global batches, and takes its own
slice of each. With ``B`` examples per process, one step of ``N`` processes sees exactly the
global batch that one process with ``N * B`` examples would see, so that, with gradients
averaged by ``DistributedDataParallel``, the parameters follow the single-process run.
Only rank 0 writes checkpoints, logs and figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["DistInfo", "setup", "cleanup", "info", "is_main", "barrier", "all_reduce_sum",
           "global_batches", "wrap_ddp"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO = DistInfo()


def setup(device: torch.device | None = None) -> DistInfo:
    """Join the process group that torchrun describes (a no-op for a single process)."""
    global _INFO
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _INFO = DistInfo()
        return _INFO
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_nccl = device is not None and torch.device(device).type == "cuda"
    if use_nccl:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    _INFO = DistInfo(rank=rank, world_size=world, local_rank=local)
    return _INFO


def cleanup() -> None:
    global _INFO
    if _INFO.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()  # no process tears the group down while a peer still talks to it
            dist.destroy_process_group()
    _INFO = DistInfo()


def info() -> DistInfo:
    return _INFO


def is_main() -> bool:
    return _INFO.is_main


def barrier() -> None:
    if _INFO.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes, in place, and return it (identity for one process)."""
    if _INFO.distributed:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def global_batches(n: int, batch_size: int, *, seed: int, epoch: int, device=None,
                   dist_info: DistInfo | None = None, drop_last: bool = False):
    """Yield this process's index slice of each global batch of one epoch.

    Parameters
    ----------
    n : int
        Number of training examples.
    batch_size : int
        Examples per process per step; the global batch is ``batch_size * world_size``.
    seed, epoch : int
        The permutation is ``randperm(n)`` from a generator seeded with ``seed * 100003 + epoch``:
        identical on every process, new every epoch.
    """
    d = dist_info or _INFO
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(n, generator=g)
    gb = batch_size * d.world_size
    stop = n - (n % gb) if drop_last else n
    for start in range(0, stop, gb):
        chunk = order[start:start + gb]  # (<= gb,) the global batch
        mine = chunk.tensor_split(d.world_size)[d.rank]
        if mine.numel():
            yield mine.to(device) if device is not None else mine


def wrap_ddp(module: torch.nn.Module, device: torch.device, **kwargs) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` in a distributed run, the module itself otherwise.

    ``broadcast_buffers=False`` by default: a GAN's discriminator that runs twice per step
    with BatchNorm would otherwise fail with an in-place modification error.
    """
    if not _INFO.distributed:
        return module
    import warnings

    from torch.nn.parallel import DistributedDataParallel as DDP

    kwargs.setdefault("broadcast_buffers", False)
    ids = [device.index if device.index is not None else _INFO.local_rank] if device.type == "cuda" else None
    with warnings.catch_warnings():
        # torch 2.14 renames the option but asks to keep broadcast_buffers=False for now
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated")
        return DDP(module, device_ids=ids, **kwargs)
