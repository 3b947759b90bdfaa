"""Fused sub-center margin softmax cross-entropy (the numerical kernel of the loss).

The reference implementation builds about ten (batch x classes) tensors per step. This
kernel computes the same loss and gradients with:

* margins applied only where they change a logit (the target column and the ``k_top``
  hard negatives), everything else is the plain scaled cosine;
* the weight normalisation folded into the matrix products (no normalised copy of the
  weight is ever materialised);
* one product per sub-center, so that the maximum over sub-centers is element-wise;
* a hand-written backward that needs only the sub-center cosine maximum, its arg-max
  (one byte per entry) and a few (batch x k) numbers.

With ``chunk_size=None`` the (batch x classes) cosine is kept for the backward pass
(fastest). With a chunk size, classes are processed in chunks with a streaming
log-sum-exp and a running top-k, and the backward recomputes each chunk, so the extra
memory is proportional to batch x chunk instead of batch x K x classes.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

# Rows of the weight with a norm below this are treated like F.normalize does.
NORM_EPS = 1e-12
# The dense path still walks the classes in blocks of this many (keeping every block's
# cosines): the element-wise passes over a block then run on cache-resident data.
DENSE_BLOCK = 4096


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


def weight_norms(weight: torch.Tensor) -> torch.Tensor:
    """Row norms of the weight, floored like F.normalize does (K*C floats)."""
    return torch.linalg.vector_norm(weight, dim=1).clamp_min(NORM_EPS)


def _subcenter_views(weight: torch.Tensor, norms: torch.Tensor, start: int, end: int, K: int):
    """Sub-center k of classes [start, end): a (c, D) view of the class-major weight with
    row stride K*D (BLAS takes it as is, no copy), and its (c,) norms."""
    w3 = weight.view(weight.shape[0] // K, K, weight.shape[1])[start:end]
    n2 = norms.view(-1, K)[start:end]
    return [(w3[:, k], n2[:, k]) for k in range(K)]


def subcenter_cosine(
    xn: torch.Tensor, weight: torch.Tensor, norms: torch.Tensor, start: int, end: int, K: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cosine between normalised embeddings and classes [start, end), max over sub-centers.

    Returns the (B, end - start) maximum and its sub-center arg-max (uint8). One product
    per sub-center gives contiguous (B, c) blocks, so the maximum over sub-centers is
    an element-wise maximum rather than a strided reduction, and the normalisation of
    the weight is applied to the products (no normalised copy of the weight).
    """
    best = arg = None
    for k, (w, n) in enumerate(_subcenter_views(weight, norms, start, end, K)):
        cos = torch.matmul(xn, w.t()).div_(n)
        if best is None:
            best, arg = cos, torch.zeros(cos.shape, dtype=torch.uint8, device=cos.device)
        else:
            # arg += better * (k - arg), in uint8 arithmetic: masked_fill_ and where are
            # several times slower than these on CPU.
            better = (cos > best).view(torch.uint8)
            arg.sub_(arg * better).add_(better * k)
            torch.maximum(best, cos, out=best)
    return best, arg


def _running_argmax(cos, start, best_val, best_idx):
    """Fold the row maxima of a (B, c) chunk that starts at class ``start`` into the
    running (value, class) maximum; returns the chunk's row maxima too."""
    v, i = cos.max(dim=1)
    better = v > best_val
    return v, torch.where(better, v, best_val), torch.where(better, i + start, best_idx)


def _chunks(nclasses: int, chunk_size: Optional[int]) -> List[Tuple[int, int]]:
    step = DENSE_BLOCK if chunk_size is None else chunk_size
    return [(s, min(s + step, nclasses)) for s in range(0, nclasses, step)]


def _local_target(label: torch.Tensor, start: int, end: int):
    in_chunk = (label >= start) & (label < end)
    local = (label - start).clamp(0, end - start - 1).unsqueeze(1)
    return in_chunk, local


def _masked_chunk(xn, weight, norms, label, start, end, K):
    """Chunk cosines with the target column set to -inf (it is handled separately)."""
    cos, arg = subcenter_cosine(xn, weight, norms, start, end, K)
    in_chunk, local = _local_target(label, start, end)
    own = cos.gather(1, local)
    cos.scatter_(1, local, torch.where(in_chunk.unsqueeze(1), float("-inf"), own))
    return cos, arg, own.squeeze(1), in_chunk


class MarginSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the sub-center inter-top-k margin softmax.

    Inputs: ``xn`` (B, D) unit-norm float32 embeddings, ``weight`` (K*C, D) float32 raw
    weight, ``label`` (B,) int64. Returns the scalar loss and the predicted classes
    (arg-max of the plain sub-center cosine, no margins).
    """

    @staticmethod
    def forward(ctx, xn, weight, label, c: MarginConstants, chunk_size: Optional[int]):
        B = xn.shape[0]
        s = c.scale
        dev = xn.device
        # A finite floor instead of -inf keeps the streaming rescale free of inf - inf.
        run_max = torch.full((B,), -1e30, device=dev)
        run_sum = torch.zeros(B, device=dev)
        cos_t = torch.zeros(B, device=dev)
        top_val = torch.empty(B, 0, device=dev)
        top_idx = torch.empty(B, 0, dtype=torch.long, device=dev)
        best_val = torch.full((B,), -math.inf, device=dev)
        best_idx = torch.zeros(B, dtype=torch.long, device=dev)
        kept = [] if chunk_size is None else None
        norms = weight_norms(weight)
        for start, end in _chunks(c.nclasses, chunk_size):
            cos, arg, own, in_chunk = _masked_chunk(xn, weight, norms, label, start, end, c.K)
            cos_t = torch.where(in_chunk, own, cos_t)
            if c.k_top > 0:
                v, i = cos.topk(min(c.k_top, end - start), dim=1)
                top_val, j = torch.cat([top_val, v], 1).topk(
                    min(c.k_top, top_val.shape[1] + v.shape[1]), dim=1
                )
                top_idx = torch.cat([top_idx, i + start], 1).gather(1, j)
            v, best_val, best_idx = _running_argmax(cos, start, best_val, best_idx)
            new_max = torch.maximum(run_max, v * s)
            run_sum = run_sum * torch.exp(run_max - new_max) + torch.exp(
                cos * s - new_max.unsqueeze(1)
            ).sum(1)
            run_max = new_max
            if kept is not None:
                kept.append((cos, arg))

        # Put the target and the hard negatives back with their margins. A few numbers
        # per row: done in float64 so the removal of the plain hard-negative terms from
        # the running sum cannot lose what is left of it.
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
        ctx.c, ctx.chunk_size, ctx.kept = c, chunk_size, kept
        ctx.save_for_backward(
            xn, weight, norms, label, lse.float(), g_t.float(), g_h.float(), top_idx
        )
        return loss.float(), pred

    @staticmethod
    def backward(ctx, grad_out, _grad_pred):
        xn, weight, norms, label, lse, g_t, g_h, top_idx = ctx.saved_tensors
        c, chunk_size = ctx.c, ctx.chunk_size
        B, K, s = xn.shape[0], c.K, c.scale
        grad_x = torch.zeros_like(xn)
        grad_w = torch.empty_like(weight)
        gs = grad_out.float()
        for block, (start, end) in enumerate(_chunks(c.nclasses, chunk_size)):
            if ctx.kept is not None:
                cos, arg = ctx.kept[block]
            else:
                cos, arg, _, _ = _masked_chunk(xn, weight, norms, label, start, end, K)
            # Plain softmax gradient (the target is -inf here, so it gets 0), computed in
            # place: the cosines are not needed afterwards ...
            gc = cos.mul_(s).sub_(lse.unsqueeze(1)).exp_().mul_(s / B)
            # ... then the target and the hard negatives, through their margins.
            in_chunk, local = _local_target(label, start, end)
            gc.scatter_add_(1, local, torch.where(in_chunk, g_t, 0.0).unsqueeze(1))
            if c.k_top > 0:
                hit = (top_idx >= start) & (top_idx < end)
                loc = (top_idx - start).clamp(0, end - start - 1)
                delta = torch.where(hit, g_h - gc.gather(1, loc), 0.0)
                gc.scatter_add_(1, loc, delta)
            gc.mul_(gs)
            # Route each class gradient to the sub-center that won the max, divided by
            # that row's norm (the normalisation is folded into the products).
            gw3 = grad_w.view(-1, K, grad_w.shape[1])[start:end]
            for k, (w, n) in enumerate(_subcenter_views(weight, norms, start, end, K)):
                g = (gc * (arg == k)).div_(n)
                grad_x.addmm_(g, w)
                gw = torch.matmul(g.t(), xn)
                # d normalize(w) / d w removes the component along w.
                dot = torch.bmm(gw.unsqueeze(1), w.unsqueeze(2)).view(-1)
                torch.addcmul(gw, w, (dot / (n * n)).unsqueeze(1), value=-1.0, out=gw3[:, k])
        ctx.kept = None
        return grad_x, grad_w, None, None, None


def margin_softmax_cross_entropy(
    xn: torch.Tensor,
    weight: torch.Tensor,
    label: torch.Tensor,
    constants: MarginConstants,
    chunk_size: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Functional entry point of :class:`MarginSoftmaxCrossEntropy`: (loss, pred)."""
    return MarginSoftmaxCrossEntropy.apply(xn, weight, label, constants, chunk_size)


def subcenter_argmax(
    xn: torch.Tensor, weight: torch.Tensor, K: int, nclasses: int, chunk_size: Optional[int]
) -> torch.Tensor:
    """Predicted class: arg-max of the plain sub-center cosine, chunk by chunk."""
    best = torch.full((xn.shape[0],), -math.inf, device=xn.device)
    pred = torch.zeros(xn.shape[0], dtype=torch.long, device=xn.device)
    with torch.no_grad():
        norms = weight_norms(weight)
        for start, end in _chunks(nclasses, chunk_size):
            cos = subcenter_cosine(xn, weight, norms, start, end, K)[0]
            _, best, pred = _running_argmax(cos, start, best, pred)
    return pred
