"""The training-loop hook: ESPnet's SpkTrainer plus a margin scheduler (and what a
class-sharded loss needs from the loop).

ESPnet's ``Trainer.train_one_epoch`` has no per-step hook, so the scheduler is driven
from the batch iterator it consumes: before each batch is handed to the loop, the loss
gets ``update(margin)`` and the margin is registered with the reporter, which puts it in
the epoch log line, ``images/margin.png`` and tensorboard. Every rank runs the same
code with the same (epoch, iteration), so all ranks use the same margin.
"""

import dataclasses
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional

import torch
from espnet2.train import spk_trainer
from espnet2.train.distributed_utils import DistributedOption
from espnet2.train.reporter import Reporter
from espnet2.train.spk_trainer import SpkTrainer
from espnet2.train.trainer import TrainerOptions

from espnet_plugin_intertopk.distributed.grad_norm import across_shards
from espnet_plugin_intertopk.train.crash_safety import crash_safe_saving, repair_run_dir
from espnet_plugin_intertopk.train.diagnostics import TrainingDiagnostics
from espnet_plugin_intertopk.train.margin_scheduler import (
    AbsMarginScheduler,
    margin_scheduler_choices,
)
from espnet_plugin_intertopk.train.validation import TrialValidation, validate_trials


@dataclasses.dataclass
class MarginTrainerOptions(TrainerOptions):
    margin_scheduler: Optional[AbsMarginScheduler] = None
    training_diagnostics: bool = False


def build_margin_scheduler(args) -> Optional[AbsMarginScheduler]:
    """The scheduler ``--margin_scheduler``/``--margin_scheduler_conf`` describe."""
    name = getattr(args, "margin_scheduler", None)
    if name is None:
        return None
    return margin_scheduler_choices.get_class(name)(**args.margin_scheduler_conf)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The ESPnet model inside a DistributedDataParallel/DataParallel wrapper."""
    return getattr(model, "module", model)


def _iterations_in(iterator, options) -> Optional[int]:
    try:
        return len(iterator)
    except TypeError:
        return options.num_iters_per_epoch


def scheduled_batches(
    iterator: Iterable,
    scheduler: AbsMarginScheduler,
    loss,
    reporter,
    options,
    used: List[float],
) -> Iterator:
    """Yield the batches of ``iterator``, setting the loss margin before each one.

    The margins set are appended to ``used``.
    """
    epoch = reporter.get_epoch()
    n_iter = _iterations_in(iterator, options)
    for iteration, batch in enumerate(iterator):
        margin = scheduler.margin(epoch, iteration, n_iter)
        loss.update(margin)
        reporter.register({"margin": margin})
        used.append(margin)
        yield batch


def _log_margins_of_all_ranks(used: List[float], device: torch.device) -> None:
    """Gather (steps, mean, last margin) of every rank; log them on rank 0 and fail if
    the ranks disagree (a desynchronised schedule would silently train a different
    loss on each rank)."""
    summary = torch.tensor(
        [len(used), sum(used) / max(len(used), 1), used[-1] if used else float("nan")],
        dtype=torch.float64,
        device=device,
    )
    gathered = [
        torch.zeros_like(summary) for _ in range(torch.distributed.get_world_size())
    ]
    torch.distributed.all_gather(gathered, summary)
    rows = [tuple(round(float(v), 10) for v in g) for g in gathered]
    logging.info(f"margin per rank (steps, mean, last): {rows}")
    if any(row[1:] != rows[0][1:] for row in rows):
        raise RuntimeError(f"ranks used different margins: {rows}")


def _stop_if_stopped(options, reporter: Optional[Reporter]):
    """The options for resuming a run that ESPnet stopped early: no more epochs
    (ESPnet checks its patience only after an epoch, so a resumed run would train
    on, and end with other weights than the run that was not interrupted)."""
    if reporter is None or options.patience is None or reporter.get_epoch() < 1:
        return options
    if not reporter.has(*options.early_stopping_criterion[:2]):
        return options  # ESPnet reports the missing statistic itself
    if reporter.check_early_stopping(
        options.patience, *options.early_stopping_criterion
    ):
        return dataclasses.replace(options, max_epoch=reporter.get_epoch())
    return options


@contextmanager
def _validation_on(device: torch.device):
    """Send the tensors that ESPnet 202511's distributed validation puts on "cuda" to
    ``device`` instead (it hard-codes "cuda" for its all_gather buffers)."""
    original = spk_trainer.to_device

    def to_device(data, device_name=None, *args, **kwargs):
        if device_name == "cuda":
            device_name = device
        return original(data, device_name, *args, **kwargs)

    spk_trainer.to_device = to_device
    try:
        yield
    finally:
        spk_trainer.to_device = original


def _sharded_weights(model: torch.nn.Module):
    return [
        m.sharded_weight
        for m in unwrap_model(model).modules()
        if getattr(m, "sharded_weight", None) is not None
    ]


def _diagnostics_of(model, options) -> Optional[TrainingDiagnostics]:
    """The model's diagnostics hooks (made at the first epoch, kept on the model so
    that sub-center switches are counted across epochs), or None when off."""
    if not getattr(options, "training_diagnostics", False):
        return None
    inner = unwrap_model(model)
    diagnostics = inner.__dict__.get("_plugin_diagnostics")
    if diagnostics is None:
        diagnostics = TrainingDiagnostics(inner)
        inner.__dict__["_plugin_diagnostics"] = diagnostics
    return diagnostics


class MarginSchedulingSpkTrainer(SpkTrainer):
    """SpkTrainer that drives a margin scheduler, validates on any device (each
    validation utterance embedded once, see ``validation``) and saves crash-safely
    (see ``crash_safety``).

    With a class-sharded loss it also clips by the gradient norm over all shards,
    makes the optimizers' checkpoints speak the full weight's shape, and after each
    epoch's training (on every rank; ESPnet then validates and saves on rank 0) gathers
    the full weight and optimizer state for the checkpoint.
    """

    @classmethod
    def run(
        cls,
        model,
        optimizers,
        schedulers,
        train_iter_factory,
        valid_iter_factory,
        plot_attention_iter_factory,
        trainer_options,
        distributed_option,
    ) -> None:
        output_dir = Path(trainer_options.output_dir)
        saves = not distributed_option.distributed or distributed_option.dist_rank == 0
        if trainer_options.resume:
            reporter = None
            if saves:
                reporter = repair_run_dir(
                    output_dir,
                    trainer_options.best_model_criterion,
                    trainer_options.keep_nbest_models,
                )
            elif (output_dir / "checkpoint.pth").exists():
                reporter = Reporter()
                reporter.load_state_dict(
                    torch.load(
                        output_dir / "checkpoint.pth",
                        map_location="cpu",
                        mmap=True,
                        weights_only=False,
                    )["reporter"]
                )
            trainer_options = _stop_if_stopped(trainer_options, reporter)
        with crash_safe_saving(output_dir):
            super().run(
                model=model,
                optimizers=optimizers,
                schedulers=schedulers,
                train_iter_factory=train_iter_factory,
                valid_iter_factory=valid_iter_factory,
                plot_attention_iter_factory=plot_attention_iter_factory,
                trainer_options=trainer_options,
                distributed_option=distributed_option,
            )

    @classmethod
    def resume(
        cls,
        checkpoint,
        model,
        reporter,
        optimizers,
        schedulers,
        scaler,
        ngpu=0,
        strict=True,
    ):
        for sharded in _sharded_weights(model):
            for optimizer in optimizers:
                sharded.attach(optimizer)
        return super().resume(
            checkpoint=checkpoint,
            model=model,
            reporter=reporter,
            optimizers=optimizers,
            schedulers=schedulers,
            scaler=scaler,
            ngpu=ngpu,
            strict=strict,
        )

    @classmethod
    def build_options(cls, args) -> MarginTrainerOptions:
        base = super().build_options(args)
        values = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return MarginTrainerOptions(
            **values,
            margin_scheduler=build_margin_scheduler(args),
            training_diagnostics=getattr(args, "training_diagnostics", False),
        )

    @classmethod
    def train_one_epoch(
        cls,
        model,
        iterator,
        optimizers,
        schedulers,
        scaler,
        reporter,
        summary_writer,
        options,
        distributed_option,
    ) -> bool:
        scheduler = getattr(options, "margin_scheduler", None)
        used: List[float] = []
        if scheduler is not None:
            loss = unwrap_model(model).loss
            iterator = scheduled_batches(
                iterator, scheduler, loss, reporter, options, used
            )
        for sharded in _sharded_weights(model):
            sharded.release()
            for optimizer in optimizers:
                sharded.attach(optimizer)
        diagnostics = _diagnostics_of(model, options)
        if diagnostics is not None:
            diagnostics.start_epoch(reporter, scaler, options.accum_grad)
        with across_shards(model):
            all_invalid = super().train_one_epoch(
                model=model,
                iterator=iterator,
                optimizers=optimizers,
                schedulers=schedulers,
                scaler=scaler,
                reporter=reporter,
                summary_writer=summary_writer,
                options=options,
                distributed_option=distributed_option,
            )
        if diagnostics is not None:
            diagnostics.reporter = None
        for sharded in _sharded_weights(model):
            sharded.gather(optimizers)
        if scheduler is not None and distributed_option.distributed:
            _log_margins_of_all_ranks(
                used, next(unwrap_model(model).parameters()).device
            )
        return all_invalid

    @classmethod
    def validate_one_epoch(cls, model, iterator, reporter, options, distributed_option):
        if isinstance(iterator, TrialValidation):
            validate_trials(model, iterator, reporter, distributed_option.distributed)
            return
        if distributed_option.distributed and options.ngpu == 0:
            device = next(unwrap_model(model).parameters()).device
            with _validation_on(device):
                return super().validate_one_epoch(
                    model, iterator, reporter, options, distributed_option
                )
        return super().validate_one_epoch(
            model, iterator, reporter, options, distributed_option
        )


def validation_stats(args, model, iterator) -> Dict[str, float]:
    """Validate ``model`` once on ``iterator`` (from the task's validation iterator
    factory) as the plugin's trainer does in a run of ``args``, in this process, and
    return what it reports (for checking a model, the tests and the benchmark)."""
    reporter = Reporter()
    reporter.set_epoch(1)
    with reporter.observe("valid") as sub:
        MarginSchedulingSpkTrainer.validate_one_epoch(
            model,
            iterator,
            sub,
            MarginSchedulingSpkTrainer.build_options(args),
            DistributedOption(distributed=False),
        )
    return {k: reporter.get_value("valid", k) for k in reporter.get_keys2("valid")}
