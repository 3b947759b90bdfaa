"""The gradient norm of a training step over every rank's shard.

ESPnet's trainer clips with ``torch.nn.utils.clip_grad_norm_(model.parameters())``
on each rank. The replicated parameters' gradients are the same on every rank after
DistributedDataParallel's all-reduce, but a class-sharded weight has a different block
on each rank: the local norm would differ between ranks, and so would the clipping
factor and the updates of the replicated parameters. :func:`clip_grad_norm_` computes
the norm the unsharded model would have (replicated part once, shards summed over
ranks) and clips every rank by the same factor.
"""

from contextlib import contextmanager
from typing import Iterable, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from espnet_plugin_intertopk.distributed.shard import collective_device

_SHARDED = "_intertopk_class_shard"


def mark_sharded(param: nn.Parameter) -> None:
    """Mark ``param`` as one rank's block of a class-sharded weight."""
    setattr(param, _SHARDED, True)


def is_sharded(param: torch.Tensor) -> bool:
    return getattr(param, _SHARDED, False)


def clip_grad_norm_(
    parameters: Union[torch.Tensor, Iterable[torch.Tensor]],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach=None,
) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` with the sharded gradients' part of the norm
    taken over all ranks (a collective: every rank calls it at the same step, with or
    without gradients). ``foreach`` is accepted for torch's signature and not used."""
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    params = [p for p in params if p.grad is not None]
    grads = [p.grad for p in params]
    sharded = [p.grad for p in params if is_sharded(p)]
    own = [p.grad for p in params if not is_sharded(p)]
    device = grads[0].device if grads else collective_device()
    norm_type = float(norm_type)

    def part(gs, op):
        if not gs:
            return torch.zeros((), device=device)
        norms = torch.stack([torch.linalg.vector_norm(g, norm_type) for g in gs])
        return norms.max() if op == "max" else (norms**norm_type).sum()

    if norm_type == float("inf"):
        shard = part(sharded, "max")
        dist.all_reduce(shard, op=dist.ReduceOp.MAX)
        total = torch.maximum(part(own, "max"), shard)
    else:
        shard = part(sharded, "sum")
        dist.all_reduce(shard)
        total = (part(own, "sum") + shard) ** (1.0 / norm_type)
    if error_if_nonfinite and not torch.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} is non-finite")
    factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.to(g.device))
    return total


@contextmanager
def across_shards(model: nn.Module):
    """While inside, ``torch.nn.utils.clip_grad_norm_`` is :func:`clip_grad_norm_`
    when ``model`` has a sharded parameter and a process group is running."""
    if not (
        dist.is_available()
        and dist.is_initialized()
        and any(is_sharded(p) for p in model.parameters())
    ):
        yield
        return
    original = torch.nn.utils.clip_grad_norm_
    torch.nn.utils.clip_grad_norm_ = clip_grad_norm_
    try:
        yield
    finally:
        torch.nn.utils.clip_grad_norm_ = original
