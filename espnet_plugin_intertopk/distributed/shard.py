"""Which classes a rank holds, and the collectives of rows the sharded loss uses."""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ClassShard:
    """Classes ``[start, end)`` of ``nclasses``, held by ``rank`` of ``world``."""

    rank: int
    world: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def class_range(nclasses: int, rank: int, world: int) -> Tuple[int, int]:
    """The contiguous block of rank ``rank``: sizes differ by at most one class."""
    return nclasses * rank // world, nclasses * (rank + 1) // world


def collective_device() -> torch.device:
    """Where tensors of a collective must live for the default group's backend."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def make_shard(nclasses: int, K: int, nout: int) -> Optional[ClassShard]:
    """This rank's shard under the initialised default process group; None without
    one or with a single rank (the ordinary loss then).

    Every rank must call this (it compares the loss's shape across ranks).

    Raises:
        ValueError: the ranks disagree on (nclasses, K, nout), or there are fewer
            classes than ranks.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    if world == 1:
        return None
    mine = torch.tensor([nclasses, K, nout], device=collective_device())
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine)
    shapes = [tuple(int(v) for v in t) for t in everyone]
    if len(set(shapes)) > 1:
        raise ValueError(
            "shard_classes: the ranks disagree on the loss's (nclasses, K, nout): "
            + ", ".join(f"rank {r}: {s}" for r, s in enumerate(shapes))
        )
    if nclasses < world:
        raise ValueError(
            f"shard_classes: {nclasses} classes cannot be split over {world} ranks"
        )
    rank = dist.get_rank()
    return ClassShard(rank, world, *class_range(nclasses, rank, world))


def gather_sizes(n: int, device: torch.device) -> List[int]:
    """``n`` of every rank."""
    mine = torch.tensor([n], device=device)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    return [int(t) for t in everyone]


def _padded(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t.contiguous()
    pad = t.new_zeros((rows - t.shape[0],) + tuple(t.shape[1:]))
    return torch.cat([t, pad])


def all_gather_rows(t: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    """The rows of every rank, in rank order (rank r holds ``sizes[r]`` rows)."""
    most = max(sizes)
    parts = [t.new_empty((most,) + tuple(t.shape[1:])) for _ in sizes]
    dist.all_gather(parts, _padded(t, most))
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def reduce_scatter_rows(t: torch.Tensor, sizes: List[int], rank: int) -> torch.Tensor:
    """Sum over ranks of ``t`` (all ranks' rows, in rank order); each rank gets back
    its own ``sizes[rank]`` rows."""
    most = max(sizes)
    segments = torch.split(t, sizes)
    send = torch.cat([_padded(s, most) for s in segments])
    out = t.new_empty((most,) + tuple(t.shape[1:]))
    dist.reduce_scatter_tensor(out, send)
    return out[: sizes[rank]]


def gather_rows_to_first(t: torch.Tensor, sizes: List[int]) -> Optional[torch.Tensor]:
    """All ranks' rows, concatenated on rank 0 (None elsewhere)."""
    most = max(sizes)
    parts = (
        [t.new_empty((most,) + tuple(t.shape[1:])) for _ in sizes]
        if dist.get_rank() == 0
        else None
    )
    dist.gather(_padded(t, most), parts, dst=0)
    if parts is None:
        return None
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])
