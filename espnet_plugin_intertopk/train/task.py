"""The plugin's speaker task: ESPnet's SpeakerTask with a margin scheduler."""

import argparse
import dataclasses
import logging
from typing import Optional

import torch
from espnet2.iterators.sequence_iter_factory import SequenceIterFactory
from espnet2.tasks.spk import SpeakerTask
from espnet2.train.distributed_utils import DistributedOption
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import str2bool
from typeguard import TypeCheckError

from espnet_plugin_intertopk.distributed.grad_norm import is_sharded
from espnet_plugin_intertopk.loss import (
    ArcMarginProduct_intertopk_subcenter,
    check_hard_negative_margin,
)
from espnet_plugin_intertopk.safe_io.errors import UserError
from espnet_plugin_intertopk.train.crash_safety import atomic_config
from espnet_plugin_intertopk.train.diagnostics import (
    unsupported as diagnostics_unsupported,
)
from espnet_plugin_intertopk.train.input_check import check_inputs
from espnet_plugin_intertopk.train.loss_options import (
    PLUGIN_CONF,
    loss_arguments,
    split_loss_options,
)
from espnet_plugin_intertopk.train.margin_scheduler import margin_scheduler_choices
from espnet_plugin_intertopk.train.resume_check import check_and_record
from espnet_plugin_intertopk.train.trainer import (
    MarginSchedulingSpkTrainer,
    build_margin_scheduler,
)
from espnet_plugin_intertopk.train.validation import UniqueUtteranceIterFactory


def _raised_here(err: BaseException) -> bool:
    """Whether ``err`` was raised by this package's code (a loss option check)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return (
        tb is not None and "espnet_plugin_intertopk" in tb.tb_frame.f_code.co_filename
    )


class IntertopkSpeakerTask(SpeakerTask):
    """SpeakerTask + ``--margin_scheduler {constant,linear,exp}`` and its trainer, a
    config.yaml that plain ESPnet can rebuild the model from, a refusal to resume a
    run whose settings or inputs changed, and a validation that loads and embeds each
    validation utterance once per epoch."""

    class_choices_list = SpeakerTask.class_choices_list + [margin_scheduler_choices]
    trainer = MarginSchedulingSpkTrainer

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        super().add_task_arguments(parser)
        parser.add_argument(
            f"--{PLUGIN_CONF}",
            action=NestedDictAction,
            default=dict(),
            help="Options of the plugin's loss class that ESPnet's class of the same "
            "name does not take (class_chunk_size, compile_kernels, check_values, "
            "return_accuracy, shard_classes). They may be given in --loss_conf too: "
            "the task moves them here, so that plain ESPnet can rebuild a trained "
            "model from its config.yaml.",
        )
        parser.add_argument(
            "--training_diagnostics",
            type=str2bool,
            default=False,
            help="Register per-step statistics of the classification head (target "
            "cosine, hard negatives above the target, hard-negative margin, sub-center "
            "switches, encoder gradient norm) as diag_* in the log, images/ and "
            "tensorboard. Costs one extra product with the class weights per step.",
        )
        parser.add_argument(
            "--valid_unique_utterances",
            type=str2bool,
            default=True,
            help="Validation loads and embeds each unique utterance of the trial "
            "list once per epoch (false: ESPnet's SpkTrainer validation, which loads "
            "both sides of every trial twice). Same crops, scores and statistics.",
        )

    @classmethod
    def build_model(cls, args: argparse.Namespace):
        # Fail at start-up, not after the data loaders are built, on a bad schedule
        # or loss option: one line naming the option.
        try:
            scheduler = build_margin_scheduler(args)
        except (ValueError, TypeCheckError) as err:
            raise UserError(
                f"--margin_scheduler {args.margin_scheduler}: {err}", status=2
            ) from err
        espnet_conf = args.loss_conf
        args.loss_conf = loss_arguments(args)
        try:
            model = super().build_model(args)
        except ValueError as err:
            if not _raised_here(err):
                raise
            raise UserError(f"--loss {args.loss}: {err}", status=2) from err
        finally:
            args.loss_conf = espnet_conf
        if scheduler is not None and not callable(getattr(model.loss, "update", None)):
            raise UserError(
                f"--margin_scheduler {args.margin_scheduler} needs a loss with an "
                f"update(margin) method; --loss {args.loss} "
                f"({type(model.loss).__name__}) has none",
                status=2,
            )
        if scheduler is not None and isinstance(
            model.loss, ArcMarginProduct_intertopk_subcenter
        ):
            try:
                check_hard_negative_margin(model.loss.mp, scheduler.largest_margin())
            except ValueError as err:
                raise UserError(
                    f"--margin_scheduler {args.margin_scheduler} reaches margin "
                    f"{scheduler.largest_margin()}: {err}",
                    status=2,
                ) from err
        reason = args.training_diagnostics and diagnostics_unsupported(model.loss)
        if reason:
            raise UserError(f"--training_diagnostics true: {reason}", status=2)
        # A class-sharded weight is a different block on each rank: DDP must neither
        # check it for equal shapes nor average its gradient (the loss does that).
        sharded = [name for name, p in model.named_parameters() if is_sharded(p)]
        if sharded:
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, sharded
            )
        return model

    @classmethod
    def build_iter_factory(
        cls,
        args: argparse.Namespace,
        distributed_option: DistributedOption,
        mode: str,
        kwargs: Optional[dict] = None,
    ):
        if (
            mode != "valid"
            or getattr(args, "collect_stats", False)
            or not getattr(args, "valid_unique_utterances", False)
        ):
            return super().build_iter_factory(args, distributed_option, mode, kwargs)
        # Every rank gets the whole trial list; the utterances are split below.
        one_process = dataclasses.replace(distributed_option, distributed=False)
        factory = super().build_iter_factory(args, one_process, mode, kwargs)
        if not isinstance(factory, SequenceIterFactory):
            logging.warning(
                f"--valid_unique_utterances needs valid_iterator_type sequence, not "
                f"{type(factory).__name__}: validating with ESPnet's method"
            )
            return super().build_iter_factory(args, distributed_option, mode, kwargs)
        if distributed_option.distributed:
            rank = torch.distributed.get_rank()
            world_size = torch.distributed.get_world_size()
        else:
            rank, world_size = 0, 1
        return UniqueUtteranceIterFactory(factory, rank, world_size)

    @classmethod
    def main(cls, args: Optional[argparse.Namespace] = None, cmd=None):
        """ESPnet's main, with the plugin-only loss options set apart, after refusing
        to resume a run whose settings changed."""
        if args is None:
            args = cls.get_parser().parse_args(cmd)
        if not args.print_config:
            check_inputs(
                {
                    f"--{mode}_data_path_and_name_and_type": getattr(
                        args, f"{mode}_data_path_and_name_and_type", None
                    )
                    for mode in ("train", "valid")
                },
                {"--output_dir": args.output_dir},
                {
                    "--train_shape_file": args.train_shape_file or (),
                    "--valid_shape_file": args.valid_shape_file or (),
                    "--init_param": [p.split(":")[0] for p in args.init_param or ()],
                },
                getattr(args, "spk2utt", None),
                getattr(args, "spk_num", None),
            )
            split_loss_options(args)
            if not getattr(args, "collect_stats", False):
                check_and_record(args)
        with atomic_config(args.output_dir):
            super().main(args=args)
