"""The loss over class shards: every rank holds a block of classes, the batches of all
ranks are scored against all classes, and each rank gets back exactly what the
unsharded loss gives its own batch under data-parallel training.

Forward, per step: the embeddings and labels of all ranks are gathered; each rank runs
the kernel backend (:mod:`..kernels.backend`) on its block; the target cosine comes
from the rank that holds the target (a sum in which the others put zero); the
log-sum-exp statistics are combined by a maximum and a sum over ranks; each rank's
``k_top`` hard-negative candidates are gathered and the global ``k_top`` chosen, so
every rank computes the same margin terms (:func:`..kernels.function.margin_terms`)
for every row.

Backward: every rank computes, for all rows, the gradient that its block of classes
contributes (each row weighted by the incoming gradient and batch size of the rank it
came from) and the rows' gradients are summed back to the ranks they came from
(reduce-scatter). The block's weight gradient is averaged over ranks, as
DistributedDataParallel averages a replicated weight's gradient.
"""

from dataclasses import replace
from typing import List, NamedTuple

import torch
import torch.distributed as dist

from espnet_plugin_intertopk.distributed.shard import (
    ClassShard,
    all_gather_rows,
    gather_sizes,
    reduce_scatter_rows,
)
from espnet_plugin_intertopk.kernels.backend import GradientBuffer, KernelBackend
from espnet_plugin_intertopk.kernels.function import (
    correct_special,
    margin_terms,
    merge_argmax,
    plain_grad,
    predicted_class,
    special_rows,
    target_cosine,
)
from espnet_plugin_intertopk.kernels.margins import MarginConstants


class Rows(NamedTuple):
    """The rows of all ranks and where this rank's are."""

    sizes: List[int]  # rows of each rank
    owner: torch.Tensor  # (N,) rank each row came from
    batch: torch.Tensor  # (N,) float32 batch size of that rank (its loss is a mean)
    mine: slice  # this rank's rows


def _rows(batch: int, shard: ClassShard, device: torch.device) -> Rows:
    sizes = gather_sizes(batch, device)
    per_rank = torch.tensor(sizes, device=device)
    owner = torch.repeat_interleave(torch.arange(shard.world, device=device), per_rank)
    first = sum(sizes[: shard.rank])
    return Rows(sizes, owner, per_rank[owner].float(), slice(first, first + batch))


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    """(R, ...) the same-shaped ``t`` of every rank."""
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.stack(parts)


def _local(c: MarginConstants, shard: ClassShard) -> MarginConstants:
    """The constants a backend sees for the block: its classes, and no more hard
    negative candidates than it has."""
    return replace(c, nclasses=shard.size, k_top=min(c.k_top, shard.size))


def _local_label(label: torch.Tensor, shard: ClassShard) -> torch.Tensor:
    held = (label >= shard.start) & (label < shard.end)
    return torch.where(held, label - shard.start, -1)


def _global_best(maxima, shard: ClassShard):
    """(value, class) of each row's best plain cosine over all ranks' classes, from
    this rank's per-part ``row_best``/``row_idx`` (a ForwardResult or RowMaxima)."""
    val, idx = merge_argmax(maxima.row_best, maxima.row_idx)
    # Blocks are in class order, so ties keep the lower class as unsharded.
    return merge_argmax(_all_gather(val).t(), _all_gather(idx + shard.start).t())


def _hard_negatives(out, c: MarginConstants, shard: ClassShard):
    """The global ``k_top`` candidates (value, class, sub-center) of each row, chosen
    from every rank's own best ``k_top``."""
    n = out.cand_val.shape[0]
    if c.k_top == 0:
        empty = out.cand_idx.new_empty(n, 0)
        return out.cand_val.new_empty(n, 0), empty, empty
    val, j = out.cand_val.topk(min(c.k_top, out.cand_val.shape[1]), dim=1)
    idx = out.cand_idx.gather(1, j) + shard.start
    sub = out.cand_sub.gather(1, j).long()
    missing = c.k_top - val.shape[1]  # a block with fewer classes than k_top
    if missing:
        val = torch.cat([val, val.new_full((n, missing), float("-inf"))], 1)
        idx = torch.cat([idx, idx.new_zeros(n, missing)], 1)
        sub = torch.cat([sub, sub.new_zeros(n, missing)], 1)
    every = [_all_gather(t).permute(1, 0, 2).reshape(n, -1) for t in (val, idx, sub)]
    top_val, pick = every[0].topk(c.k_top, dim=1)
    return top_val, every[1].gather(1, pick), every[2].gather(1, pick)


class ShardedMarginSoftmaxCrossEntropy(torch.autograd.Function):
    """:class:`..kernels.function.MarginSoftmaxCrossEntropy` with the classes split
    over the ranks of the default process group.

    Inputs: this rank's ``xn`` (B, D) unit float32 embeddings and ``label`` (B,), its
    block ``weight`` (K * shard.size, D), the margin constants (of all classes), the
    backend, the weight's gradient buffer and the :class:`.shard.ClassShard`. Returns
    this rank's mean loss and predictions. Every rank must call it at each step.
    """

    @staticmethod
    def forward(ctx, xn, weight, label, c, backend, grad_buffer, shard):
        rows = _rows(xn.shape[0], shard, xn.device)
        X = all_gather_rows(xn, rows.sizes)
        L = all_gather_rows(label, rows.sizes)
        local_label = _local_label(L, shard)
        lc = _local(c, shard)
        out = backend.forward(X, weight, local_label, lc, keep=not backend.recompute)

        held = local_label >= 0
        cos_t, t_sub = target_cosine(
            X, weight, out.inv_norm, local_label.clamp_min(0), c.K
        )
        # Exactly one rank holds each target; the others add zeros.
        target = torch.stack(
            [torch.where(held, cos_t, 0.0), torch.where(held, t_sub, 0).float()]
        )
        dist.all_reduce(target)
        cos_t, t_sub = target[0], target[1].long()

        run_max = out.row_max.amax(1)
        dist.all_reduce(run_max, op=dist.ReduceOp.MAX)
        run_sum = (out.row_sum * torch.exp(out.row_max - run_max.unsqueeze(1))).sum(1)
        dist.all_reduce(run_sum)
        best_val, best_idx = _global_best(out, shard)
        top_val, top_idx, top_sub = _hard_negatives(out, c, shard)

        terms = margin_terms(cos_t, top_val, run_max, run_sum, c)
        loss = (terms.lse - terms.z_t)[rows.mine].mean()
        pred = predicted_class(cos_t, best_val, best_idx, L)[rows.mine]
        ctx.mark_non_differentiable(pred)
        ctx.c, ctx.lc, ctx.backend, ctx.grad_buffer = c, lc, backend, grad_buffer
        ctx.shard, ctx.rows, ctx.workspace = shard, rows, out.workspace
        ctx.save_for_backward(
            X,
            weight,
            local_label,
            out.inv_norm,
            terms.lse.float(),
            (terms.grad / rows.batch.unsqueeze(1)).float(),
            special_rows(L, t_sub, top_idx, top_sub, c.K),
            torch.cat([cos_t.unsqueeze(1), top_val], 1),
            *out.kept,
        )
        return loss.float(), pred

    @staticmethod
    def backward(ctx, grad_out, _grad_pred):
        X, weight, local_label, inv_norm, lse, g_special, srows, scos, *kept = (
            ctx.saved_tensors
        )
        c, shard, rows = ctx.c, ctx.shard, ctx.rows
        # Each row is weighted by the incoming gradient of the rank it came from.
        gs = _all_gather(grad_out.float().reshape(1)).view(-1)[rows.owner]
        coef = (gs * c.scale / rows.batch).unsqueeze(1)
        grad_x, grad_w = ctx.backend.backward(
            X,
            weight,
            local_label,
            inv_norm,
            lse,
            coef,
            ctx.lc,
            tuple(kept),
            ctx.workspace,
            ctx.grad_buffer,
        )
        # The margin correction of the special rows this rank holds; zero elsewhere.
        first, last = shard.start * c.K, shard.end * c.K
        held = (srows >= first) & (srows < last)
        delta = g_special * gs.unsqueeze(1) - plain_grad(scos, lse, coef, c.scale)
        correct_special(
            grad_x,
            grad_w,
            X,
            weight,
            inv_norm.view(-1),
            torch.where(held, srows - first, 0),
            scos,
            torch.where(held, delta, 0.0),
        )
        grad_w.div_(shard.world)
        grad_xn = reduce_scatter_rows(grad_x, rows.sizes, shard.rank)
        return grad_xn, grad_w, None, None, None, None, None


def sharded_argmax(
    xn: torch.Tensor,
    weight: torch.Tensor,
    c: MarginConstants,
    backend: KernelBackend,
    shard: ClassShard,
) -> torch.Tensor:
    """Predicted class of this rank's rows over all ranks' classes (every rank must
    call it)."""
    with torch.no_grad():
        rows = _rows(xn.shape[0], shard, xn.device)
        X = all_gather_rows(xn, rows.sizes)
        maxima = backend.predict(X, weight, _local(c, shard))
        return _global_best(maxima, shard)[1][rows.mine]


def sharded_margin_softmax_cross_entropy(
    xn, weight, label, constants, backend, grad_buffer: GradientBuffer, shard
):
    """Functional entry point of :class:`ShardedMarginSoftmaxCrossEntropy`."""
    return ShardedMarginSoftmaxCrossEntropy.apply(
        xn, weight, label, constants, backend, grad_buffer, shard
    )
