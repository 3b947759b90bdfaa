"""Registration of the plugin's losses in ESPnet's speaker task.

A loss class declares its own name with ``@register_loss(name)``. Registering puts it in
``espnet2.tasks.spk.loss_choices`` under that name; a class ESPnet already had there stays
selectable as ``<name>_espnet`` so both can be compared in one recipe. Registering is
idempotent and happens when ``espnet_plugin_intertopk`` is imported, which must be
before ``SpeakerTask.get_parser()`` builds the ``--loss`` choices.
"""

from typing import Callable, Type

from espnet2.tasks.spk import loss_choices

ESPNET_SUFFIX = "_espnet"


def register_loss(name: str) -> Callable[[Type], Type]:
    """Class decorator: make ``loss: <name>`` in a recipe select the class."""
    key = name.lower()

    def register(cls: Type) -> Type:
        current = loss_choices.classes.get(key)
        if current is not None and current.__module__.startswith("espnet2."):
            loss_choices.classes.setdefault(key + ESPNET_SUFFIX, current)
        loss_choices.classes[key] = cls
        cls.registry_name = key
        return cls

    return register
