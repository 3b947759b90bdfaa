"""Registration of the plugin's losses in ESPnet's speaker task.

A loss class declares its own name with ``@register_loss(name)``. Registering puts it
in ``espnet2.tasks.spk.loss_choices`` under that name; a class ESPnet already had there
stays selectable as ``<name>_espnet`` so both can be compared in one recipe.
Registering is idempotent.

Importing ``espnet_plugin_intertopk`` calls :func:`register_with_espnet`: the losses are
registered at once if ESPnet's speaker task is already imported, else right after it is
imported (before anything can call ``SpeakerTask.get_parser()``, which reads the
``--loss`` choices). So the package import itself stays light (``espnet2.tasks.spk``
takes some 15 s to import), and tools that never build a model do not pay for it.
"""

import importlib
import importlib.abc
import sys
from typing import Callable, Dict, Type

ESPNET_SUFFIX = "_espnet"
SPEAKER_TASK = "espnet2.tasks.spk"
# The modules whose import registers the plugin's losses.
LOSS_MODULES = ("espnet_plugin_intertopk.loss",)


_PENDING: Dict[str, Type] = {}


def _register(key: str, cls: Type) -> None:
    from espnet2.tasks.spk import loss_choices

    current = loss_choices.classes.get(key)
    if current is not None and current.__module__.startswith("espnet2."):
        loss_choices.classes.setdefault(key + ESPNET_SUFFIX, current)
    loss_choices.classes[key] = cls


def register_loss(name: str) -> Callable[[Type], Type]:
    """Class decorator: make ``loss: <name>`` in a recipe select the class.

    Registers at once if ESPnet's speaker task is imported, else when it is: a loss
    used from plain PyTorch does not pay for importing the task.
    """
    key = name.lower()

    def register(cls: Type) -> Type:
        cls.registry_name = key
        if SPEAKER_TASK in sys.modules:
            _register(key, cls)
        else:
            _PENDING[key] = cls
            register_with_espnet()
        return cls

    return register


def _import_losses() -> None:
    for module in LOSS_MODULES:
        importlib.import_module(module)
    while _PENDING:
        _register(*_PENDING.popitem())


class _LoaderThenRegister(importlib.abc.Loader):
    """Runs the speaker task module's own loader, then imports the plugin's losses."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        _import_losses()


class _SpeakerTaskFinder(importlib.abc.MetaPathFinder):
    """Finds ``espnet2.tasks.spk`` through the other finders and wraps its loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != SPEAKER_TASK:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _LoaderThenRegister(spec.loader)
                return spec
        return None


def register_with_espnet() -> None:
    """Register the plugin's losses now if ESPnet's speaker task is imported, else as
    soon as it is."""
    if SPEAKER_TASK in sys.modules:
        _import_losses()
    elif not any(isinstance(f, _SpeakerTaskFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SpeakerTaskFinder())
