"""Element-wise work on one block of classes (the block backend's operations).

The element-wise work of a block: the maximum over sub-centers, the target mask, the
per-block log-sum-exp statistics, the softmax gradient and its routing back to the
winning sub-center, and the normalisation backward of the weight. Each of the three
operations exists twice, because what is fast differs:

* ``*_eager``: written for eager PyTorch, in place wherever possible (each out-of-place
  op allocates and faults in a fresh (batch x block) array); the default.
* the plain name: the same maths written for ``torch.compile`` (Inductor: Triton on
  CUDA, C++/OpenMP on CPU), which fuses each function into one or two passes over
  memory. Out-of-place on purpose: in-place and ``out=`` code is what eager needs and
  what the compiler has to undo. Used with ``compile_kernels: true`` on accelerators.

Both give the same numbers to float32 rounding; the tests hold both to the float64
reference (the compiled ones on CPU).
"""

from typing import Callable, NamedTuple, Optional, Tuple

import torch


def forward_block(
    cos: torch.Tensor, inv_norm: torch.Tensor, local_target: torch.Tensor, scale: float
) -> Tuple[torch.Tensor, ...]:
    """Sub-center maximum and log-sum-exp statistics of one block of classes.

    Args:
        cos: (K, B, c) products of the unit embeddings with the raw weight rows of
            sub-center k of the block's c classes.
        inv_norm: (K, c) inverse norms of those weight rows.
        local_target: (B,) column of each row's target in the block, -1 if elsewhere.
        scale: logit scale s.

    Returns:
        best: (B, c) cosine, maximum over sub-centers, -inf in the target column.
        arg: (B, c) uint8 sub-center that won the maximum (first one on ties).
        row_best: (B,) maximum of ``best`` over the block, row_idx: (B,) its column.
        row_max: (B,) ``scale * row_best`` floored at -1e30 (never -inf).
        row_sum: (B,) sum of exp(scale * best - row_max).
    """
    best = cos[0] * inv_norm[0]
    # int32 while selecting: Inductor's CPU code for uint8 selects is ~8x slower.
    arg = torch.zeros_like(best, dtype=torch.int32)
    for k in range(1, cos.shape[0]):
        cand = cos[k] * inv_norm[k]
        better = cand > best
        best = torch.where(better, cand, best)
        arg = torch.where(better, k, arg)
    column = torch.arange(best.shape[1], device=best.device)
    best = torch.where(
        column.unsqueeze(0) == local_target.unsqueeze(1), float("-inf"), best
    )
    row_best, row_idx = best.max(1)
    # A finite floor instead of -inf keeps the merge of the blocks' sums free of
    # inf - inf.
    row_max = (row_best * scale).clamp_min(-1e30)
    row_sum = torch.exp(best * scale - row_max.unsqueeze(1)).sum(1)
    return best, arg.to(torch.uint8), row_best, row_idx, row_max, row_sum


def backward_block(
    out: torch.Tensor,
    best: torch.Tensor,
    arg: torch.Tensor,
    lse: torch.Tensor,
    inv_norm: torch.Tensor,
    coef: torch.Tensor,
    scale: float,
    tmp: torch.Tensor,
) -> None:
    """Plain softmax gradient of one block, routed to the winning sub-centers.

    Writes (B, c, K) into ``out`` (the class-major layout of the weight rows):
    ``coef * softmax / norm`` at the sub-center that won each entry's maximum, zero at
    the others. ``best`` and ``arg`` come from :func:`forward_block`, ``lse`` is each
    row's log-sum-exp with margins, ``inv_norm`` is (c, K). The target column (``best``
    = -inf) gets zero; the caller puts the margin terms in. ``tmp`` is the eager
    version's (B, c) scratch; the compiled one keeps its temporaries in registers.
    """
    grad = torch.exp(best * scale - lse.unsqueeze(1)) * coef
    sub = torch.arange(inv_norm.shape[1], device=out.device, dtype=torch.int32)
    won = arg.to(torch.int32).unsqueeze(2) == sub
    out.copy_(torch.where(won, grad.unsqueeze(2) * inv_norm.unsqueeze(0), 0.0))


def project_block(
    grad_w: torch.Tensor, weight: torch.Tensor, inv_norm: torch.Tensor
) -> None:
    """Normalisation backward of the weight rows, in place.

    ``grad_w`` (rows, D) holds the gradient for w / |w| already divided by |w|; the
    gradient for w removes its component along w: g - w (g . w) / |w|^2. ``weight``
    holds the same rows, ``inv_norm`` their 1 / |w|.
    """
    dot = (grad_w * weight).sum(1, keepdim=True)
    grad_w.copy_(grad_w - weight * (dot * inv_norm.unsqueeze(1) ** 2))


def forward_block_eager(
    cos: torch.Tensor, inv_norm: torch.Tensor, local_target: torch.Tensor, scale: float
) -> Tuple[torch.Tensor, ...]:
    """:func:`forward_block` for eager PyTorch: in place where it can be, since each
    out-of-place op allocates and faults in a fresh (B, c) array. Overwrites ``cos``
    (a scratch buffer the caller reuses; ``best`` is new, since it may be kept)."""
    best = torch.mul(cos[0], inv_norm[0])
    arg = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    for k in range(1, cos.shape[0]):
        cand = cos[k].mul_(inv_norm[k])
        # arg += better * (k - arg) in uint8 arithmetic: masked_fill_ and where are
        # several times slower than these on CPU.
        better = (cand > best).view(torch.uint8)
        arg.sub_(arg * better).add_(better * k)
        torch.maximum(best, cand, out=best)
    col = local_target.clamp_min(0).unsqueeze(1)
    is_here = local_target.unsqueeze(1) >= 0
    best.scatter_(1, col, torch.where(is_here, float("-inf"), best.gather(1, col)))
    row_best, row_idx = best.max(1)
    row_max = (row_best * scale).clamp_min(-1e30)
    row_sum = (best * scale).sub_(row_max.unsqueeze(1)).exp_().sum(1)
    return best, arg, row_best, row_idx, row_max, row_sum


def backward_block_eager(
    out: torch.Tensor,
    best: torch.Tensor,
    arg: torch.Tensor,
    lse: torch.Tensor,
    inv_norm: torch.Tensor,
    coef: torch.Tensor,
    scale: float,
    tmp: torch.Tensor,
) -> None:
    """:func:`backward_block` for eager PyTorch, with its softmax in ``tmp`` (B, c):
    ``best`` stays intact, so that a second backward can read it again.

    The masks are uint8 and the norms are applied once to the whole (B, c, K) output:
    bool masks and per-sub-center passes over the strided planes ran twice as slow.
    """
    grad = torch.mul(best, scale, out=tmp).sub_(lse.unsqueeze(1)).exp_().mul_(coef)
    won = torch.empty_like(arg)
    for k in range(inv_norm.shape[1]):
        torch.mul(grad, torch.eq(arg, k, out=won), out=out[:, :, k])
    out.mul_(inv_norm)


def project_block_eager(
    grad_w: torch.Tensor, weight: torch.Tensor, inv_norm: torch.Tensor
) -> None:
    """:func:`project_block` for eager PyTorch: a batched dot, one in-place addcmul."""
    dot = torch.bmm(grad_w.unsqueeze(1), weight.unsqueeze(2)).view(-1)
    grad_w.addcmul_(weight, (dot * inv_norm**2).unsqueeze(1), value=-1.0)


class BlockOps(NamedTuple):
    forward: Callable
    backward: Callable
    project: Callable


EAGER = BlockOps(forward_block_eager, backward_block_eager, project_block_eager)
_compiled: Optional[BlockOps] = None


def compiled_ops() -> BlockOps:
    """The ``torch.compile`` versions (built once per process; each compiles at its
    first call)."""
    global _compiled
    if not hasattr(torch, "compile"):
        raise RuntimeError(
            "compile_kernels: true needs torch.compile (PyTorch >= 2.0), found "
            f"{torch.__version__}"
        )
    if _compiled is None:
        # Static shapes: a step sees two block widths (full and last), and Dynamo's
        # automatic dynamic shapes would otherwise serve both with a kernel compiled for
        # any width, measured 1.2x (forward) to 4x (backward) slower on CPU.
        # Not fullgraph: past Dynamo's recompile limit (many distinct shapes, e.g. many
        # models in one process) a function then runs uncompiled instead of failing.
        _compiled = BlockOps(
            *(
                torch.compile(f, dynamic=False)
                for f in (forward_block, backward_block, project_block)
            )
        )
    return _compiled
