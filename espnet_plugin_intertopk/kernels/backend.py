"""The interface every kernel backend of the loss implements.

A training step is three matrix products plus element-wise work over all
(batch x classes x K) cosines. A backend does exactly that part, on plain cosines
(no margins): the sub-center maximum, per-row log-sum-exp statistics, the row maximum,
hard-negative candidates, and in the backward the plain softmax gradient routed to the
winning sub-centers. :mod:`.function` does the rest, the same for every backend: the
margins of the target and the hard negatives, the merge of the partial statistics and
the sparse correction of the gradient.

Which backend runs is decided in one place, :func:`.selection.select_backend`.
"""

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import NamedTuple, Optional, Tuple

import torch

from espnet_plugin_intertopk.kernels.margins import MarginConstants


class ForwardResult(NamedTuple):
    """What a backend's forward pass leaves, over some n parts of the classes.

    The parts are blocks of classes, tiles or threads, as the backend walks them; the
    caller merges them. Statistics exclude each row's target column.
    """

    inv_norm: torch.Tensor  # (C, K) 1 / |w|
    row_best: torch.Tensor  # (B, n) maximum plain cosine of each part
    row_idx: torch.Tensor  # (B, n) its class (the lowest on ties)
    row_max: torch.Tensor  # (B, m) scale * part maximum, floored at -1e30
    row_sum: torch.Tensor  # (B, m) sum over the part of exp(scale * cos - row_max)
    cand_val: torch.Tensor  # (B, h) hard-negative candidates: plain cosine (h >= k_top)
    cand_idx: torch.Tensor  # (B, h) their classes
    cand_sub: torch.Tensor  # (B, h) uint8 sub-center that won each candidate's maximum
    kept: Tuple[torch.Tensor, ...]  # what the backward reads; () when it recomputes
    workspace: Optional[torch.Tensor]  # memory the backward may write into, or None


class Gradients(NamedTuple):
    grad_x: torch.Tensor  # (B, D) for the unit embeddings
    grad_w: torch.Tensor  # (K*C, D) for the raw weight


class RowMaxima(NamedTuple):
    row_best: torch.Tensor  # (B, n) as in ForwardResult
    row_idx: torch.Tensor


class GradientBuffer:
    """The memory of a weight's last gradient, which a backend may take again when
    nothing else references it any more (the fused CPU kernels do). One per loss
    module, so two losses never take each other's."""

    __slots__ = ("tensor",)

    def __init__(self) -> None:
        self.tensor: Optional[torch.Tensor] = None


class KernelBackend(ABC):
    """Plain-cosine work of the loss over all classes.

    Attributes:
        recompute: True for a memory-bounded backend: its forward keeps nothing per
            class (``kept`` is empty) and its backward recomputes the cosines.
    """

    recompute: bool = False

    @abstractmethod
    def forward(
        self,
        xn: torch.Tensor,
        weight: torch.Tensor,
        label: torch.Tensor,
        c: MarginConstants,
        keep: bool,
    ) -> ForwardResult:
        """Statistics of the plain cosines.

        Args:
            xn: (B, D) unit-norm float32 embeddings.
            weight: (K*C, D) float32 raw weight, row ``c*K + k``.
            label: (B,) int64 target class of each row (its column is left out of every
                statistic), or -1 for none.
            c: The margin constants (scale, K, k_top, nclasses are read here).
            keep: Keep what the backward needs (else ``kept`` is empty and the
                backward, if any, recomputes).
        """

    @abstractmethod
    def backward(
        self,
        xn: torch.Tensor,
        weight: torch.Tensor,
        label: torch.Tensor,
        inv_norm: torch.Tensor,
        lse: torch.Tensor,
        coef: torch.Tensor,
        c: MarginConstants,
        kept: Tuple[torch.Tensor, ...],
        workspace: Optional[torch.Tensor],
        grad_buffer: GradientBuffer,
    ) -> Gradients:
        """Gradients of the plain softmax part of the loss.

        Every class except the target gets ``coef * exp(scale * cos - lse)`` at the
        sub-center that won its maximum, through the normalisation of x (already unit)
        and of the weight rows; the target column gets zero.

        Args:
            xn, weight, label: As in :meth:`forward`.
            inv_norm, kept, workspace: From :meth:`forward` (``kept`` empty: recompute).
            lse: (B,) float32 log-sum-exp of each row with margins.
            coef: d loss / d logit per unit softmax (incoming gradient * s / B): 0-dim,
                or (B, 1), one per row (the class-sharded loss).
            c: The margin constants.
            grad_buffer: Memory the backend may reuse for the weight gradient.
        """

    def predict(
        self, xn: torch.Tensor, weight: torch.Tensor, c: MarginConstants
    ) -> RowMaxima:
        """Row maxima of the plain sub-center cosine over all classes, no target left
        out, nothing kept."""
        no_target = torch.full((xn.shape[0],), -1, dtype=torch.long, device=xn.device)
        out = self.forward(xn, weight, no_target, replace(c, k_top=0), keep=False)
        return RowMaxima(out.row_best, out.row_idx)
