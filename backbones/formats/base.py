"""What every preset format's reader provides, and the building blocks they share.

`PresetReader` is the interface; `built_to_be_filled` builds a backbone
unallocated for a reader to fill from its file (one copy of the weights in
memory, see `backbones.variables`); `check_subclass` checks what the caller
asked for against what the preset holds.
"""

import contextlib
import contextvars
import inspect

from backbones import quantize, registry
from backbones.errors import PresetClassMismatchError, UnknownArgumentError
from backbones.initializers import weights_to_be_loaded
from backbones.variables import deferred_variables

_QUANTIZE_ON_LOAD = contextvars.ContextVar("quantize_on_load", default=None)


@contextlib.contextmanager
def quantizing_on_load(mode):
    """Within it, `built_to_be_filled` quantizes each layer (`mode`, e.g.
    `"int8"`; None: no) as soon as its kernel is filled."""
    token = _QUANTIZE_ON_LOAD.set(mode)
    try:
        yield
    finally:
        _QUANTIZE_ON_LOAD.reset(token)


def quantize_on_load():
    """The quantization mode `from_preset` was given (None: none)."""
    return _QUANTIZE_ON_LOAD.get()


@contextlib.contextmanager
def built_to_be_filled(build):
    """`build()` a backbone unallocated, for the block to fill each of its
    variables from a file (`variables.fill`); the rest are initialised on
    leaving it. Every loader of `from_preset` builds through here: when
    `from_preset` was given `quantize=`, each layer is quantized as soon as
    its kernel is filled (`quantize.quantizing_as_filled`).

    Example:
    >>> import numpy as np
    >>> from backbones import variables
    >>> from backbones.gpt2 import GPT2Backbone
    >>> build = lambda: GPT2Backbone(vocabulary_size=8, num_layers=1, num_heads=1, hidden_dim=4,
    ...                              intermediate_dim=8, max_sequence_length=4)
    >>> with built_to_be_filled(build) as model:
    ...     variables.fill(model.token_embedding.embeddings, np.ones((8, 4), "float32"))
    >>> float(model.token_embedding.embeddings.numpy().sum())
    32.0
    """
    with weights_to_be_loaded(), deferred_variables() as finish:
        backbone = build()
    with quantize.quantizing_as_filled(backbone, _QUANTIZE_ON_LOAD.get()):
        yield backbone
    finish()


def check_subclass(cls, target, preset, kwargs=()):
    """`target` (the preset's class) must be a `cls`, and take every keyword of `kwargs`."""
    if not issubclass(target, cls):
        raise PresetClassMismatchError(
            f"Preset {preset!r} holds a {target.__name__}, which is not a {cls.__name__}. "
            f"Call {target.__name__}.from_preset or Backbone.from_preset instead."
        )
    # Keras's Model swallows unknown keywords: a typo would be ignored silently.
    accepted = {"name", "trainable", "dtype"} | {
        p.name for p in inspect.signature(target.__init__).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        hints = [c for u in unknown for c in registry.closest(u, accepted, n=1)]
        hint = f" Did you mean {', '.join(map(repr, hints))}?" if hints else ""
        raise UnknownArgumentError(
            f"{target.__name__}.from_preset({str(preset)!r}) got unknown keyword argument(s) "
            f"{unknown}.{hint} {target.__name__} takes {sorted(accepted)}."
        )


class PresetReader(contextlib.AbstractContextManager):
    """One preset directory in one format. Subclasses register themselves by
    format name (`registry.register_format`) and implement the four reads.

    Args:
        directory: Path. The preset directory.
        config: dict. Its parsed config.json.
    """

    name = None  # the format name it is registered under

    def __init__(self, directory, config):
        self.directory, self.config = directory, config

    def backbone_class(self):
        """The registered backbone class the preset holds (a clear error if none)."""
        raise NotImplementedError

    def backbone_kwargs(self, load_weights=True):
        """Constructor arguments of that class, from the preset."""
        raise NotImplementedError

    def build(self, target, kwargs):
        """`target(**kwargs)` with the preset's weights loaded into it (built
        unallocated and filled, see `built_to_be_filled`)."""
        raise NotImplementedError

    def tokenizer(self):
        """The preset's `Tokenizer`, or None when it has none we can read."""
        raise NotImplementedError

    def close(self):
        """Releases files the reader holds open."""

    def __exit__(self, *exc):
        self.close()
