"""Backbone Lab backbones: the `Backbone` base class, presets, LoRA, families.

Importing this package imports every family sub-package, which registers
its backbone class, presets and converter; adding a family edits nothing here.
"""

import importlib
import os
import pkgutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow C++ info logs

__version__ = "0.1.0"

from backbones.backbone import Backbone  # noqa: E402
from backbones.errors import (  # noqa: E402,F401
    BackboneLabError, ConversionError, LoRAError, PresetChecksumError, QuantizationError,
    PresetClassMismatchError, PresetDownloadError, PresetFormatError, PresetNotFoundError,
)
from backbones.tokenizer import Tokenizer  # noqa: E402,F401

for _family in pkgutil.iter_modules(__path__):
    if _family.ispkg:
        _module = importlib.import_module(f"{__name__}.{_family.name}")
        globals().update({n: getattr(_module, n) for n in dir(_module) if n.endswith("Backbone")})
