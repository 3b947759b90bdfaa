"""Where labelled embeddings sit relative to the sub-centers of a trained loss.

Sub-center ArcFace (Deng et al., ECCV 2020) gives each class K sub-centers; after
training, most of a class's clean samples are closest to one of them (the dominant
sub-center), and mislabeled or noisy samples sit far from it. :class:`SubcenterScan`
takes embeddings batch by batch (nothing per utterance is kept but K + 2 numbers) and
walks the classes in chunks, so that no (utterances x classes x K) array is ever built:
the peak extra memory is about ``batch x chunk x K`` cosines plus one normalised chunk
of the weight.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class SubcenterResult(NamedTuple):
    """Per utterance (N rows) and per class (C rows)."""

    labels: torch.Tensor  # (N,) class of each utterance
    own_cos: torch.Tensor  # (N, K) cosine to each sub-center of its own class
    other_class: torch.Tensor  # (N,) the closest other class (-1 with one class)
    other_cos: torch.Tensor  # (N,) cosine to that class's closest sub-center
    dominant: torch.Tensor  # (C,) each class's dominant sub-center
    counts: torch.Tensor  # (C, K) utterances closest to each sub-center

    @property
    def closest_own(self) -> torch.Tensor:
        """(N,) index of the own sub-center each utterance is closest to."""
        return self.own_cos.argmax(1)

    @property
    def dominant_cos(self) -> torch.Tensor:
        """(N,) cosine to the dominant sub-center of the utterance's class."""
        return self.own_cos.gather(1, self.dominant[self.labels].unsqueeze(1))[:, 0]

    @property
    def dominant_angle_deg(self) -> torch.Tensor:
        return cos_to_deg(self.dominant_cos)

    @property
    def other_angle_deg(self) -> torch.Tensor:
        return cos_to_deg(self.other_cos)


def cos_to_deg(cos: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def deg_to_cos(degrees: float) -> float:
    return math.cos(math.radians(degrees))


class SubcenterScan:
    """Accumulates, batch by batch, each utterance's cosines to its own class's
    sub-centers and its closest other class.

    Args:
        weight: The loss weight, (nclasses * K, D) in the reference layout (row
            ``c * K + k`` is sub-center k of class c).
        K: Sub-centers per class.
        class_chunk_size: Classes compared at a time.
    """

    def __init__(self, weight: torch.Tensor, K: int, class_chunk_size: int = 32768):
        if weight.dim() != 2 or weight.shape[0] % K:
            raise ValueError(
                f"weight must be (nclasses * K, D) with K={K}, "
                f"got {tuple(weight.shape)}"
            )
        if class_chunk_size < 1:
            raise ValueError(f"class_chunk_size must be >= 1, got {class_chunk_size}")
        self.weight = weight.detach()
        self.K = K
        self.nclasses = weight.shape[0] // K
        self.chunk = class_chunk_size
        self._parts = []

    @torch.no_grad()
    def add(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Scan one batch: embeddings (B, D), labels (B,) class indices."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"embeddings must be (batch, {self.weight.shape[1]}), got "
                f"{tuple(embeddings.shape)}"
            )
        labels = labels.to(self.weight.device).long().reshape(-1)
        if labels.numel() and not (
            0 <= int(labels.min()) <= int(labels.max()) < self.nclasses
        ):
            raise ValueError(f"labels must be in [0, {self.nclasses})")
        x = F.normalize(embeddings.to(self.weight), dim=1)
        K, rows = self.K, torch.arange(x.shape[0], device=x.device)
        own = F.normalize(self.weight.view(self.nclasses, K, -1)[labels], dim=2)
        own_cos = torch.einsum("bd,bkd->bk", x, own)
        best = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
        arg = torch.full((x.shape[0],), -1, device=x.device, dtype=torch.long)
        for start in range(0, self.nclasses, self.chunk):
            end = min(start + self.chunk, self.nclasses)
            w = F.normalize(self.weight[start * K : end * K], dim=1)
            cos = (x @ w.T).view(x.shape[0], end - start, K).amax(2)
            mine = (labels >= start) & (labels < end)
            cos[rows[mine], labels[mine] - start] = -math.inf
            value, where = cos.max(1)
            better = value > best
            best = torch.where(better, value, best)
            arg = torch.where(better, where + start, arg)
        self._parts.append((labels.cpu(), own_cos.cpu(), arg.cpu(), best.cpu()))

    def result(self) -> SubcenterResult:
        """The dominant sub-center of each class (the one most of its utterances are
        closest to; ties go to the lower index) and every utterance's statistics."""
        if not self._parts:
            raise ValueError("no embeddings were added")
        labels, own_cos, other, other_cos = (torch.cat(p) for p in zip(*self._parts))
        counts = torch.zeros(self.nclasses, self.K, dtype=torch.long)
        counts.index_put_(
            (labels, own_cos.argmax(1)), torch.ones_like(labels), accumulate=True
        )
        return SubcenterResult(
            labels=labels,
            own_cos=own_cos,
            other_class=other,
            other_cos=other_cos,
            dominant=counts.argmax(1),
            counts=counts,
        )


def collapse_weight(
    weight: torch.Tensor, K: int, dominant: torch.Tensor, keep_classes: torch.Tensor
) -> torch.Tensor:
    """(len(keep_classes), D): each kept class's dominant sub-center, in the order
    of ``keep_classes`` (a K = 1 weight in the reference layout)."""
    per_class = weight.detach().view(weight.shape[0] // K, K, -1)
    return per_class[keep_classes, dominant[keep_classes]].clone()
