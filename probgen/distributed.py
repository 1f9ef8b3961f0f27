"""Training across processes: ``torchrun --nproc-per-node N -m probgen train ...``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`setup` reads them and joins
the process group (gloo on the CPU, nccl on CUDA). A single process (no torchrun) is a world of
one and every function here is then a no-op, so training code calls them unconditionally.

Batches: every process draws the same seeded permutation of the training set for an epoch
(the role of ``DistributedSampler.set_epoch``), cuts it into global batches, and takes its own
slice of each (:mod:`probgen.data.batching`). With ``B`` examples per process, one step of
``N`` processes sees exactly the global batch that one process with ``N * B`` examples would
see, so that, with gradients averaged, the parameters follow the single-process run.
The training loops of :mod:`probgen.inference` know nothing of processes: they take the
operations of this module as hooks, :func:`process_group`.
Only rank 0 writes checkpoints, logs and figures.

Faults: with ``--dist-timeout`` (or ``$PROBGEN_DIST_TIMEOUT``) every collective operation has
that timeout, so a process whose peer died or hangs fails after that long instead of waiting
for torch's default (30 minutes for gloo); and a
process that fails leaves at once, without the closing barrier. With ``--max-restarts R``,
torchrun's elastic agent then stops the group and starts it again (at most ``R`` times), and
every process of the new group continues from the run's last complete checkpoint
(:func:`probgen.runs.elastic_restart`), as ``--resume`` would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["DistInfo", "setup", "cleanup", "info", "is_main", "barrier", "all_reduce_sum",
           "all_reduce_mean", "any_true", "share_outcome", "sync_gradients", "wrap_ddp",
           "process_group", "launch", "DEFAULT_TIMEOUT_S"]

# seconds the processes of a restarted group wait for each other at their rendezvous
DEFAULT_TIMEOUT_S = 300.0


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


def setup(device: torch.device | None = None, timeout: float | None = None) -> DistInfo:
    """Join the process group that torchrun describes (a no-op for a single process).

    ``timeout``: seconds any collective operation may wait for the other processes
    (default ``$PROBGEN_DIST_TIMEOUT``, else torch's own); past it the operation raises
    instead of hanging. :data:`DEFAULT_TIMEOUT_S` bounds the rendezvous of a restarted group.
    """
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
        import datetime

        if use_nccl:  # NCCL's watchdog turns a timed-out collective into an error
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        given = timeout if timeout is not None else os.environ.get("PROBGEN_DIST_TIMEOUT")
        seconds = float(given if given is not None else DEFAULT_TIMEOUT_S)
        # torch's own gloo timeout unless one is given: with an explicit timeout, gloo processes
        # were seen to abort at exit ("terminate called without an active exception") after a
        # run that had finished, failing the whole job
        kwargs = {} if given is None else {"timeout": datetime.timedelta(seconds=seconds)}
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        if attempt != "0":
            # the elastic agent's store outlives a restart: keys under a prefix of their own,
            # or a restarted process reads the address of a dead peer from the last attempt
            # (the first attempt joins as any torchrun process does)
            from torch.distributed.rendezvous import rendezvous

            store, _, _ = next(rendezvous("env://", rank, world,
                                          timeout=datetime.timedelta(seconds=seconds)))
            kwargs.update(store=dist.PrefixStore(f"probgen/attempt-{attempt}", store), rank=rank,
                          world_size=world)
        dist.init_process_group(backend="nccl" if use_nccl else "gloo", **kwargs)
    _INFO = DistInfo(rank=rank, world_size=world, local_rank=local)
    return _INFO


def cleanup() -> None:
    """Leave the process group. Called while an error propagates (from a ``finally``), it
    skips the closing barrier: the peers may be inside another collective, or dead, and
    waiting for them would only delay the failure that stops (or restarts) the group."""
    import sys

    global _INFO
    if _INFO.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            failing = sys.exc_info()[0] is not None
            if not failing:
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


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average ``t`` over processes, in place, and return it (identity for one process)."""
    if _INFO.distributed:
        all_reduce_sum(t).div_(_INFO.world_size)
    return t


def any_true(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any of them.

    Decisions that end a loop (a non-finite loss, a signal, a time budget) must be taken by
    all processes at the same step, or the ones that carry on wait for the others forever.
    """
    if not _INFO.distributed:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0])
    return bool(all_reduce_sum(t).item() > 0)


def share_outcome(fn, *args, **kwargs):
    """Run ``fn`` on rank 0 only and raise its error on every process.

    For the steps only rank 0 may take (creating or checking the run folder): when rank 0
    fails, the other processes stop with the same message instead of waiting for it.
    Returns ``fn``'s result on rank 0 and ``None`` elsewhere.
    """
    if not _INFO.distributed:
        return fn(*args, **kwargs)
    import torch.distributed as dist

    result, box = None, [None]
    if _INFO.is_main:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            box = [(type(e).__module__, type(e).__name__, str(e))]
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None and not _INFO.is_main:
        from probgen import errors

        module, name, message = box[0]
        cls = getattr(errors, name, None) if module == errors.__name__ else None
        raise (cls or errors.ProbgenError)(message)
    return result


def sync_gradients(params) -> None:
    """Average the gradients of ``params`` over processes (one flat all-reduce per step).

    What ``DistributedDataParallel`` does for ``nn.Module`` forward passes, for parameters
    that a Pyro model and guide touch through ``pyro.module``/``pyro.param`` inside a program,
    where no single module call exists to wrap. A missing gradient counts as zero.
    """
    if not _INFO.distributed:
        return
    params = [p for p in params if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])
    all_reduce_mean(flat)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        if p.grad is None:
            p.grad = g.view_as(p).clone()
        else:
            p.grad.copy_(g.view_as(p))


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


def process_group():
    """The hooks a training loop of :mod:`probgen.inference` takes to run across the processes
    of this group (:class:`~probgen.inference.loop.ProcessGroup`): rank and size, sums and
    agreement over processes, gradient averaging and ``DistributedDataParallel`` wrapping.
    For a single process, the one-process group whose hooks do nothing."""
    from probgen.inference.loop import SINGLE_PROCESS, ProcessGroup

    if not _INFO.distributed:
        return SINGLE_PROCESS
    return ProcessGroup(rank=_INFO.rank, world_size=_INFO.world_size, all_reduce_sum=all_reduce_sum,
                        any_true=any_true, sync_gradients=sync_gradients, wrap_module=wrap_ddp)


def launch(argv: list[str], nproc: int, max_restarts: int = 0) -> int:
    """Run ``probgen ARGV`` in ``nproc`` processes under torchrun on this machine and return
    its exit status (what ``probgen train ... --nproc N`` does).

    With ``max_restarts`` > 0 torchrun's elastic agent starts the whole group again when a
    process fails (a kill, an out-of-memory error), up to that many times; the new processes
    continue the run from its last checkpoint.
    """
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={int(nproc)}", f"--max-restarts={int(max_restarts)}",
           "-m", "probgen", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; say it, not warn it
    proc = subprocess.Popen(cmd, env=env)
    got: list[int] = []

    def forward(signum, frame):  # SIGTERM to this process: torchrun passes it to the workers
        got.append(signum)
        proc.send_signal(signum)

    old = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:
                # Ctrl-C reached the whole process group: the workers write a checkpoint and
                # stop; wait for them rather than kill them mid-write
                got.append(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, old)
    if got and code != 0:
        return 128 + int(got[0])
    return code
