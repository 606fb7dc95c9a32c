"""NT-Xent (normalised temperature-scaled cross entropy), the SimCLR loss, with a DDP-correct gather."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the sum over ranks of the gradient of its slice.

    Every rank computes the same global loss; summing the slice gradients (then DDP's average over
    ranks) gives exactly the single-process gradient (`torch.distributed.all_gather` alone keeps no
    gradient for the other ranks' slices).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.size = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # all_reduce works on gloo and NCCL alike
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank (rank order) keeping gradients; identity without DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def nt_xent(
    z_i: torch.Tensor, z_j: torch.Tensor, temperature: float = 0.5, gather: bool = True
) -> torch.Tensor:
    """NT-Xent of N positive pairs (z_i[k], z_j[k]): cosine similarities / temperature, each of the
    2N views classifying its partner against the 2N - 2 others; mean over the 2N views.

    Under `torch.distributed` with `gather=True` the negatives are the whole global batch, positives
    stay paired across ranks, and the value equals the single-process loss of the global batch. With
    `gather=False` each process uses its own batch only, as the reference does (its
    `NT_Xent(batch_size, temperature, world_size=1)` in clmr/modules/contrastive_learning.py).
    """
    if z_i.shape != z_j.shape or z_i.dim() != 2:
        raise ValueError(f"z_i and z_j must both be (N, D); got {tuple(z_i.shape)} and {tuple(z_j.shape)}")
    if gather:
        z_i, z_j = gather_with_grad(z_i), gather_with_grad(z_j)
    n = z_i.shape[0]
    z = F.normalize(torch.cat([z_i, z_j]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.arange(2 * n, device=z.device).roll(n)  # view k's partner is k + N (mod 2N)
    return F.cross_entropy(logits, targets)
