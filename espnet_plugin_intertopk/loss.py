"""Sub-center additive angular margin loss with inter-top-k hard-negative penalty."""

import functools
import inspect
import math
import typing
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from espnet2.spk.loss.abs_loss import AbsLoss
from typeguard import TypeCheckError, check_type

from espnet_plugin_intertopk.distributed.checkpoint import (
    ShardedWeight,
    check_weight_shape,
)
from espnet_plugin_intertopk.distributed.function import (
    sharded_argmax,
    sharded_margin_softmax_cross_entropy,
)
from espnet_plugin_intertopk.distributed.grad_norm import mark_sharded
from espnet_plugin_intertopk.distributed.shard import make_shard
from espnet_plugin_intertopk.espnet_compat import loss_returns_tuple
from espnet_plugin_intertopk.kernels.backend import GradientBuffer
from espnet_plugin_intertopk.kernels.function import (
    margin_softmax_cross_entropy,
    subcenter_argmax,
)
from espnet_plugin_intertopk.kernels.margins import MarginConstants
from espnet_plugin_intertopk.kernels.selection import select_backend
from espnet_plugin_intertopk.registration import register_loss

SUBCENTER_INITS = ("independent", "shared")

# The reference scales the hard-negative margin with margin / 0.2.
MP_REFERENCE_MARGIN = 0.2


def check_margin(name: str, value: float) -> None:
    """ValueError naming ``name`` unless ``value`` is a finite angle in [0, pi/2)."""
    if not (math.isfinite(value) and 0.0 <= value < math.pi / 2):
        raise ValueError(f"{name} must be finite and in [0, pi/2), got {value}")


def effective_mp(mp: float, margin: float) -> float:
    """The hard-negative margin at ``margin``: ``mp`` scaled by margin / 0.2 (0 for
    margins of at most 0.001, as in the reference)."""
    return mp * margin / MP_REFERENCE_MARGIN if margin > 0.001 else 0.0


def check_hard_negative_margin(mp: float, margin: float) -> None:
    """ValueError naming mp and margin unless mp_eff = mp * margin / 0.2 < pi/2.

    The hard-negative logit cos(theta - mp_eff) is largest (1) for a wrong class at
    angle mp_eff from the embedding, and for classes closer than that it grows as they
    move away (d logit / d cos = sin(theta - mp_eff) / sin(theta) < 0), so the
    penalty pulls the embedding towards them. Below pi/2 that happens only for classes
    the embedding resembles (cos > 0), the hard negatives the penalty is for; at
    pi/2 or more, a class orthogonal to or pointing away from the embedding would get
    the largest logit of all, above any target logit cos(theta + m) < 1. The bound is
    the one the margin itself has, checked wherever mp or the margin is set (the
    constructor and ``update``, which margin schedulers call).
    """
    mp_eff = effective_mp(mp, margin)
    if not mp_eff < math.pi / 2:
        raise ValueError(
            f"mp={mp} at margin={margin} gives a hard-negative margin mp * margin / "
            f"0.2 = {mp_eff:.4g} rad; it must be < pi/2 (1.571): lower mp or margin"
        )


def _describe(annotation) -> str:
    """'int', 'float or None', ... for a constructor annotation."""
    args = typing.get_args(annotation)
    if args:  # Optional[X]
        return " or ".join("None" if a is type(None) else a.__name__ for a in args)
    return annotation.__name__


def arguments_checked(init: Callable) -> Callable:
    """typeguard's ``@typechecked`` for a constructor, with a ValueError naming the
    argument instead of its TypeCheckError (the loss promises ValueErrors for every
    bad argument), and bool refused where a number is annotated: YAML's ``true`` is
    not K = 1."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as err:
            raise ValueError(f"{type(self).__name__}: {err}") from None
        for name, value in bound.arguments.items():
            annotation = signature.parameters[name].annotation
            if name == "self" or annotation is inspect.Parameter.empty:
                continue
            numeric = {int, float} & {annotation, *typing.get_args(annotation)}
            try:
                if isinstance(value, bool) and numeric:
                    raise TypeCheckError("is a bool")
                check_type(value, annotation)
            except TypeCheckError:
                raise ValueError(
                    f"{name} must be {_describe(annotation)}, got {value!r} "
                    f"({type(value).__name__})"
                ) from None
        return init(self, *args, **kwargs)

    return wrapper


@register_loss("aamsoftmax_sc_topk")
class ArcMarginProduct_intertopk_subcenter(AbsLoss):
    """AAM-softmax with K sub-centers per class and an inter-top-k penalty.

    Sub-center ArcFace (Deng et al., ECCV 2020) with the inter-top-k penalty of Zhao
    et al. (arXiv 2110.05042): the target logit is cos(theta + margin), the ``k_top``
    most similar wrong classes get cos(theta - mp_eff) with
    ``mp_eff = mp * margin / 0.2``, and the cross-entropy runs on ``scale`` times the
    logits. Values and gradients match ESPnet's and WeSpeaker's copies after their
    ``update(margin)``, with two fixes: a freshly built loss is already in that state
    (theirs keep the hard-negative margin at 0 until ``update`` is called), and
    gradients stay finite when a cosine reaches +-1.

    The angular maths always runs in float32, also under fp16/bf16 autocast.

    Input checks: shapes and dtypes are checked on every call (no device sync). The
    label range and the finiteness of the embeddings need the values (see
    ``check_values``). Where they are not checked, non-finite embeddings give a
    non-finite loss and gradient norm, and ESPnet's trainer skips that step without
    touching the weights.

    Args:
        nout: Embedding size.
        nclasses: Number of classes (speakers).
        scale: Logit scale s.
        margin: Additive angular margin m of the target class.
        easy_margin: Apply the margin only where cos > 0.
        K: Sub-centers per class.
        mp: Hard-negative margin at margin 0.2 (it follows the margin linearly).
        k_top: Number of hard negatives that get the penalty (0 disables it).
        do_lm: Large-margin fine-tuning: sets mp = 0 and k_top = 0.
        class_chunk_size: None for the fastest path; a number of classes to process at
            a time for a memory-bounded path (extra memory ~ batch x chunk).
        compile_kernels: Compile native kernels at the first step of a process (same
            numbers as eager). On CPU the loss then runs in fused C++ kernels
            (``kernels/cpu_kernels.cpp``, built once per machine with the C++ compiler
            and ninja, about 30 s), dense or memory-bounded (with ``class_chunk_size``):
            about 1.7x faster steps than eager at 18k classes, and the memory of the
            last weight gradient is reused when nothing holds it any more. On CUDA the
            element-wise work is fused by ``torch.compile`` (Triton; not yet measured
            on a GPU).
        check_values: Check label range and finiteness of the inputs: None (auto) on
            every call for CPU tensors and on the first call only on accelerators (no
            host-device sync per step); True on every call; False never.
        return_accuracy: Return (loss, accuracy, preds) as ESPnet >= 202509 expects
            instead of the loss alone. None: follow the installed ESPnet.
        shard_classes: Under an initialised process group of R > 1 ranks, hold only
            this rank's contiguous block of classes (``class_range``) and compute the
            loss over all ranks' batches with collectives: each rank gets the loss,
            accuracy, predictions and embedding gradient of its own batch that the
            unsharded loss gives, and its block's weight gradient averaged over ranks
            as data-parallel training would. Every rank must then call the loss at
            every step. ``state_dict()`` and ``load_state_dict()`` speak the full
            weight. Without a process group, or with one rank: the ordinary loss.
        subcenter_init: "independent": every sub-center drawn on its own (the
            reference's Xavier-uniform over all K * nclasses rows); "shared": the K
            sub-centers of a class start as copies of one draw, so that at the start
            each class has one direction that all its samples pull (the loss then
            equals K = 1's) and the sub-centers part as training moves the one that
            wins. The loss's values and gradients for given weights are the same
            either way.
    """

    @arguments_checked
    def __init__(
        self,
        nout: int,
        nclasses: int,
        scale: float = 32.0,
        margin: float = 0.2,
        easy_margin: bool = False,
        K: int = 3,
        mp: float = 0.06,
        k_top: int = 5,
        do_lm: bool = False,
        class_chunk_size: Optional[int] = None,
        compile_kernels: bool = False,
        check_values: Optional[bool] = None,
        return_accuracy: Optional[bool] = None,
        shard_classes: bool = False,
        subcenter_init: str = "independent",
    ):
        super().__init__(nout)
        for name, value in (("nout", nout), ("nclasses", nclasses), ("K", K)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if K > 256:
            raise ValueError(
                f"K must be <= 256 (the sub-center index is one byte), got {K}"
            )
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        check_margin("margin", margin)
        check_margin("mp", mp)
        if do_lm:
            mp, k_top = 0.0, 0
        # Before the weight is allocated; update() checks the later margins.
        check_hard_negative_margin(mp, margin)
        if not 0 <= k_top < nclasses:
            raise ValueError(f"k_top must be in [0, nclasses={nclasses}), got {k_top}")
        if subcenter_init not in SUBCENTER_INITS:
            raise ValueError(
                f"subcenter_init must be one of {SUBCENTER_INITS}, "
                f"got {subcenter_init!r}"
            )
        if class_chunk_size is not None and class_chunk_size < 1:
            raise ValueError(f"class_chunk_size must be >= 1, got {class_chunk_size}")

        self.in_features = nout
        self.out_features = nclasses
        self.scale = scale
        self.easy_margin = easy_margin
        self.K = K
        self.mp = mp
        self.k_top = k_top
        self.do_lm = do_lm
        self.class_chunk_size = class_chunk_size
        self.compile_kernels = compile_kernels
        self.check_values = check_values
        self.return_accuracy = (
            loss_returns_tuple() if return_accuracy is None else return_accuracy
        )
        self._values_checked = False
        self._grad_buffer = GradientBuffer()
        self.shard_classes = shard_classes
        self.subcenter_init = subcenter_init
        self.shard = make_shard(nclasses, K, nout) if shard_classes else None
        if self.shard is None:
            self.weight = nn.Parameter(torch.empty(K * nclasses, nout))
            nn.init.xavier_uniform_(self.weight)
            self.sharded_weight = None
        else:
            self.weight = nn.Parameter(torch.empty(K * self.shard.size, nout))
            self._init_block()
            mark_sharded(self.weight)
            self.sharded_weight = ShardedWeight(self, self.shard, K, nclasses, nout)
            self._register_state_dict_hook(self.sharded_weight.state_dict_hook)
        if subcenter_init == "shared":
            with torch.no_grad():
                rows = self.weight.view(-1, K, nout)
                rows.copy_(rows[:, :1].expand_as(rows))
        self._register_load_state_dict_pre_hook(self._load_pre_hook)
        self.update(margin)

    def _init_block(self) -> None:
        """Xavier-uniform with the full weight's bound, each block from its own
        random stream (the same seed on every rank must not give equal blocks)."""
        bound = math.sqrt(6.0 / (self.in_features + self.K * self.out_features))
        generator = torch.Generator().manual_seed(
            (torch.initial_seed() + 7919 * (self.shard.rank + 1)) % 2**63
        )
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)

    def _load_pre_hook(self, state_dict, prefix, *args) -> None:
        if self.sharded_weight is not None:
            self.sharded_weight.load_pre_hook(state_dict, prefix, *args)
        elif prefix + "weight" in state_dict:
            check_weight_shape(
                state_dict[prefix + "weight"],
                prefix + "weight",
                self.K,
                self.out_features,
                self.in_features,
            )

    @property
    def class_range(self) -> Tuple[int, int]:
        """[start, end) of the classes whose weight rows this rank holds."""
        if self.shard is None:
            return 0, self.out_features
        return self.shard.start, self.shard.end

    def update(self, margin: float = 0.2) -> None:
        """Set the margin and every constant that depends on it (mp_eff included).

        Raises:
            ValueError: the margin is not in [0, pi/2), or mp_eff would reach pi/2
                (see :func:`check_hard_negative_margin`).
        """
        check_margin("margin", float(margin))
        check_hard_negative_margin(self.mp, float(margin))
        self.margin = self.m = float(margin)
        self.cos_m = math.cos(margin)
        self.sin_m = math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin
        self.mmm = 1.0 + math.cos(math.pi - margin)
        self.mp_eff = effective_mp(self.mp, margin)
        self.cos_mp = math.cos(self.mp_eff)
        self.sin_mp = math.sin(self.mp_eff)

    def constants(self) -> MarginConstants:
        return MarginConstants(
            scale=self.scale,
            cos_m=self.cos_m,
            sin_m=self.sin_m,
            th=self.th,
            mmm=self.mmm,
            easy_margin=self.easy_margin,
            cos_mp=self.cos_mp,
            sin_mp=self.sin_mp,
            k_top=self.k_top,
            K=self.K,
            nclasses=self.out_features,
        )

    def extra_repr(self) -> str:
        return (
            f"nout={self.in_features}, nclasses={self.out_features}, K={self.K}, "
            f"scale={self.scale}, margin={self.margin}, mp={self.mp}, "
            f"k_top={self.k_top}, easy_margin={self.easy_margin}, do_lm={self.do_lm}, "
            f"class_chunk_size={self.class_chunk_size}, "
            f"compile_kernels={self.compile_kernels}, "
            f"check_values={self.check_values}, shard_classes={self.shard_classes}, "
            f"subcenter_init={self.subcenter_init}, "
            f"class_range={self.class_range}"
        )

    def _check_input(self, x: torch.Tensor, label: Optional[torch.Tensor]):
        if x.dim() != 2:
            raise ValueError(
                f"input must be 2-D (batch, nout), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"input has {x.shape[1]} features per row, nout is {self.in_features}"
            )
        if not x.is_floating_point():
            raise ValueError(f"input must be a float tensor, got {x.dtype}")
        if label is None:
            return None
        if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            raise ValueError(f"label must be an integer tensor, got {label.dtype}")
        if label.dim() == 2 and label.shape[1] == 1:
            label = label[:, 0]
        elif label.dim() == 0:
            # ESPnet squeezes (1, 1) labels of a batch of one into a scalar.
            label = label.reshape(1)
        if label.dim() != 1 or label.shape[0] != x.shape[0]:
            raise ValueError(
                f"label must have shape ({x.shape[0]},) or ({x.shape[0]}, 1) to match "
                f"the input batch, got {tuple(label.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(
                "the input batch is empty: the mean loss of no rows is undefined"
            )
        auto = self.check_values is None and (
            x.device.type == "cpu" or not self._values_checked
        )
        if self.check_values or auto:
            self._values_checked = True
            if label.numel() and (label.min() < 0 or label.max() >= self.out_features):
                raise ValueError(
                    f"label values must be in [0, nclasses={self.out_features}), got "
                    f"[{int(label.min())}, {int(label.max())}]"
                )
            if not torch.isfinite(x).all():
                raise ValueError("input embeddings contain NaN or Inf")
        return label.long()

    def forward(
        self, input: torch.Tensor, label: Optional[torch.Tensor] = None
    ) -> Union[
        torch.Tensor,
        Tuple[Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor],
    ]:
        """Loss of a batch.

        Args:
            input: (B, nout) embeddings, any float dtype.
            label: (B,) or (B, 1) integer class ids, or None for predictions only.

        Returns:
            The loss tensor, or (loss, accuracy, preds) when ``return_accuracy``;
            (None, None, preds) when ``label`` is None.
        """
        label = self._check_input(input, label)
        # The angles must not be computed in half precision: cos(m) and sin(m) of small
        # margins and the sqrt near |cos| = 1 lose most of their digits there.
        with torch.autocast(device_type=input.device.type, enabled=False):
            xn = F.normalize(input.float(), dim=1)
            weight = self.weight.float()
            backend = select_backend(
                xn.device, self.class_chunk_size, self.compile_kernels
            )
            c = self.constants()
            if label is None:
                if self.shard is not None:
                    preds = sharded_argmax(xn, weight, c, backend, self.shard)
                else:
                    preds = subcenter_argmax(xn, weight, c, backend)
                return None, None, preds
            if self.shard is not None:
                loss, preds = sharded_margin_softmax_cross_entropy(
                    xn, weight, label, c, backend, self._grad_buffer, self.shard
                )
            else:
                loss, preds = margin_softmax_cross_entropy(
                    xn, weight, label, c, backend, self._grad_buffer
                )
        if not self.return_accuracy:
            return loss
        accuracy = (preds == label).float().mean()
        return loss, accuracy, preds
