"""ESPnet plugin: sub-center AAM-softmax with inter-top-k penalty, margin scheduling
and large-margin fine-tuning for ``espnet2.tasks.spk``.

Importing the package registers ``aamsoftmax_sc_topk`` in ESPnet's loss choices (at
once, or when ``espnet2.tasks.spk`` is imported; see :mod:`.registration`).

Layers: ``loss`` and ``registration`` (public); ``kernels`` (private numerical kernels
behind one interface); ``train`` (margin scheduler, trainer, task); ``bin`` (entry
points); ``recipe`` (corpus, data checks, scoring; independent of the loss).
"""

from espnet_plugin_intertopk.registration import register_with_espnet

__all__ = ["ArcMarginProduct_intertopk_subcenter"]
__version__ = "0.1.0"

register_with_espnet()


def __getattr__(name: str):
    # The loss class on first use: importing it imports ESPnet's speaker task.
    if name == "ArcMarginProduct_intertopk_subcenter":
        from espnet_plugin_intertopk.loss import ArcMarginProduct_intertopk_subcenter

        return ArcMarginProduct_intertopk_subcenter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
