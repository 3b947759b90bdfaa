"""``state_dict()`` and ``load_state_dict()`` of a class-sharded weight, and of its
optimizer state (Adam's moments), speak the full (K * nclasses, D) shape, so
checkpoints load in one process and resume on any number of ranks.

Loading slices this rank's rows out of the full tensors. Saving needs every rank's rows
on the saving rank: ESPnet saves on rank 0 only, where no collective can run, so the
rows are gathered beforehand by :meth:`ShardedWeight.gather` (the plugin's trainer
calls it on every rank after each epoch's training, before ESPnet validates and saves),
and ``state_dict()`` returns that copy while the weight has not changed since.
Otherwise it returns a placeholder of the full shape (NaN, no memory), which loading
ignores: ESPnet's ``--init_param`` takes a model's state_dict() before loading into it.
"""

import logging
from typing import Dict, Iterable, Optional, Tuple

import torch
import torch.nn as nn

from espnet_plugin_intertopk.distributed.shard import (
    ClassShard,
    class_range,
    gather_rows_to_first,
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
        # (id of optimizer, state key) -> gathered full tensor
        self._optim_full: Dict[Tuple[int, str], torch.Tensor] = {}
        self._version = -1
        self._placeholder = torch.full((1, 1), float("nan")).expand(K * nclasses, nout)
        self._attached = set()

    @property
    def rows(self) -> slice:
        return slice(self.shard.start * self.K, self.shard.end * self.K)

    def _gather(self, t: torch.Tensor) -> Optional[torch.Tensor]:
        """A blockwise tensor of every rank (rows ``K * class_range``), on rank 0."""
        sizes = [
            self.K * (end - start)
            for start, end in (
                class_range(self.nclasses, r, self.shard.world)
                for r in range(self.shard.world)
            )
        ]
        full = gather_rows_to_first(t.detach(), sizes)
        return None if full is None else full.cpu()

    def gather(self, optimizers: Iterable[torch.optim.Optimizer] = ()) -> None:
        """Collect the full weight, and the full state that ``optimizers`` keep for
        it, on rank 0 for the next ``state_dict()``. Every rank must call it."""
        weight = self.module.weight
        self._full = self._gather(weight)
        self._optim_full = {}
        for optimizer in optimizers:
            state = optimizer.state.get(weight, {})
            for key in sorted(state):
                if self._is_blockwise(state[key]):
                    self._optim_full[(id(optimizer), key)] = self._gather(state[key])
        self._version = weight._version

    def release(self) -> None:
        """Drop the gathered copies (their memory)."""
        self._full, self._optim_full = None, {}

    def _fresh(self) -> bool:
        return self._full is not None and self.module.weight._version == self._version

    def _is_blockwise(self, t) -> bool:
        return torch.is_tensor(t) and t.shape == self.module.weight.shape

    def state_dict_hook(self, module, state_dict, prefix, local_metadata):
        state_dict[prefix + "weight"] = (
            self._full if self._fresh() else self._placeholder
        )

    def load_pre_hook(self, state_dict, prefix, *args):
        key = prefix + "weight"
        if key not in state_dict:
            return
        value = state_dict[key]
        if value is self._placeholder:
            state_dict[key] = self.module.weight.detach()
            return
        check_weight_shape(value, key, self.K, self.nclasses, self.nout)
        if torch.isnan(value).all():
            raise ValueError(
                f"{key} in the checkpoint is a NaN placeholder: it was saved by a "
                "class-sharded loss without gathering the weight first"
            )
        state_dict[key] = value[self.rows]

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Make ``optimizer``'s state_dict()/load_state_dict() speak the full shape
        for this weight (once per optimizer)."""
        if id(optimizer) in self._attached:
            return
        self._attached.add(id(optimizer))
        optimizer.register_state_dict_post_hook(self._optimizer_state_dict_hook)
        optimizer.register_load_state_dict_pre_hook(self._optimizer_load_pre_hook)

    def _index(self, optimizer) -> Optional[int]:
        """The weight's key in ``optimizer.state_dict()["state"]``."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for i, p in enumerate(params):
            if p is self.module.weight:
                return i
        return None

    def _optimizer_state_dict_hook(self, optimizer, state_dict):
        i = self._index(optimizer)
        if i is None or i not in state_dict["state"]:
            return state_dict
        entry = dict(state_dict["state"][i])  # not the optimizer's own dict
        for key, value in entry.items():
            if self._is_blockwise(value):
                full = self._optim_full.get((id(optimizer), key))
                fresh = self._fresh() and full is not None
                entry[key] = full if fresh else self._placeholder
        state_dict["state"][i] = entry
        return state_dict

    def _optimizer_load_pre_hook(self, optimizer, state_dict):
        i = self._index(optimizer)
        entry = state_dict["state"].get(i) if i is not None else None
        if entry is None:
            return state_dict
        full_shape = self._placeholder.shape
        entry = dict(entry)
        for key, value in entry.items():
            if torch.is_tensor(value) and value.shape == full_shape:
                if torch.isnan(value).all():
                    logging.warning(
                        "the checkpoint has no optimizer state for the class-sharded "
                        "weight (saved without gathering it): starting it afresh"
                    )
                    del state_dict["state"][i]
                    return state_dict
                entry[key] = value[self.rows]
        state_dict["state"][i] = entry
        return state_dict
