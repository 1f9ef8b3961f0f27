"""Two gloo processes on the CPU follow one process with the same global batch."""

import os
import socket

import torch
import torch.multiprocessing as mp

from probgen import distributed as pdist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(96, 1, generator=g)
    return x, y


def _train(world: int, rank: int, batch: int, steps_epochs: int = 2) -> dict:
    x, y = _data()
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model = pdist.wrap_ddp(net, torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    info = pdist.DistInfo(rank=rank, world_size=world)
    for epoch in range(steps_epochs):
        for idx in pdist.global_batches(len(x), batch, seed=3, epoch=epoch, dist_info=info, drop_last=True):
            opt.zero_grad()
            loss = ((model(x[idx]) - y[idx]) ** 2).mean()
            loss.backward()
            opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _worker(rank, world, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    pdist.setup(torch.device("cpu"))
    try:
        state = _train(world, rank, batch=8)
        if rank == 0:  # plain arrays: shared-memory tensors die with the worker
            queue.put({k: v.numpy() for k, v in state.items()})
    finally:
        pdist.cleanup()


def test_global_batches_partition_each_epoch():
    seen = []
    for rank in range(3):
        info = pdist.DistInfo(rank=rank, world_size=3)
        seen += [i for b in pdist.global_batches(50, 4, seed=0, epoch=1, dist_info=info) for i in b.tolist()]
    assert sorted(seen) == list(range(50))
    one = list(pdist.global_batches(50, 12, seed=0, epoch=1))
    per_rank = [list(pdist.global_batches(50, 4, seed=0, epoch=1, dist_info=pdist.DistInfo(r, 3)))
                for r in range(3)]
    for step, global_batch in enumerate(one[:-1]):  # the last batch is short
        assert torch.equal(global_batch, torch.cat([per_rank[r][step] for r in range(3)]))


def test_two_gloo_processes_match_one_process():
    world = 2
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    state = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    single = _train(world=1, rank=0, batch=16)
    for k in single:
        torch.testing.assert_close(torch.from_numpy(state[k]), single[k], rtol=1e-5, atol=1e-6)
