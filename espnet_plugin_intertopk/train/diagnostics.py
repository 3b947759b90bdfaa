"""Per-step statistics of the classification head, for understanding a training run
(``--training_diagnostics true``).

They go to ESPnet's reporter like the loss and accuracy do, so they appear in the
log lines of ``train.log`` (every ``log_interval`` steps), the epoch summaries,
``images/diag_*.png`` and tensorboard:

- ``diag_target_cos``: mean cosine between an embedding and its class (the best of
  the class's sub-centers), before any margin;
- ``diag_hardneg_above``: share of the ``k`` most similar wrong classes (``k_top``
  of the loss, or ``DEFAULT_K`` where it has none) whose cosine exceeds the target's,
  that is how often a negative the penalty targets outranks the target;
- ``diag_mp_eff``: the hard-negative margin in effect (0 where the loss has none);
- ``diag_subcenter_switch``: share of the batch's classes whose dominant sub-center
  (the one most of the class's samples in the batch are closest to) differs from the
  one they had when last seen; 0 with one sub-center;
- ``diag_encoder_grad_norm``: L2 norm of the encoder's gradient of the previous
  optimizer step (before clipping, unscaled under AMP, the whole accumulated gradient
  with ``accum_grad``; ESPnet's ``grad_norm`` is the whole model's). Under DDP it is
  this rank's gradient before the ranks' gradients are averaged.

The cost is one extra no-grad product of the batch with the weight per step, so it is
off by default. It reads the loss's ``weight``, ``K`` and ``k_top`` (the plugin's and
ESPnet's sub-center losses, ESPnet's AAM-softmax); a class-sharded head is not
supported.
"""

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F

DEFAULT_K = 5


def head_statistics(
    x: torch.Tensor,
    label: torch.Tensor,
    weight: torch.Tensor,
    K: int,
    k: int,
) -> Dict[str, object]:
    """The loss-side statistics of one batch.

    Args:
        x: (B, D) embeddings.
        label: (B,) class ids.
        weight: (C * K, D) class weights, the K sub-centers of class c in rows
            c * K ... c * K + K - 1.
        K: Sub-centers per class.
        k: Number of hardest wrong classes to compare with the target.

    Returns:
        ``target_cos`` and ``hardneg_above`` (floats) and ``dominant``: for each class
        present in the batch (``classes``, a 1-D tensor) its dominant sub-center.
    """
    with torch.no_grad():
        cos = F.normalize(x.float(), dim=1) @ F.normalize(weight.float(), dim=1).T
        per_subcenter = cos.view(x.shape[0], -1, K)
        best, nearest = per_subcenter.max(dim=2)
        rows = torch.arange(x.shape[0], device=x.device)
        target = best[rows, label]
        negatives = best.clone()
        negatives[rows, label] = -math.inf
        k = min(k, negatives.shape[1] - 1)
        hardest = negatives.topk(k, dim=1).values if k > 0 else negatives[:, :0]
        above = (hardest > target[:, None]).float()
        votes = torch.zeros(best.shape[1], K, device=x.device)
        votes.index_put_(
            (label, nearest[rows, label]), torch.ones_like(target), accumulate=True
        )
        classes = torch.unique(label)
        return {
            "target_cos": float(target.mean()),
            "hardneg_above": float(above.mean()) if k > 0 else 0.0,
            "classes": classes,
            "dominant": votes[classes].argmax(dim=1),
        }


def unsupported(loss: torch.nn.Module) -> Optional[str]:
    """Why the diagnostics cannot read ``loss``, or None if they can."""
    if getattr(loss, "sharded_weight", None) is not None:
        return f"{type(loss).__name__} holds only a shard of its weight (shard_classes)"
    if not isinstance(getattr(loss, "weight", None), torch.Tensor):
        return f"{type(loss).__name__} has no class weight"
    return None


class TrainingDiagnostics:
    """Hooks on an ESPnet speaker model that register the statistics above.

    Args:
        model: The ``ESPnetSpeakerModel`` (unwrapped from DDP).
    """

    def __init__(self, model: torch.nn.Module):
        loss = model.loss
        reason = unsupported(loss)
        if reason is not None:
            raise ValueError(f"training_diagnostics: {reason}")
        weight = loss.weight
        self.loss = loss
        self.K = int(getattr(loss, "K", 1))
        self.k = int(getattr(loss, "k_top", 0)) or DEFAULT_K
        self.nclasses = weight.shape[0] // self.K
        self.reporter = None  # see start_epoch
        self.scaler = None
        self.accum_grad = 1
        self._forwards = 0
        self._dominant = torch.full((self.nclasses,), -1, dtype=torch.long)
        # Squared norm of each encoder parameter's (accumulated) gradient, as of the
        # last backward.
        self._squares: Dict[int, float] = {}
        self._handles = [loss.register_forward_hook(self._on_loss, with_kwargs=True)]
        encoder = getattr(model, "encoder", None)
        if encoder is not None:
            self._handles += [
                p.register_post_accumulate_grad_hook(self._on_grad)
                for p in encoder.parameters()
                if p.requires_grad
            ]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def start_epoch(self, reporter, scaler=None, accum_grad: int = 1) -> None:
        """Register into ``reporter`` from now on; ``scaler``: AMP's (its scale
        divides the gradients); ``accum_grad``: micro-batches per optimizer step (ESPnet
        counts them from each epoch's first batch)."""
        self.reporter = reporter
        self.scaler = scaler
        self.accum_grad = accum_grad
        self._forwards = 0
        self._squares.clear()

    def _on_grad(self, param: torch.Tensor) -> None:
        square = float(param.grad.detach().float().pow(2).sum())
        if self.scaler is not None and self.scaler.is_enabled():
            square /= float(self.scaler.get_scale()) ** 2
        self._squares[id(param)] = square

    def mp_eff(self) -> float:
        cos_mp = getattr(self.loss, "cos_mp", None)
        return 0.0 if cos_mp is None else math.acos(max(-1.0, min(1.0, cos_mp)))

    def _on_loss(self, module, args, kwargs, output) -> None:
        if not module.training or self.reporter is None:
            return
        inputs = dict(zip(("input", "label"), args), **kwargs)
        x = inputs.get("input", inputs.get("x"))
        label = inputs.get("label")
        if x is None or label is None:
            return
        label = label.reshape(-1).long()
        stats = head_statistics(x, label, self.loss.weight, self.K, self.k)
        classes = stats["classes"].cpu()
        dominant = stats["dominant"].cpu()
        previous = self._dominant[classes]
        seen = previous >= 0
        switch = (
            float((previous[seen] != dominant[seen]).float().mean())
            if seen.any()
            else 0.0
        )
        self._dominant[classes] = dominant
        values = {
            "diag_target_cos": stats["target_cos"],
            "diag_hardneg_above": stats["hardneg_above"],
            "diag_mp_eff": self.mp_eff(),
            "diag_subcenter_switch": switch,
        }
        # The gradients of the previous forward's backward are complete: report them
        # when that forward ended an optimizer step's micro-batches.
        ended_step = self._forwards % max(1, self.accum_grad) == 0
        self._forwards += 1
        if self._squares and ended_step:
            values["diag_encoder_grad_norm"] = math.sqrt(sum(self._squares.values()))
            self._squares.clear()
        self.reporter.register(values)
