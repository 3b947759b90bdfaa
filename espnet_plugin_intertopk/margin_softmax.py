"""Fused sub-center margin softmax cross-entropy (the numerical kernel of the loss).

The reference implementation builds about ten (batch x classes) tensors per step. This
kernel computes the same loss and gradients with:

* margins applied only where they change a logit (the target column and the ``k_top``
  hard negatives), everything else is the plain scaled cosine;
* the weight normalisation folded into the matrix products (no normalised copy of the
  weight is ever materialised);
* in the forward pass one product per sub-center, so that the maximum over
  sub-centers is element-wise; in the backward pass one product each way per block on
  the weight's own class-major rows, the weight gradient written straight into place;
* a hand-written backward that needs only the sub-center cosine maximum, its arg-max
  (one byte per entry) and a few (batch x k) numbers: the blocks get the plain softmax
  gradient, and the margin terms of the target and the hard negatives are put in once
  afterwards, as a correction on their (1 + k_top) weight rows per example (the target
  cosine itself comes from the target's own weight rows, not from the blocks);
* classes walked in blocks, whose element-wise work is done by :mod:`block_kernels`
  (eager, or fused by ``torch.compile``) in scratch buffers reused from block to block;
  on CPU with ``compile_kernels`` both paths run in the fused C++ kernels of
  :mod:`fused_cpu` instead (the same maths, tile by tile in cache).

With ``chunk_size=None`` the (batch x classes) cosine is kept for the backward pass
(fastest). With a chunk size, classes are processed in chunks, each leaving only its
log-sum-exp statistics and top-k candidates per row (merged after the last chunk), and
the backward recomputes each chunk, so the extra memory is proportional to
batch x chunk instead of batch x K x classes.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from espnet_plugin_intertopk import fused_cpu
from espnet_plugin_intertopk.block_kernels import block_kernels

# Rows of the weight with a norm below this are treated like F.normalize does.
NORM_EPS = 1e-12
# The dense path still walks the classes in blocks of this many (keeping every block's
# cosines): on CPU the element-wise passes over a block then run on cache-resident data.
DENSE_BLOCK = 4096
# On accelerators there is no such cache to fit and every block costs some twenty small
# kernel launches, so blocks are larger there (not measured yet: no GPU so far).
DENSE_BLOCK_ACCELERATOR = 65536


@dataclass(frozen=True)
class MarginConstants:
    """Everything the kernel needs to know about the margin state of the loss."""

    scale: float
    cos_m: float
    sin_m: float
    th: float
    mmm: float
    easy_margin: bool
    cos_mp: float
    sin_mp: float
    k_top: int
    K: int
    nclasses: int


def _sine(cos: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((1.0 - cos * cos).clamp(0.0, 1.0))


def _dsine(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """d sin / d cos = -cos / sin, taken as 0 where sin == 0 (|cos| >= 1).

    The true derivative is infinite there; the reference returns NaN. Zero keeps the
    step finite and changes nothing anywhere else.
    """
    safe = torch.where(sin > 0, sin, torch.ones_like(sin))
    return torch.where(sin > 0, -cos / safe, torch.zeros_like(sin))


def target_logit(cos: torch.Tensor, c: MarginConstants) -> Tuple[torch.Tensor, torch.Tensor]:
    """Margin-modified target cosine phi(cos) and d phi / d cos."""
    sin = _sine(cos)
    phi = cos * c.cos_m - sin * c.sin_m
    dphi = c.cos_m - c.sin_m * _dsine(cos, sin)
    if c.easy_margin:
        keep = cos > 0
    else:
        keep = cos > c.th
    phi = torch.where(keep, phi, cos - (0.0 if c.easy_margin else c.mmm))
    dphi = torch.where(keep, dphi, torch.ones_like(dphi))
    return phi, dphi


def hard_negative_logit(
    cos: torch.Tensor, c: MarginConstants
) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos(theta - mp) for the hard negatives, and its derivative in cos."""
    sin = _sine(cos)
    psi = cos * c.cos_mp + sin * c.sin_mp
    dpsi = c.cos_mp + c.sin_mp * _dsine(cos, sin)
    return psi, dpsi


def _chunks(
    nclasses: int, chunk_size: Optional[int], device: torch.device
) -> List[Tuple[int, int]]:
    dense = DENSE_BLOCK if device.type == "cpu" else DENSE_BLOCK_ACCELERATOR
    step = dense if chunk_size is None else chunk_size
    return [(s, min(s + step, nclasses)) for s in range(0, nclasses, step)]


def _scratch(numel: int, device: torch.device) -> torch.Tensor:
    """A flat buffer that every block of a step reuses: one allocation per step instead
    of one per block, so that large blocks are not faulted in afresh each time."""
    return torch.empty(numel, device=device)


def _shaped(buf: torch.Tensor, *shape: int) -> torch.Tensor:
    return buf[: math.prod(shape)].view(shape)


def _block_products(xn, weight, start, end, K, buf):
    """(K, B, c) in ``buf``: embeddings times the raw weight rows of each sub-center of
    classes [start, end). Sub-center k is a (c, D) view of the class-major weight with
    row stride K*D, which BLAS takes as it is; each product lands contiguous, so the
    maximum over sub-centers is element-wise."""
    w3 = weight.view(-1, K, weight.shape[1])[start:end]
    out = _shaped(buf, K, xn.shape[0], end - start)
    for k in range(K):
        torch.mm(xn, w3[:, k].t(), out=out[k])
    return out


def _local_target(label: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Column of each row's target in classes [start, end), -1 where it is elsewhere."""
    return torch.where((label >= start) & (label < end), label - start, -1)


def _forward_block(kern, xn, weight, inv_norm, local, start, end, c, buf):
    """The block kernel's outputs for classes [start, end) (``local``: each row's
    target column in the block, -1 where it is elsewhere)."""
    cos = _block_products(xn, weight, start, end, c.K, buf)
    inv = inv_norm[start:end].t().contiguous()
    return kern.forward(cos, inv, local, c.scale)


def _target_cosine(xn, weight, inv_norm, label, K):
    """Each row's target cosine (maximum over the target's sub-centers) and the
    sub-center that wins it (the first on ties), from the target rows alone."""
    rows = weight.view(-1, K, weight.shape[1])[label]
    cos = torch.bmm(rows, xn.unsqueeze(2)).squeeze(2) * inv_norm[label]
    return cos.max(dim=1)


def _merge_argmax(row_best, row_idx):
    """(value, class) of the maximum over blocks of the blocks' row maxima ``row_best``
    (B, blocks) at classes ``row_idx``; ties keep the lower class (the earlier block)."""
    best_val, block = row_best.max(1)
    return best_val, row_idx.gather(1, block.unsqueeze(1)).squeeze(1)


def inverse_norms(weight: torch.Tensor, K: int) -> torch.Tensor:
    """(C, K) 1 / |w| per class and sub-center (norms floored like F.normalize)."""
    norms = torch.linalg.vector_norm(weight, dim=1).clamp_min(NORM_EPS)
    return norms.reciprocal().view(-1, K)


def _forward_blocks(kern, xn, weight, inv_norm, label, c, chunks, buf, kept):
    """Forward of the block kernels over ``chunks``, appending each block's (best, arg)
    to ``kept`` unless it is None.

    Returns (B, blocks) row statistics (row_best, row_idx, row_max, row_sum) and the
    blocks' hard-negative candidates (cand_val, cand_idx, cand_sub), merged by the
    caller (a handful of numbers per block and row).
    """
    B = xn.shape[0]
    stats, cands = [], []
    for start, end in chunks:
        local = _local_target(label, start, end)
        best, arg, row_best, row_idx, row_max, row_sum = _forward_block(
            kern, xn, weight, inv_norm, local, start, end, c, buf
        )
        stats.append((row_best, row_idx + start, row_max, row_sum))
        if c.k_top > 0:
            v, i = best.topk(min(c.k_top, end - start), dim=1)
            # The sub-center each candidate's plain gradient goes to in backward.
            cands.append((v, i + start, arg.gather(1, i)))
        if kept is not None:
            kept.append((best, arg))
    if not cands:
        cands = [(xn.new_empty(B, 0), label.new_empty(B, 0),
                  label.new_empty(B, 0, dtype=torch.uint8))]
    row_stats = (torch.stack(t, 1) for t in zip(*stats))
    return (*row_stats, *(torch.cat(t, 1) for t in zip(*cands)))


def _backward_blocks(ctx, xn, weight, inv_norm, lse, coef, label):
    """(grad_x, grad_w) of the plain softmax through the block kernels: from the kept
    blocks of the dense path, or recomputing each block (chunked path, and a second
    backward of the dense path, whose kept blocks the eager kernel overwrote)."""
    c, kern = ctx.c, ctx.kern
    B, K = xn.shape[0], c.K
    grad_x = torch.zeros_like(xn)
    grad_w = torch.empty_like(weight)
    chunks = _chunks(c.nclasses, ctx.chunk_size, xn.device)
    g_buf = ctx.scratch
    cos_buf = _scratch(g_buf.numel(), xn.device) if ctx.kept is None else None
    for block, (start, end) in enumerate(chunks):
        if ctx.kept is not None:
            best, arg = ctx.kept[block]
        else:
            local = _local_target(label, start, end)
            best, arg = _forward_block(
                kern, xn, weight, inv_norm, local, start, end, c, cos_buf
            )[:2]
        g = _shaped(g_buf, B, end - start, K)
        kern.backward(g, best, arg, lse, inv_norm[start:end], coef, c.scale)
        # Class-major (B, c*K) against the weight's own rows: one product each way,
        # the weight gradient written straight into its place.
        rows_w = slice(start * K, end * K)
        g2 = g.view(B, -1)
        grad_x.addmm_(g2, weight[rows_w])
        torch.mm(g2.t(), xn, out=grad_w[rows_w])
        kern.project(grad_w[rows_w], weight[rows_w], inv_norm[start:end].reshape(-1))
    ctx.kept = None
    return grad_x, grad_w


class GradientBuffer:
    """The memory of a weight's last gradient, which the fused CPU kernels take again
    when nothing else references it any more (see ``weight_gradient`` in
    ``cpu_kernels.cpp``). One per loss module: two losses never take each other's."""

    __slots__ = ("tensor",)

    def __init__(self) -> None:
        self.tensor: Optional[torch.Tensor] = None


class MarginSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the sub-center inter-top-k margin softmax.

    Inputs: ``xn`` (B, D) unit-norm float32 embeddings, ``weight`` (K*C, D) float32 raw
    weight, ``label`` (B,) int64, the margin constants, the chunk size, the block
    kernels (:mod:`block_kernels`), the fused CPU kernels (:mod:`fused_cpu`, or None:
    then the block kernels run) and the :class:`GradientBuffer` of the weight. Returns
    the scalar loss and the predicted classes (arg-max of the plain sub-center cosine,
    no margins).
    """

    @staticmethod
    def forward(
        ctx, xn, weight, label, c: MarginConstants, chunk_size: Optional[int], kern, fused,
        grad_buffer,
    ):
        B = xn.shape[0]
        s = c.scale
        dev = xn.device
        if fused is not None:
            best, arg, inv_norm, *stats = fused.forward_tiles(
                xn, weight, label, c.K, s, c.k_top, fused_cpu.TILE, chunk_size is None
            )
            kept, buf = ((best, arg) if chunk_size is None else None), None
        else:
            inv_norm = inverse_norms(weight, c.K)
            chunks = _chunks(c.nclasses, chunk_size, dev)
            buf = _scratch(c.K * B * (chunks[0][1] - chunks[0][0]), dev)
            kept = [] if chunk_size is None else None
            stats = _forward_blocks(kern, xn, weight, inv_norm, label, c, chunks, buf, kept)
        row_best, row_idx, row_max, row_sum, cand_val, cand_idx, cand_sub = stats
        cos_t, t_sub = _target_cosine(xn, weight, inv_norm, label, c.K)
        best_val, best_idx = _merge_argmax(row_best, row_idx)
        run_max = row_max.amax(1)
        run_sum = (row_sum * torch.exp(row_max - run_max.unsqueeze(1))).sum(1)
        top_val, j = cand_val.topk(c.k_top, dim=1)
        top_idx, top_sub = cand_idx.gather(1, j), cand_sub.gather(1, j)

        # Put the target and the hard negatives back with their margins. A few numbers
        # per row: done in float64 so the removal of the plain hard-negative terms from
        # the blocks' sum cannot lose what is left of it.
        d = torch.float64
        phi, dphi = target_logit(cos_t.to(d), c)
        psi, dpsi = hard_negative_logit(top_val.to(d), c)
        z_t, z_h, z_plain = phi * s, psi * s, top_val.to(d) * s
        rmax = run_max.to(d)
        top = torch.maximum(rmax, z_t)
        if c.k_top > 0:
            top = torch.maximum(top, z_h.max(dim=1).values)
        rest = (run_sum.to(d) * torch.exp(rmax - top)) - torch.exp(
            z_plain - top.unsqueeze(1)
        ).sum(1)
        total = (
            rest.clamp_min(0.0)
            + torch.exp(z_h - top.unsqueeze(1)).sum(1)
            + torch.exp(z_t - top)
        )
        lse = top + torch.log(total)
        loss = (lse - z_t).mean()

        # Gradient of the mean loss w.r.t. the special logits' cosines, per unit output.
        g_t = (s / B) * (torch.exp(z_t - lse) - 1.0) * dphi
        g_h = (s / B) * torch.exp(z_h - lse.unsqueeze(1)) * dpsi
        # Prediction on the plain cosine (ties go to the lower index, like argmax).
        target_wins = (cos_t > best_val) | ((cos_t == best_val) & (label < best_idx))
        pred = torch.where(target_wins, label, best_idx)
        ctx.mark_non_differentiable(pred)
        ctx.c, ctx.chunk_size, ctx.kept, ctx.kern, ctx.fused = c, chunk_size, kept, kern, fused
        ctx.grad_buffer = grad_buffer
        # The backward reuses the scratch buffer: a fresh one of this size is
        # page-faulted in anew (a few ms per step on CPU).
        ctx.scratch = buf
        # The weight rows (class * K + winning sub-center) of the target and the hard
        # negatives, and their plain cosines, for the backward's sparse correction.
        special_rows = torch.cat([label.unsqueeze(1), top_idx], 1) * c.K + torch.cat(
            [t_sub.unsqueeze(1), top_sub.long()], 1
        )
        ctx.save_for_backward(
            xn, weight, inv_norm, lse.float(),
            torch.cat([g_t.unsqueeze(1), g_h], 1).float(), special_rows,
            torch.cat([cos_t.unsqueeze(1), top_val], 1), label,
        )
        return loss.float(), pred

    @staticmethod
    def backward(ctx, grad_out, _grad_pred):
        xn, weight, inv_norm, lse, g_special, special_rows, special_cos, label = (
            ctx.saved_tensors
        )
        c = ctx.c
        gs = grad_out.float()
        coef = gs * (c.scale / xn.shape[0])
        if ctx.fused is not None:
            # Kept (dense) or recomputed tile by tile (chunked). The fused kernels leave
            # best and arg intact: kept for a second backward too.
            best, arg = ctx.kept if ctx.kept is not None else (None, None)
            grad_x, grad_w = ctx.fused.backward_tiles(
                xn, weight, label, best, arg, inv_norm, lse, coef.item(), c.scale,
                fused_cpu.TILE, ctx.grad_buffer.tensor,
            )
            # Another tensor object on the same memory: autograd still takes grad_w
            # itself as .grad, and the next step can tell whether that was dropped.
            ctx.grad_buffer.tensor = grad_w.detach()
        else:
            grad_x, grad_w = _backward_blocks(ctx, xn, weight, inv_norm, lse, coef, label)
        _correct_special(
            grad_x, grad_w, xn, weight, inv_norm.view(-1), special_rows, special_cos,
            g_special * gs - _plain_grad(special_cos, lse, coef, c.scale),
        )
        return grad_x, grad_w, None, None, None, None, None, None


def _plain_grad(cos, lse, coef, scale):
    """(B, S) the plain softmax gradient that the block kernel gave these cosines, per
    unit inverse norm (zero for the target, whose cosine the blocks hold at -inf)."""
    plain = torch.exp(cos[:, 1:] * scale - lse.unsqueeze(1)) * coef
    return torch.cat([plain.new_zeros(plain.shape[0], 1), plain], 1)


def _correct_special(grad_x, grad_w, xn, weight, inv_norm, rows, cos, delta):
    """Add, in place, the gradient of the target and hard-negative logits that the plain
    blocks got wrong: ``delta`` (B, S) per unit inverse norm is added at weight rows
    ``rows`` (B, S), whose cosines are ``cos``.

    The weight part is already projected (normalisation backward, as in the blocks):
    d/dw of the cosine x . w / |w| is (x - cos * w / |w|) / |w|.
    """
    inv = inv_norm[rows]
    delta = delta * inv
    w = weight[rows]
    grad_x.add_(torch.bmm(delta.unsqueeze(1), w).squeeze(1))
    unit = w * (inv * cos).unsqueeze(2)
    upd = delta.unsqueeze(2) * (xn.unsqueeze(1) - unit)
    grad_w.index_add_(0, rows.reshape(-1), upd.reshape(-1, upd.shape[2]))


def _fused_kernels(compile_kernels: bool, device: torch.device):
    """The fused CPU kernels where ``compile_kernels`` asks for compiled kernels on CPU,
    else None (then the block kernels run: eager, or ``torch.compile`` on CUDA)."""
    return fused_cpu.load() if compile_kernels and device.type == "cpu" else None


def margin_softmax_cross_entropy(
    xn: torch.Tensor,
    weight: torch.Tensor,
    label: torch.Tensor,
    constants: MarginConstants,
    chunk_size: Optional[int] = None,
    compile_kernels: bool = False,
    grad_buffer: Optional[GradientBuffer] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Functional entry point of :class:`MarginSoftmaxCrossEntropy`: (loss, pred).

    ``grad_buffer``: where the fused CPU kernels keep the weight gradient's memory for the
    next step (the loss module's own; a new one, so nothing is reused, when None).
    """
    return MarginSoftmaxCrossEntropy.apply(
        xn, weight, label, constants, chunk_size, block_kernels(compile_kernels),
        _fused_kernels(compile_kernels, xn.device),
        GradientBuffer() if grad_buffer is None else grad_buffer,
    )


def subcenter_argmax(
    xn: torch.Tensor,
    weight: torch.Tensor,
    constants: MarginConstants,
    chunk_size: Optional[int] = None,
    compile_kernels: bool = False,
) -> torch.Tensor:
    """Predicted class: arg-max of the plain sub-center cosine, with the same kernels as
    the loss."""
    no_target = torch.full((xn.shape[0],), -1, dtype=torch.long, device=xn.device)
    with torch.no_grad():
        fused = _fused_kernels(compile_kernels, xn.device)
        if fused is not None:
            row_best, row_idx = fused.forward_tiles(
                xn, weight, no_target, constants.K, constants.scale, 0, fused_cpu.TILE, False
            )[3:5]
        else:
            row_best, row_idx = _block_row_maxima(
                block_kernels(compile_kernels), xn, weight, constants, chunk_size, no_target
            )
    return _merge_argmax(row_best, row_idx)[1]


def _block_row_maxima(kern, xn, weight, constants, chunk_size, local_target):
    """(B, blocks) row maxima of the plain sub-center cosine and their classes, block by
    block (``local_target``: -1 for every row, no column excluded)."""
    chunks = _chunks(constants.nclasses, chunk_size, xn.device)
    buf = _scratch(constants.K * xn.shape[0] * (chunks[0][1] - chunks[0][0]), xn.device)
    inv_norm = inverse_norms(weight, constants.K)
    row_best, row_idx = [], []
    for start, end in chunks:
        out = _forward_block(
            kern, xn, weight, inv_norm, local_target, start, end, constants, buf
        )
        row_best.append(out[2])
        row_idx.append(out[3] + start)
    return torch.stack(row_best, 1), torch.stack(row_idx, 1)
