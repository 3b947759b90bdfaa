"""The loss in ESPnet's loss choices (in this process; tests/test_layout.py checks the
import order in fresh interpreters)."""

import io
import sys

from espnet2.spk.loss.aamsoftmax_subcenter_intertopk import (
    ArcMarginProduct_intertopk_subcenter as EspnetLoss,
)
from espnet2.tasks.spk import loss_choices

import espnet_plugin_intertopk
from espnet_plugin_intertopk import registration
from espnet_plugin_intertopk.registration import register_loss
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask


def test_name_resolves_to_the_plugin_and_espnet_copy_stays_selectable():
    assert (
        loss_choices.get_class("aamsoftmax_sc_topk")
        is espnet_plugin_intertopk.ArcMarginProduct_intertopk_subcenter
    )
    assert loss_choices.get_class("aamsoftmax_sc_topk_espnet") is EspnetLoss
    assert loss_choices.get_class("aamsoftmax").__module__.startswith("espnet2.")


def test_registration_is_idempotent():
    before = dict(loss_choices.classes)
    cls = espnet_plugin_intertopk.ArcMarginProduct_intertopk_subcenter
    register_loss(cls.registry_name)(cls)
    assert loss_choices.classes == before


def test_print_config_lists_the_plugin_loss_and_scheduler(monkeypatch):
    """What ``spk_train --print_config --loss ... --margin_scheduler exp`` prints
    (ESPnet's print_config reads the options from sys.argv)."""
    argv = ["spk_train", "--print_config", "--loss", "aamsoftmax_sc_topk"]
    monkeypatch.setattr(sys, "argv", argv + ["--margin_scheduler", "exp"])
    printed = io.StringIO()
    IntertopkSpeakerTask.print_config(file=printed)
    out = printed.getvalue()
    assert "loss: aamsoftmax_sc_topk" in out
    assert "class_chunk_size" in out and "k_top: 5" in out
    assert "margin_scheduler: exp" in out and "fix_start_epoch" in out


def test_registering_after_espnet_was_imported_installs_no_import_hook():
    finders = list(sys.meta_path)
    registration.register_with_espnet()
    assert sys.meta_path == finders
    assert loss_choices.get_class("aamsoftmax_sc_topk").__module__ == (
        "espnet_plugin_intertopk.loss"
    )
