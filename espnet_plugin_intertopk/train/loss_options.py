"""Keep the options only the plugin's loss takes out of ``loss_conf`` in config.yaml.

ESPnet builds the loss as ``loss_class(nout=..., nclasses=..., **loss_conf)``. A model
trained with the plugin is shared as its config.yaml and weights and rebuilt by plain
ESPnet, where ``loss: aamsoftmax_sc_topk`` names ESPnet's own class: an option that only
the plugin's class takes (``class_chunk_size``, ``compile_kernels``, ``check_values``,
``return_accuracy``, ``shard_classes``) would make that call fail. So the plugin's task
moves such options from ``loss_conf`` to ``loss_plugin_conf``, a key plain ESPnet
never reads, before anything is written, and hands both to its own class. Which options
move is read from the signature of ESPnet's class of the same name, so an option a later
ESPnet learns stays in ``loss_conf``.
"""

import argparse
import inspect
from typing import Dict, Optional, Set

from espnet_plugin_intertopk.registration import ESPNET_SUFFIX

PLUGIN_CONF = "loss_plugin_conf"


def espnet_counterpart(loss: Optional[str]) -> Optional[type]:
    """ESPnet's own class for the name ``loss`` if the plugin replaced it, else None."""
    from espnet2.tasks.spk import loss_choices

    if loss is None:
        return None
    key = loss.lower()
    selected = loss_choices.classes.get(key)
    if selected is None or selected.__module__.startswith("espnet2."):
        return None
    return loss_choices.classes.get(key + ESPNET_SUFFIX)


def _keyword_parameters(cls: type) -> Optional[Set[str]]:
    """The keyword arguments ``cls`` accepts; None if it takes any (``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def split_loss_options(args: argparse.Namespace) -> None:
    """Move the options of ``args.loss_conf`` that ESPnet's class of the same name does
    not take to ``args.loss_plugin_conf`` (in place; idempotent)."""
    plugin_conf = dict(getattr(args, PLUGIN_CONF, None) or {})
    counterpart = espnet_counterpart(args.loss)
    accepted = None if counterpart is None else _keyword_parameters(counterpart)
    if accepted is None:
        if plugin_conf:
            raise ValueError(
                f"--{PLUGIN_CONF} is for the plugin's losses that replace one of "
                f"ESPnet's; --loss {args.loss} takes all its options in --loss_conf, "
                f"got {PLUGIN_CONF}={plugin_conf}"
            )
        return
    loss_conf = dict(args.loss_conf or {})
    for key in [k for k in loss_conf if k not in accepted]:
        value = loss_conf.pop(key)
        if key in plugin_conf and plugin_conf[key] != value:
            raise ValueError(
                f"loss option {key!r} is given twice with different values: "
                f"loss_conf {value!r}, {PLUGIN_CONF} {plugin_conf[key]!r}"
            )
        plugin_conf[key] = value
    for key in plugin_conf:
        if key in accepted:
            raise ValueError(
                f"loss option {key!r} belongs in loss_conf (ESPnet's class takes it), "
                f"not in {PLUGIN_CONF}"
            )
    args.loss_conf = loss_conf
    setattr(args, PLUGIN_CONF, plugin_conf)


def loss_arguments(args: argparse.Namespace) -> Dict:
    """Every option for the selected loss class: loss_conf and loss_plugin_conf."""
    return {**(args.loss_conf or {}), **(getattr(args, PLUGIN_CONF, None) or {})}
