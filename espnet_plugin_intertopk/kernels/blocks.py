"""The block backend: classes in blocks, PyTorch ops on each (the reference path).

Per block, one matrix product per sub-center (sub-center k of the class-major weight is
a (c, D) view with row stride K*D, which BLAS takes as it is, and each product lands
contiguous, so the maximum over sub-centers is element-wise), then the element-wise work
of :mod:`.block_ops`: eager (the default, and the readable reference of what every
backend computes) or fused by ``torch.compile``.

Two modes:

* dense (no class chunk size): blocks of :data:`DENSE_BLOCK` classes; each block's
  sub-center maximum and arg-max are kept for the backward (fastest);
* chunked (``class_chunk_size``): blocks of that many classes, nothing kept per class;
  the backward recomputes each block, so the extra memory is proportional to
  batch x chunk instead of batch x K x classes.

The backward takes one product each way per block on the weight's own class-major rows,
the weight gradient written straight into its place.
"""

import math
from typing import List, NamedTuple, Optional, Tuple

import torch

from espnet_plugin_intertopk.kernels.backend import (
    ForwardResult,
    GradientBuffer,
    Gradients,
    KernelBackend,
)
from espnet_plugin_intertopk.kernels.block_ops import BlockOps
from espnet_plugin_intertopk.kernels.margins import MarginConstants, inverse_norms

# Classes per dense block on CPU: the element-wise passes over a block then run on
# cache-resident data.
DENSE_BLOCK = 4096
# On accelerators there is no such cache to fit and every block costs some twenty small
# kernel launches, so blocks are larger there (not measured yet: no GPU so far).
DENSE_BLOCK_ACCELERATOR = 65536


class BlockStats(NamedTuple):
    """The outputs of a block operation's forward, by name."""

    best: torch.Tensor  # (B, c) sub-center maximum of the cosine, -inf at the target
    arg: torch.Tensor  # (B, c) uint8 sub-center that won it
    row_best: torch.Tensor  # (B,) maximum of best, row_idx (B,) its column
    row_idx: torch.Tensor
    row_max: torch.Tensor  # (B,) scale * row_best floored at -1e30
    row_sum: torch.Tensor  # (B,) sum of exp(scale * best - row_max)


def _shaped(buf: torch.Tensor, *shape: int) -> torch.Tensor:
    return buf[: math.prod(shape)].view(shape)


class BlockBackend(KernelBackend):
    """Blocks of classes through :class:`.block_ops.BlockOps`.

    Args:
        ops: The element-wise operations (``block_ops.EAGER`` or ``compiled_ops()``).
        chunk_size: None for the dense mode, else classes per block (chunked mode).
        device: Where the loss runs (sets the dense block size).
    """

    def __init__(self, ops: BlockOps, chunk_size: Optional[int], device: torch.device):
        self.ops = ops
        self.recompute = chunk_size is not None
        dense = DENSE_BLOCK if device.type == "cpu" else DENSE_BLOCK_ACCELERATOR
        self.block = dense if chunk_size is None else chunk_size

    def _blocks(self, nclasses: int) -> List[Tuple[int, int]]:
        step = self.block
        return [(s, min(s + step, nclasses)) for s in range(0, nclasses, step)]

    def _workspace(
        self, c: MarginConstants, B: int, device: torch.device
    ) -> torch.Tensor:
        """One flat buffer that every block of a step reuses, forward and backward:
        the K products of a block, then room for a (B, c) temporary of the backward.
        A fresh buffer per block would be faulted in afresh each time."""
        width = min(self.block, c.nclasses)
        return torch.empty((c.K + 1) * B * width, device=device)

    def _forward_block(
        self, xn, weight, inv_norm, label, start, end, c, buf
    ) -> BlockStats:
        w3 = weight.view(-1, c.K, weight.shape[1])[start:end]
        cos = _shaped(buf, c.K, xn.shape[0], end - start)
        for k in range(c.K):
            torch.mm(xn, w3[:, k].t(), out=cos[k])
        local = torch.where((label >= start) & (label < end), label - start, -1)
        inv = inv_norm[start:end].t().contiguous()
        return BlockStats(*self.ops.forward(cos, inv, local, c.scale))

    def forward(self, xn, weight, label, c, keep) -> ForwardResult:
        B = xn.shape[0]
        inv_norm = inverse_norms(weight, c.K)
        workspace = self._workspace(c, B, xn.device)
        stats, cands, kept = [], [], []
        for start, end in self._blocks(c.nclasses):
            s = self._forward_block(
                xn, weight, inv_norm, label, start, end, c, workspace
            )
            stats.append((s.row_best, s.row_idx + start, s.row_max, s.row_sum))
            if c.k_top > 0:
                v, i = s.best.topk(min(c.k_top, end - start), dim=1)
                # The sub-center each candidate's plain gradient goes to in backward.
                cands.append((v, i + start, s.arg.gather(1, i)))
            if keep:
                kept += [s.best, s.arg]
        if not cands:
            cands = [
                (
                    xn.new_empty(B, 0),
                    label.new_empty(B, 0),
                    label.new_empty(B, 0, dtype=torch.uint8),
                )
            ]
        row_best, row_idx, row_max, row_sum = (torch.stack(t, 1) for t in zip(*stats))
        cand_val, cand_idx, cand_sub = (torch.cat(t, 1) for t in zip(*cands))
        return ForwardResult(
            inv_norm,
            row_best,
            row_idx,
            row_max,
            row_sum,
            cand_val,
            cand_idx,
            cand_sub,
            tuple(kept),
            workspace,
        )

    def backward(
        self,
        xn,
        weight,
        label,
        inv_norm,
        lse,
        coef,
        c,
        kept,
        workspace,
        grad_buffer: GradientBuffer,
    ) -> Gradients:
        B, K = xn.shape[0], c.K
        grad_x = torch.zeros_like(xn)
        grad_w = torch.empty_like(weight)
        width = min(self.block, c.nclasses)
        g_buf, tmp_buf = workspace[: K * B * width], workspace[K * B * width :]
        for block, (start, end) in enumerate(self._blocks(c.nclasses)):
            if kept:
                best, arg = kept[2 * block], kept[2 * block + 1]
            else:
                # The products go where the gradient goes next: dead once best is made.
                s = self._forward_block(
                    xn, weight, inv_norm, label, start, end, c, g_buf
                )
                best, arg = s.best, s.arg
            g = _shaped(g_buf, B, end - start, K)
            tmp = _shaped(tmp_buf, B, end - start)
            self.ops.backward(
                g, best, arg, lse, inv_norm[start:end], coef, c.scale, tmp
            )
            # Class-major (B, c*K) against the weight's own rows: one product each way,
            # the weight gradient written straight into its place.
            rows = slice(start * K, end * K)
            g2 = g.view(B, -1)
            grad_x.addmm_(g2, weight[rows])
            torch.mm(g2.t(), xn, out=grad_w[rows])
            self.ops.project(
                grad_w[rows], weight[rows], inv_norm[start:end].reshape(-1)
            )
        return Gradients(grad_x, grad_w)
