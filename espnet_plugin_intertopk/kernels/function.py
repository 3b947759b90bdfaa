"""The loss's autograd function, the same for every kernel backend.

The reference implementation builds about ten (batch x classes) tensors per step. This
one computes the same loss and gradients with:

* margins applied only where they change a logit (the target column and the ``k_top``
  hard negatives); a backend (:mod:`.backend`) does the plain-cosine work over all
  classes, and this module puts the margin terms in from a few numbers per row;
* the weight normalisation folded into the matrix products (no normalised copy of the
  weight is ever materialised);
* a hand-written backward that needs only what the backend kept (or recomputes) and a
  few (batch x k) numbers: the backend gives the plain softmax gradient, and the margin
  terms of the target and the hard negatives are put in once afterwards, as a
  correction on their (1 + k_top) weight rows per example (the target cosine itself
  comes from the target's own weight rows).
"""

from typing import NamedTuple, Optional, Tuple

import torch

from espnet_plugin_intertopk.kernels.backend import GradientBuffer, KernelBackend
from espnet_plugin_intertopk.kernels.margins import (
    MarginConstants,
    hard_negative_logit,
    target_logit,
)


def target_cosine(xn, weight, inv_norm, label, K):
    """Each row's target cosine (maximum over the target's sub-centers) and the
    sub-center that wins it (the first on ties), from the target rows alone."""
    rows = weight.view(-1, K, weight.shape[1])[label]
    cos = torch.bmm(rows, xn.unsqueeze(2)).squeeze(2) * inv_norm[label]
    return cos.max(dim=1)


def merge_argmax(row_best: torch.Tensor, row_idx: torch.Tensor):
    """(value, class) of the maximum over parts of the parts' row maxima ``row_best``
    (B, parts) at classes ``row_idx``; ties keep the lower class (the earlier part)."""
    best_val, part = row_best.max(1)
    return best_val, row_idx.gather(1, part.unsqueeze(1)).squeeze(1)


class MarginTerms(NamedTuple):
    """The margin terms of each row, from a few numbers per row (float64)."""

    lse: torch.Tensor  # (B,) log-sum-exp of the scaled logits with margins
    z_t: torch.Tensor  # (B,) scaled target logit with its margin
    grad: torch.Tensor  # (B, 1 + k_top) d (lse - z_t) / d cos of target, hard negatives


def margin_terms(
    cos_t: torch.Tensor,
    top_val: torch.Tensor,
    run_max: torch.Tensor,
    run_sum: torch.Tensor,
    c: MarginConstants,
) -> MarginTerms:
    """Put the target and the hard negatives back with their margins.

    ``cos_t`` (B,) target cosines, ``top_val`` (B, k_top) plain cosines of the hard
    negatives, ``run_max``/``run_sum`` (B,) the plain statistics of every class but the
    target (sum of exp(scale * cos - run_max)). Done in float64 so the removal of the
    plain hard-negative terms from the sum cannot lose what is left of it.
    """
    s, d = c.scale, torch.float64
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
    g_t = s * (torch.exp(z_t - lse) - 1.0) * dphi
    g_h = s * torch.exp(z_h - lse.unsqueeze(1)) * dpsi
    return MarginTerms(lse, z_t, torch.cat([g_t.unsqueeze(1), g_h], 1))


def predicted_class(cos_t, best_val, best_idx, label):
    """Arg-max of the plain cosine from the target's and the best other class's (ties
    go to the lower index, like argmax)."""
    target_wins = (cos_t > best_val) | ((cos_t == best_val) & (label < best_idx))
    return torch.where(target_wins, label, best_idx)


def special_rows(label, t_sub, top_idx, top_sub, K):
    """(B, 1 + k_top) weight rows (class * K + winning sub-center) of the target and
    the hard negatives."""
    return torch.cat([label.unsqueeze(1), top_idx], 1) * K + torch.cat(
        [t_sub.unsqueeze(1), top_sub.long()], 1
    )


class MarginSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the sub-center inter-top-k margin softmax.

    Inputs: ``xn`` (B, D) unit-norm float32 embeddings, ``weight`` (K*C, D) float32 raw
    weight, ``label`` (B,) int64, the margin constants, the backend and the
    :class:`.backend.GradientBuffer` of the weight. Returns the scalar loss and the
    predicted classes (arg-max of the plain sub-center cosine, no margins).
    """

    @staticmethod
    def forward(
        ctx,
        xn,
        weight,
        label,
        c: MarginConstants,
        backend: KernelBackend,
        grad_buffer: GradientBuffer,
    ):
        B = xn.shape[0]
        out = backend.forward(xn, weight, label, c, keep=not backend.recompute)
        cos_t, t_sub = target_cosine(xn, weight, out.inv_norm, label, c.K)
        best_val, best_idx = merge_argmax(out.row_best, out.row_idx)
        run_max = out.row_max.amax(1)
        run_sum = (out.row_sum * torch.exp(out.row_max - run_max.unsqueeze(1))).sum(1)
        top_val, j = out.cand_val.topk(c.k_top, dim=1)
        top_idx, top_sub = out.cand_idx.gather(1, j), out.cand_sub.gather(1, j)
        terms = margin_terms(cos_t, top_val, run_max, run_sum, c)
        loss = (terms.lse - terms.z_t).mean()
        pred = predicted_class(cos_t, best_val, best_idx, label)
        ctx.mark_non_differentiable(pred)
        ctx.c, ctx.backend, ctx.grad_buffer = c, backend, grad_buffer
        # Memory only, not contents: the backward writes into it (a fresh buffer of
        # this size is page-faulted in anew, a few ms per step on CPU). Not saved with
        # save_for_backward, whose version check would then refuse a second backward.
        ctx.workspace = out.workspace
        # The special rows and their plain cosines, for the backward's sparse
        # correction; their gradient per unit output of the mean loss.
        ctx.save_for_backward(
            xn,
            weight,
            label,
            out.inv_norm,
            terms.lse.float(),
            (terms.grad / B).float(),
            special_rows(label, t_sub, top_idx, top_sub, c.K),
            torch.cat([cos_t.unsqueeze(1), top_val], 1),
            *out.kept,
        )
        return loss.float(), pred

    @staticmethod
    def backward(ctx, grad_out, _grad_pred):
        (
            xn,
            weight,
            label,
            inv_norm,
            lse,
            g_special,
            rows,
            special_cos,
            *kept,
        ) = ctx.saved_tensors
        c = ctx.c
        gs = grad_out.float()
        coef = gs * (c.scale / xn.shape[0])
        grad_x, grad_w = ctx.backend.backward(
            xn,
            weight,
            label,
            inv_norm,
            lse,
            coef,
            c,
            tuple(kept),
            ctx.workspace,
            ctx.grad_buffer,
        )
        correct_special(
            grad_x,
            grad_w,
            xn,
            weight,
            inv_norm.view(-1),
            rows,
            special_cos,
            g_special * gs - plain_grad(special_cos, lse, coef, c.scale),
        )
        return grad_x, grad_w, None, None, None, None


def plain_grad(cos, lse, coef, scale):
    """(B, S) the plain softmax gradient that the backend gave these cosines, per unit
    inverse norm (zero for the target, whose cosine the backend holds at -inf).
    ``coef``: 0-dim, or (B, 1) per row."""
    plain = torch.exp(cos[:, 1:] * scale - lse.unsqueeze(1)) * coef
    return torch.cat([plain.new_zeros(plain.shape[0], 1), plain], 1)


def correct_special(grad_x, grad_w, xn, weight, inv_norm, rows, cos, delta):
    """Add, in place, the gradient of the target and hard-negative logits that the plain
    part got wrong: ``delta`` (B, S) per unit inverse norm is added at weight rows
    ``rows`` (B, S), whose cosines are ``cos``.

    The weight part is already projected (normalisation backward, as in the backends):
    d/dw of the cosine x . w / |w| is (x - cos * w / |w|) / |w|.
    """
    inv = inv_norm[rows]
    delta = delta * inv
    w = weight[rows]
    grad_x.add_(torch.bmm(delta.unsqueeze(1), w).squeeze(1))
    unit = w * (inv * cos).unsqueeze(2)
    upd = delta.unsqueeze(2) * (xn.unsqueeze(1) - unit)
    grad_w.index_add_(0, rows.reshape(-1), upd.reshape(-1, upd.shape[2]))


def margin_softmax_cross_entropy(
    xn: torch.Tensor,
    weight: torch.Tensor,
    label: torch.Tensor,
    constants: MarginConstants,
    backend: KernelBackend,
    grad_buffer: Optional[GradientBuffer] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Functional entry point of :class:`MarginSoftmaxCrossEntropy`: (loss, pred).

    ``grad_buffer``: where a backend may keep the weight gradient's memory for the next
    step (the loss module's own; a new one, so nothing is reused, when None).
    """
    return MarginSoftmaxCrossEntropy.apply(
        xn,
        weight,
        label,
        constants,
        backend,
        GradientBuffer() if grad_buffer is None else grad_buffer,
    )


def subcenter_argmax(
    xn: torch.Tensor,
    weight: torch.Tensor,
    constants: MarginConstants,
    backend: KernelBackend,
) -> torch.Tensor:
    """Predicted class: arg-max of the plain sub-center cosine, by ``backend``."""
    with torch.no_grad():
        return merge_argmax(*backend.predict(xn, weight, constants))[1]
