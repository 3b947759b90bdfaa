"""Plugin-only loss options are kept out of ``loss_conf``, so that plain ESPnet can
rebuild a plugin-trained model, while the plugin's class still gets them."""

import argparse
import inspect

import numpy as np
import pytest
from espnet2.bin.spk_inference import Speech2Embedding
from espnet2.tasks.spk import loss_choices

from espnet_plugin_intertopk.loss import ArcMarginProduct_intertopk_subcenter as Plugin
from espnet_plugin_intertopk.train.loss_options import split_loss_options
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask

from conftest import TINY_CONFIG, build_and_save

ESPNET_CLASS = loss_choices.get_class("aamsoftmax_sc_topk_espnet")


def parameters(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


# Every option of the plugin's class that ESPnet's class does not take, read from the
# two signatures (so a new plugin option is covered here without editing the test).
PLUGIN_ONLY = sorted(parameters(Plugin) - parameters(ESPNET_CLASS))
VALUES = {
    "class_chunk_size": 4,
    "compile_kernels": True,
    "check_values": True,
    "return_accuracy": True,
    "shard_classes": True,  # one process, no group: the ordinary loss
    "subcenter_init": "shared",
}


def parse(*extra):
    return IntertopkSpeakerTask.get_parser().parse_args(
        ["--config", str(TINY_CONFIG), "--spk_num", "6", *extra]
    )


def conf_args(options):
    return [a for k, v in options.items() for a in ("--loss_conf", f"{k}={v}")]


def test_every_plugin_only_option_has_a_test_value():
    assert PLUGIN_ONLY == sorted(VALUES)


def test_split_moves_only_what_espnets_class_does_not_take():
    args = parse(*conf_args(VALUES), "--loss_conf", "margin=0.3")
    split_loss_options(args)
    assert args.loss_plugin_conf == VALUES
    assert args.loss_conf == {"K": 3, "k_top": 2, "margin": 0.3}
    split_loss_options(args)  # idempotent
    assert args.loss_plugin_conf == VALUES and "margin" in args.loss_conf


def test_conflicting_or_misplaced_options_are_named():
    args = parse(
        "--loss_conf", "check_values=true", "--loss_plugin_conf", "check_values=false"
    )
    with pytest.raises(ValueError, match="'check_values' is given twice"):
        split_loss_options(args)
    args = parse("--loss_plugin_conf", "margin=0.3")
    with pytest.raises(ValueError, match="'margin' belongs in loss_conf"):
        split_loss_options(args)
    args = parse("--loss", "aamsoftmax", "--loss_plugin_conf", "check_values=true")
    with pytest.raises(ValueError, match="--loss aamsoftmax takes all its options"):
        split_loss_options(args)


def test_other_losses_keep_their_loss_conf():
    args = parse("--loss", "aamsoftmax", "--loss_conf", "margin=0.3")
    split_loss_options(args)
    assert args.loss_conf["margin"] == 0.3 and args.loss_plugin_conf == {}


CASES = {**{k: {k: v} for k, v in VALUES.items()}, "all": VALUES}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """For each case: built by the plugin's task, config.yaml dumped as ESPnet's
    trainer dumps it, weights saved."""
    root = tmp_path_factory.mktemp("options")
    saved = {}
    for name, options in CASES.items():
        config, weights, model = build_and_save(root / name, *conf_args(options))
        for key, value in options.items():
            assert getattr(model.loss, key) == value, key  # the plugin reads them
        saved[name] = (str(config), str(weights))
    return root, saved


def test_plain_espnet_rebuilds_every_plugin_option_with_equal_embeddings(
    saved_models, monkeypatch
):
    """Plain ESPnet emulated in this process: its own class under the name (the only
    change the plugin makes to ESPnet). test_spk_sh.py does it for real, in a process
    where the plugin cannot be imported, with a packed model."""
    _, saved = saved_models
    speech = np.random.default_rng(0).normal(size=16000).astype(np.float32) * 0.1
    ours = {}
    for name, (config, model) in saved.items():
        embed = Speech2Embedding(config, model)
        assert type(embed.spk_model.loss) is Plugin
        ours[name] = embed(speech).numpy()
    monkeypatch.setitem(loss_choices.classes, "aamsoftmax_sc_topk", ESPNET_CLASS)
    monkeypatch.delitem(loss_choices.classes, "aamsoftmax_sc_topk_espnet")
    for name, (config, model) in saved.items():
        embed = Speech2Embedding(config, model)
        assert type(embed.spk_model.loss) is ESPNET_CLASS
        plain = embed(speech).numpy()
        assert np.abs(plain - ours[name]).max() <= 1e-6, name
        assert np.abs(plain).max() > 0


def test_plugin_rebuilds_the_saved_model_with_its_options(saved_models):
    _, saved = saved_models
    config, model_file = saved["all"]
    model, args = IntertopkSpeakerTask.build_model_from_file(config, model_file)
    for key, value in VALUES.items():
        assert getattr(model.loss, key) == value, key
    assert isinstance(args, argparse.Namespace) and args.loss_plugin_conf == VALUES
