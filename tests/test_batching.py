"""The one batcher (probgen.data.batching) and the loop's hooks (probgen.inference.loop):
seeded epochs, slices across processes, resuming mid-epoch, and hooks that are called."""

import math
from itertools import islice

import pytest
import torch

from probgen.data import Dataset
from probgen.data.batching import batch_stream, batches, derive_seed
from probgen.errors import ConfigError
from probgen.inference.em import SufficientStats, e_step, m_step
from probgen.inference.loop import SINGLE_PROCESS, LoopOptions, ProcessGroup, train_loop


def _grey(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 2, 2, generator=g)
    return Dataset("grey", train=x, val=x[:1], test=x[:1], shape=(1, 2, 2), kind="image",
                   binarize="dynamic")


def test_a_seeded_epoch_is_a_function_of_seed_and_epoch():
    d = _grey()
    a = list(d.batches("train", 8, seed=3, epoch=2))
    b = list(d.batches("train", 8, seed=3, epoch=2))
    c = list(d.batches("train", 8, seed=3, epoch=3))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))
    assert all(set(u.unique().tolist()) <= {0.0, 1.0} for u in a)  # binarised afresh
    # a resumed epoch (start=2) continues with the same batches, pixels included
    assert all(torch.equal(u, v) for u, v in zip(a[2:], d.batches("train", 8, seed=3, epoch=2, start=2)))


def test_processes_slice_the_global_batch_of_one_process_pixels_included():
    d = _grey(n=48)
    one = list(d.batches("train", 12, seed=1, epoch=0))
    parts = [list(d.batches("train", 4, seed=1, epoch=0, rank=r, world_size=3)) for r in range(3)]
    for step, global_batch in enumerate(one):
        assert torch.equal(torch.cat([parts[r][step] for r in range(3)]), global_batch)


def test_the_stream_crosses_epochs_like_the_epochs_it_is_made_of():
    x = torch.arange(10.0)
    seq = [b for (b,) in islice(batch_stream((x,), 3, seed=2), 6)]  # 3 full batches per epoch
    by_epoch = [b for e in (0, 1) for (b,) in batches((x,), 3, seed=2, epoch=e, drop_last=True)]
    assert all(torch.equal(u, v) for u, v in zip(seq, by_epoch))


def test_derived_seeds_differ_across_every_key():
    seeds = {derive_seed(s, e, k) for s in range(3) for e in range(3) for k in range(3)}
    assert len(seeds) == 27 and all(0 <= s < 2**63 for s in seeds)


def test_unknown_loop_options_are_named():
    with pytest.raises(ConfigError, match="unknown training option.*'epoch'.*Did you mean 'epochs'"):
        LoopOptions.of(epoch=3)
    with pytest.raises(ConfigError, match="training across processes needs seed="):
        LoopOptions(epochs=1, processes=ProcessGroup(world_size=2)).check()


def test_the_loop_calls_the_process_hooks_it_is_given():
    """A group of one process whose hooks record their calls: the loop asks it about every
    step's loss, hands it every step's gradients, pools each epoch's loss, and agrees on
    stopping through it."""
    calls = {"any_true": 0, "sync": 0, "sum": 0}

    def any_true(flag):
        calls["any_true"] += 1
        return bool(flag)

    def sync(params):
        calls["sync"] += 1

    def all_reduce_sum(t):
        calls["sum"] += 1
        return t

    # world_size 2 with the identity as the sum: the arithmetic of one process, the calls of two
    group = ProcessGroup(rank=0, world_size=2, all_reduce_sum=all_reduce_sum, any_true=any_true,
                         sync_gradients=sync)
    w = torch.nn.Parameter(torch.zeros(1))
    x = torch.arange(8.0).reshape(8, 1)
    stops = iter([False, True])
    res = train_loop(lambda xb: ((xb - w) ** 2).mean(), [w], x,
                     LoopOptions(epochs=5, batch_size=2, seed=0, processes=group,
                                 should_stop=lambda: next(stops)))
    assert res.epochs == 2 and res.steps == 4  # 8 examples in global batches of 4
    assert calls == {"any_true": 4 + 2, "sync": 4, "sum": 2}
    assert SINGLE_PROCESS.all_reduce_mean(torch.ones(2)).tolist() == [1.0, 1.0]


def test_pooled_statistics_of_two_shards_are_those_of_the_whole():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g, dtype=torch.float64)
    resp = torch.softmax(torch.randn(60, 3, generator=g, dtype=torch.float64), 1)
    from probgen.inference.em import stats_from_responsibilities

    params = m_step(stats_from_responsibilities(x, resp, "full"), "full", 1e-6, dtype=x.dtype)
    whole = e_step(x, params)
    shards = [e_step(part, params) for part in x.tensor_split(2)]
    other = shards[1]
    # the all-reduce of two processes, from the point of view of the first
    pooled = shards[0].pooled(lambda t: t + torch.cat([other.nk.reshape(-1), other.sum_x.reshape(-1),
                                                       other.sum_xx.reshape(-1),
                                                       other.log_likelihood.reshape(1),
                                                       torch.tensor([float(other.n)], dtype=t.dtype)]))
    assert isinstance(pooled, SufficientStats) and pooled.n == 60
    for name in ("nk", "sum_x", "sum_xx", "shift", "log_likelihood"):
        torch.testing.assert_close(getattr(pooled, name), getattr(whole, name))
    assert math.isfinite(float(pooled.log_likelihood))
