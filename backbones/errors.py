"""Exception types: one per kind of user mistake.

Every message names the offending key, file or handle and says what to do.
All derive from `BackboneLabError` (and `ValueError`, so generic handlers
still catch them).
"""


class BackboneLabError(ValueError):
    """Base class of every error this package raises on bad input."""


class PresetNotFoundError(BackboneLabError):
    """A preset name, handle or directory that does not exist."""


class PresetFormatError(BackboneLabError):
    """A preset that exists but is not a valid preset (missing or bad file)."""


class PresetChecksumError(PresetFormatError):
    """A weights file whose sha256 differs from the one in metadata.json."""


class PresetDownloadError(BackboneLabError):
    """A hub download that cannot happen: offline and not cached, gated, no access."""


class PresetClassMismatchError(BackboneLabError):
    """`SomeBackbone.from_preset` called on a preset of another class."""


class ConversionError(PresetFormatError):
    """A Hugging Face checkpoint whose tensors do not match the architecture."""


class LoRAError(BackboneLabError):
    """A LoRA request or LoRA file that does not fit the backbone."""


class UnknownArgumentError(BackboneLabError, TypeError):
    """A keyword argument the backbone class does not take (e.g. a typo in a `from_preset` override)."""


class QuantizationError(BackboneLabError):
    """An unsupported quantization mode, or an operation a quantized backbone cannot do."""
