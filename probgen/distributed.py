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
           "all_reduce_mean", "any_true", "share_outcome", "global_batches", "dataset_batches",
           "sync_gradients", "all_reduce_stats", "epoch_seed", "wrap_ddp", "launch",
           "DEFAULT_TIMEOUT_S"]

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


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one process's random draws in one epoch: a function of (seed, epoch, rank)
    alone, so that a run resumed at an epoch boundary draws what an uninterrupted one would."""
    return (int(seed) * 1_000_003 + int(epoch)) * 1009 + int(rank) + 1


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


def dataset_batches(data, batch_size: int, *, seed: int, epoch: int, dist_info: DistInfo | None = None):
    """This process's part of each global batch of a probgen Dataset's train split.

    Like :func:`global_batches`, with the Dataset's dynamic binarisation (or the uniform
    noise of dequantized data) drawn for the whole global batch from a generator seeded by
    ``(seed, epoch)`` and then sliced, so the pixels a process sees do not depend on the
    number of processes.
    """
    d = dist_info or _INFO
    x = data.train
    n = int(x.shape[0])
    if n == 0:
        from probgen.errors import DataError

        raise DataError(f"the train split of {data.name!r} is empty: nothing to train on.")
    from probgen.data.transforms import bernoulli_pixels

    gen = None
    if data.binarize == "dynamic" or getattr(data, "bin_width", None) is not None:
        gen = torch.Generator(device=x.device).manual_seed(epoch_seed(seed, epoch, rank=-1))
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(n, generator=g).to(x.device)
    gb = batch_size * d.world_size
    if d.distributed and n < gb:
        from probgen.errors import ConfigError

        raise ConfigError(f"{n} training examples are fewer than one global batch of {gb} "
                          f"({d.world_size} processes x --batch-size {batch_size}): lower "
                          "--batch-size or use fewer processes.")
    # across processes an incomplete last global batch is dropped: every process takes the
    # same number of steps, and each averages over as many examples as the others
    stop = n - (n % gb) if d.distributed else n
    for start in range(0, stop, gb):
        xb = x[order[start:start + gb]]  # (<= gb, *shape) the global batch
        if gen is not None and data.binarize == "dynamic":
            xb = bernoulli_pixels(xb, gen)
        elif gen is not None:  # dequantized: fresh uniform noise in each value's bin
            xb = data.add_noise(xb, gen)
        mine = xb.tensor_split(d.world_size)[d.rank]
        if mine.shape[0]:
            yield mine


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


def all_reduce_stats(stats):
    """Pool :class:`~probgen.inference.em.SufficientStats` of the data shards of all processes
    (the data-parallel E-step: every sum is a sum over points)."""
    if not _INFO.distributed:
        return stats
    import dataclasses

    flat = torch.cat([stats.nk.reshape(-1), stats.sum_x.reshape(-1), stats.sum_xx.reshape(-1),
                      stats.log_likelihood.reshape(1).to(stats.nk.dtype),
                      torch.tensor([float(stats.n)], dtype=stats.nk.dtype, device=stats.nk.device)])
    all_reduce_sum(flat)
    sizes = [stats.nk.numel(), stats.sum_x.numel(), stats.sum_xx.numel(), 1, 1]
    nk, sx, sxx, ll, n = flat.split(sizes)
    return dataclasses.replace(stats, nk=nk.view_as(stats.nk), sum_x=sx.view_as(stats.sum_x),
                               sum_xx=sxx.view_as(stats.sum_xx),
                               log_likelihood=ll.reshape(()).to(stats.log_likelihood.dtype),
                               n=int(round(float(n))))


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
