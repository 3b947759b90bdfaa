"""Margin schedules: the margin as a pure function of the training position.

Semantics follow WeSpeaker's margin scheduler, with epochs counted from 1: the margin is
``initial_margin`` before ``increase_start_epoch``, ``final_margin`` from
``fix_start_epoch`` on, and rises in between. Because the margin depends only on
(epoch, iteration), a run resumed from a checkpoint continues the schedule exactly.
"""

from abc import ABC, abstractmethod
from typing import Optional

from espnet2.train.class_choices import ClassChoices
from typeguard import typechecked

from espnet_plugin_intertopk.loss import check_margin

UPDATE_PER = ("iteration", "epoch")


class AbsMarginScheduler(ABC):
    """Gives the margin for a training position.

    Args:
        update_per: "iteration" to move the margin inside an epoch, "epoch" to change
            it at epoch starts only.
    """

    def __init__(self, update_per: str = "iteration"):
        if update_per not in UPDATE_PER:
            raise ValueError(
                f"margin_scheduler_conf: update_per must be one of {UPDATE_PER}, "
                f"got {update_per!r}"
            )
        self.update_per = update_per

    def position(
        self, epoch: int, iteration: int, iters_per_epoch: Optional[int]
    ) -> float:
        """Training position in epochs, 0 at the start of epoch 1.

        Args:
            epoch: Epoch number, from 1.
            iteration: Iterations already done in this epoch, from 0.
            iters_per_epoch: Iterations in this epoch (needed per iteration only).
        """
        if epoch < 1:
            raise ValueError(f"epoch counts from 1, got {epoch}")
        if self.update_per == "epoch" or iteration == 0:
            return float(epoch - 1)
        if not iters_per_epoch:
            raise ValueError(
                "update_per: iteration needs the number of iterations per epoch"
            )
        return epoch - 1 + iteration / iters_per_epoch

    @abstractmethod
    def margin(
        self, epoch: int, iteration: int = 0, iters_per_epoch: Optional[int] = None
    ) -> float:
        """The margin to use for the step at this position."""

    @abstractmethod
    def largest_margin(self) -> float:
        """The largest margin of the schedule (checked against the loss's bounds at
        start-up, not in the middle of training)."""


class ConstantMarginScheduler(AbsMarginScheduler):
    """The same margin at every step (for example the large-margin fine-tuning stage).

    Args:
        margin: The margin.
        update_per: See :class:`AbsMarginScheduler`.
    """

    @typechecked
    def __init__(self, margin: float = 0.2, update_per: str = "epoch"):
        super().__init__(update_per)
        check_margin("margin_scheduler_conf: margin", margin)
        self.value = float(margin)

    def margin(
        self, epoch: int, iteration: int = 0, iters_per_epoch: Optional[int] = None
    ) -> float:
        self.position(epoch, iteration, iters_per_epoch)
        return self.value

    def largest_margin(self) -> float:
        return self.value


class RampMarginScheduler(AbsMarginScheduler):
    """Initial margin, a ramp between two epochs, then the final margin.

    Args:
        initial_margin: Margin before ``increase_start_epoch``.
        final_margin: Margin from ``fix_start_epoch`` on.
        increase_start_epoch: First epoch of the ramp (from 1).
        fix_start_epoch: First epoch at the final margin (>= increase_start_epoch).
        update_per: See :class:`AbsMarginScheduler`.
    """

    @typechecked
    def __init__(
        self,
        initial_margin: float = 0.0,
        final_margin: float = 0.2,
        increase_start_epoch: int = 1,
        fix_start_epoch: int = 1,
        update_per: str = "iteration",
    ):
        super().__init__(update_per)
        check_margin("margin_scheduler_conf: initial_margin", initial_margin)
        check_margin("margin_scheduler_conf: final_margin", final_margin)
        if increase_start_epoch < 1:
            raise ValueError(
                f"margin_scheduler_conf: increase_start_epoch counts from 1, got "
                f"{increase_start_epoch}"
            )
        if fix_start_epoch < increase_start_epoch:
            raise ValueError(
                f"margin_scheduler_conf: fix_start_epoch ({fix_start_epoch}) must not "
                "be "
                f"before increase_start_epoch ({increase_start_epoch})"
            )
        self.initial_margin = float(initial_margin)
        self.final_margin = float(final_margin)
        self.increase_start_epoch = increase_start_epoch
        self.fix_start_epoch = fix_start_epoch

    @abstractmethod
    def ramp(self, t: float) -> float:
        """Fraction of the way from the initial to the final margin, t in [0, 1)."""

    def margin(
        self, epoch: int, iteration: int = 0, iters_per_epoch: Optional[int] = None
    ) -> float:
        pos = self.position(epoch, iteration, iters_per_epoch)
        start, end = self.increase_start_epoch - 1, self.fix_start_epoch - 1
        if pos >= end:
            return self.final_margin
        if pos < start:
            return self.initial_margin
        fraction = self.ramp((pos - start) / (end - start))
        return (
            self.initial_margin + (self.final_margin - self.initial_margin) * fraction
        )

    def largest_margin(self) -> float:
        # ramp() stays in [0, 1]: the margin moves between the two ends only.
        return max(self.initial_margin, self.final_margin)


class LinearMarginScheduler(RampMarginScheduler):
    """Linear ramp: the fraction done after a fraction t of the ramp is t."""

    def ramp(self, t: float) -> float:
        return t


class ExpMarginScheduler(RampMarginScheduler):
    """Exponential ramp: after a fraction t of the ramp, 1 - 0.001**t of the way."""

    def ramp(self, t: float) -> float:
        return 1.0 - 0.001**t


margin_scheduler_choices = ClassChoices(
    name="margin_scheduler",
    classes=dict(
        constant=ConstantMarginScheduler,
        linear=LinearMarginScheduler,
        exp=ExpMarginScheduler,
    ),
    type_check=AbsMarginScheduler,
    default=None,
    optional=True,
)
