"""The margin maths of the loss on a few logits per row, and the weight norms.

Everything here is plain PyTorch on small tensors (the target and the hard negatives of
each row); the backends only ever see plain cosines.
"""

from dataclasses import dataclass
from typing import Tuple

import torch

# Rows of the weight with a norm below this are treated like F.normalize does.
NORM_EPS = 1e-12


@dataclass(frozen=True)
class MarginConstants:
    """Everything the kernels need to know about the margin state of the loss."""

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


def target_logit(
    cos: torch.Tensor, c: MarginConstants
) -> Tuple[torch.Tensor, torch.Tensor]:
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


def inverse_norms(weight: torch.Tensor, K: int) -> torch.Tensor:
    """(C, K) 1 / |w| per class and sub-center (norms floored like F.normalize)."""
    norms = torch.linalg.vector_norm(weight, dim=1).clamp_min(NORM_EPS)
    return norms.reciprocal().view(-1, K)
