"""Backbone Lab backbones: the `Backbone` base class, presets, LoRA, families.

`import backbones` is light (no keras): it registers every family's facts
and presets (each family folder's `family.py`), which is all that checking a
config needs (`backbones.preset_facts`). The first use of a class
(`backbones.Backbone`, `backbones.GPT2Backbone`, `Backbone.from_preset`)
runs `load()`, which imports keras, the preset formats (`backbones.formats`)
and every family's Keras modules, which register their classes and
converters. Adding a family edits nothing here.
"""

import importlib
import importlib.util
import pkgutil

from backbones import registry
from backbones.errors import (  # noqa: F401
    BackboneLabError, ConversionError, LoRAError, PresetChecksumError, PresetClassMismatchError,
    PresetDownloadError, PresetFormatError, PresetNotFoundError, QuantizationError, UnknownArgumentError,
)

from backbones.version import __version__  # noqa: F401

for _package in pkgutil.iter_modules(__path__):
    if _package.ispkg and importlib.util.find_spec(f"{__name__}.{_package.name}.family"):
        _module = importlib.import_module(f"{__name__}.{_package.name}.family")
        registry.register_family(_module.FAMILY, f"{__name__}.{_package.name}")

_loaded = False


def load():
    """Imports the Keras side: the base class and every family's modules.

    Idempotent; `Backbone.from_preset` and the first access to a class
    attribute of this package call it.

    Example:
    >>> import backbones
    >>> backbones.load()
    >>> "GPT2Backbone" in backbones.registry.BACKBONE_CLASSES
    True
    """
    global _loaded
    if _loaded:
        return
    registry.load()
    from backbones.backbone import Backbone
    from backbones.tokenizer import Tokenizer

    globals().update(Backbone=Backbone, Tokenizer=Tokenizer, **registry.BACKBONE_CLASSES)
    _loaded = True


def __getattr__(name):
    # Only reached for names not set yet: the classes, before `load()`.
    if name in ("Backbone", "Tokenizer") or name.endswith("Backbone"):
        load()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
