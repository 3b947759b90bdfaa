"""``state_dict()`` and ``load_state_dict()`` of a class-sharded weight speak the full
(K * nclasses, D) weight, so checkpoints load in one process and on any number of
ranks.

Loading slices this rank's rows out of the full weight. Saving needs every rank's rows
on the saving rank: ESPnet saves on rank 0 only, where no collective can run, so the
rows are gathered beforehand by :meth:`ShardedWeight.gather` (the plugin's trainer
calls it on every rank after each epoch's validation, just before ESPnet saves), and
``state_dict()`` returns that copy while the weight has not changed since. Otherwise
it returns a placeholder of the full shape (NaN, no memory), which loading ignores:
ESPnet's ``--init_param`` takes a model's state_dict() before loading into it.
"""

import logging
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from espnet_plugin_intertopk.distributed.shard import (
    ClassShard,
    gather_rows_to_first,
    gather_sizes,
)


def check_weight_shape(
    value: torch.Tensor, name: str, K: int, nclasses: int, nout: int
) -> None:
    """ValueError unless ``value`` is a full (K * nclasses, nout) weight."""
    if tuple(value.shape) != (K * nclasses, nout):
        raise ValueError(
            f"{name} in the checkpoint has shape {tuple(value.shape)}, the loss needs "
            f"(K * nclasses, nout) = ({K} * {nclasses}, {nout})"
        )


class ShardedWeight:
    """The full-weight view of ``module.weight``, rows ``K * [start, end)`` of it.

    Args:
        module: The loss; its ``weight`` parameter is this rank's block.
        shard: This rank's classes.
        K, nclasses, nout: The shape of the full weight.
    """

    def __init__(
        self, module: nn.Module, shard: ClassShard, K: int, nclasses: int, nout: int
    ):
        self.module, self.shard = module, shard
        self.K, self.nclasses, self.nout = K, nclasses, nout
        self._full: Optional[torch.Tensor] = None
        self._version = -1
        self._placeholder = torch.full((1, 1), float("nan")).expand(K * nclasses, nout)

    def gather(self) -> None:
        """Collect the full weight on rank 0 for the next ``state_dict()``. Every
        rank must call it."""
        weight = self.module.weight.detach()
        sizes = gather_sizes(weight.shape[0], weight.device)
        full = gather_rows_to_first(weight, sizes)
        self._full = None if full is None else full.cpu()
        self._version = self.module.weight._version

    def release(self) -> None:
        """Drop the gathered copy (its memory)."""
        self._full = None

    def state_dict_hook(self, module, state_dict, prefix, local_metadata):
        key = prefix + "weight"
        if self._full is not None and self.module.weight._version == self._version:
            state_dict[key] = self._full
        else:
            if dist.is_initialized() and dist.get_rank() == 0:
                logging.debug(
                    "state_dict() of a class-sharded loss without a gathered weight: "
                    "the weight is a NaN placeholder"
                )
            state_dict[key] = self._placeholder

    def load_pre_hook(self, state_dict, prefix, *args):
        key = prefix + "weight"
        if key not in state_dict:
            return
        value = state_dict[key]
        if value is self._placeholder:
            state_dict[key] = self.module.weight.detach()
            return
        check_weight_shape(value, key, self.K, self.nclasses, self.nout)
        rows = slice(self.shard.start * self.K, self.shard.end * self.K)
        state_dict[key] = value[rows]
