"""NT-Xent against an obviously-correct loop, and the DDP gather against the single-process loss."""

import math
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from clmr.losses import nt_xent


def slow_nt_xent(z_i, z_j, temperature):
    """SimCLR's loss written out view by view: -log(exp(s_pos) / sum_{k != a} exp(s_ak))."""
    z = torch.cat([z_i, z_j])
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for a in range(n2):
        positive = (a + n) % n2
        sims = [F.cosine_similarity(z[a], z[k], dim=0) / temperature for k in range(n2)]
        denominator = sum(torch.exp(sims[k]) for k in range(n2) if k != a)
        total = total - torch.log(torch.exp(sims[positive]) / denominator)
    return total / n2


@pytest.mark.parametrize("batch", [1, 2, 5, 16])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_equals_the_loop_with_gradients(batch, temperature):
    torch.manual_seed(batch)
    z_i = torch.randn(batch, 8, dtype=torch.float64, requires_grad=True)
    z_j = torch.randn(batch, 8, dtype=torch.float64, requires_grad=True)
    fast = nt_xent(z_i.float(), z_j.float(), temperature)
    slow = slow_nt_xent(z_i, z_j, temperature)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)
    g_fast = torch.autograd.grad(nt_xent(z_i, z_j, temperature), (z_i, z_j))
    g_slow = torch.autograd.grad(slow, (z_i, z_j))
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-6)


def test_identical_views_give_low_loss_and_random_views_about_log_2n_minus_1():
    torch.manual_seed(0)
    z = torch.randn(64, 32)
    assert nt_xent(z, z, 0.1).item() < 0.1
    random_loss = nt_xent(torch.randn(512, 256), torch.randn(512, 256), 1.0).item()
    assert random_loss == pytest.approx(math.log(2 * 512 - 1), rel=0.02)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="z_i and z_j"):
        nt_xent(torch.randn(4, 8), torch.randn(5, 8))


def _ddp_worker(rank, world, rendezvous, x_i, x_j, result_queue, gather):
    """Each rank holds its half of the batch; DDP averages gradients of the (gathered or local) loss."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    # a file rendezvous: no TCP port to race for with other processes on the machine
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = torch.nn.Linear(x_i.shape[1], 6)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    half = x_i.shape[0] // world
    part = slice(rank * half, (rank + 1) * half)
    # One forward over both views, so DDP's reducer sees each parameter used once per step.
    z = ddp(torch.cat([x_i[part], x_j[part]]))
    loss = nt_xent(z[:half], z[half:], 0.5, gather=gather)
    loss.backward()
    # numpy arrays pickle by value; tensors would be shared memory owned by an exiting process
    result_queue.put((rank, loss.item(), net.weight.grad.numpy(), net.bias.grad.numpy()))
    result_queue.close()
    result_queue.join_thread()  # the results are in the pipe before this process goes
    # Leave without running C++ static destructors: gloo's threads torn down at interpreter exit aborted
    # a rank now and then ("terminate called without an active exception"), a barrier before
    # destroy_process_group did not stop it, and nothing after the results is under test.
    dist.barrier()
    os._exit(0)


@pytest.mark.parametrize("gather", [True, False])
def test_ddp_loss_and_gradients_equal_single_process(tmp_path, gather):
    """Global negatives (`gather=True`): each rank's loss and the averaged gradient are those of the
    global batch. Local negatives (the reference's `world_size=1`): each rank's loss is that of its own
    half, and the averaged gradient that of the mean of the halves' losses."""
    torch.manual_seed(1)
    x_i, x_j = torch.randn(8, 10), torch.randn(8, 10)
    torch.manual_seed(0)
    net = torch.nn.Linear(10, 6)
    if gather:
        losses = [nt_xent(net(x_i), net(x_j), 0.5)] * 2
    else:
        losses = [nt_xent(net(x_i[p]), net(x_j[p]), 0.5) for p in (slice(0, 4), slice(4, 8))]
    (sum(losses) / 2).backward()

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (2, str(tmp_path / "rendezvous"), x_i, x_j, queue, gather)
    mp.spawn(_ddp_worker, args=args, nprocs=2, join=True)
    results = [queue.get(timeout=30) for _ in range(2)]
    for rank, rank_loss, w_grad, b_grad in results:
        assert rank_loss == pytest.approx(losses[rank].item(), rel=1e-5)
        torch.testing.assert_close(torch.from_numpy(w_grad), net.weight.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.from_numpy(b_grad), net.bias.grad, rtol=1e-4, atol=1e-6)
    if not gather:  # the halves' losses differ from the global one: the option changes the objective
        assert abs(losses[0].item() - nt_xent(net(x_i), net(x_j), 0.5).item()) > 1e-3
