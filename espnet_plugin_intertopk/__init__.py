"""ESPnet plugin: sub-center AAM-softmax with inter-top-k penalty, margin scheduling
and large-margin fine-tuning for ``espnet2.tasks.spk``.

Importing the package registers ``aamsoftmax_sc_topk`` in ESPnet's loss choices.
"""

from espnet_plugin_intertopk.loss import ArcMarginProduct_intertopk_subcenter

__all__ = ["ArcMarginProduct_intertopk_subcenter"]
__version__ = "0.1.0"
