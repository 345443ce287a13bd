"""Initializers of the large weights (kernels, embeddings), aware of loading.

Families build their kernels and embeddings with `normal_initializer()`.
Inside `weights_to_be_loaded()` (entered by every preset loader in
`backbones.formats`) it gives no random draw: zeros, or the stored array of
the weight being created. Below the base class and the loaders, so that both
use it and neither imports the other.
"""

import contextlib
import contextvars

import keras

_WEIGHTS_TO_BE_LOADED = contextvars.ContextVar("weights_to_be_loaded", default=False)


@contextlib.contextmanager
def weights_to_be_loaded(stored=None):
    """Within it, backbones are built only to have every weight loaded next
    (`from_preset`, checkpoint conversion): `normal_initializer` gives the
    stored array of the weight when `stored` (a `weights_h5.StoredWeights`)
    holds it, else zeros."""
    token = _WEIGHTS_TO_BE_LOADED.set(stored or True)
    try:
        yield
    finally:
        _WEIGHTS_TO_BE_LOADED.reset(token)


@keras.saving.register_keras_serializable(package="backbone_lab")
class _StoredOrZeros(keras.initializers.Initializer):
    """The stored value of the weight being built, or zeros (see `weights_to_be_loaded`)."""

    def __init__(self, stored):
        self.stored = stored

    def __call__(self, shape, dtype=None):
        value = self.stored.initial_value(shape, dtype)
        return keras.initializers.Zeros()(shape, dtype) if value is None else value

    # A loaded layer keeps this initializer: if its config is ever serialized,
    # it round-trips as plain zeros (the stored arrays are long gone).
    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return keras.initializers.Zeros()


def normal_initializer(stddev=0.02):
    """`RandomNormal(stddev)`, or inside `weights_to_be_loaded()` the stored
    value (else zeros).

    Drawing random weights that the loaded ones overwrite at once is the
    largest cost of building a preset: ~1 s of a 110M-parameter GPT-2's
    from_preset on 2 vCPU, where zeros cost a memset; creating the variable
    from its stored array saves the memset and a copy into it too.

    Example:
    >>> type(normal_initializer()).__name__
    'RandomNormal'
    >>> with weights_to_be_loaded():
    ...     type(normal_initializer()).__name__
    'Zeros'
    """
    stored = _WEIGHTS_TO_BE_LOADED.get()
    if stored is True:
        return keras.initializers.Zeros()
    if stored:
        return _StoredOrZeros(stored)
    return keras.initializers.RandomNormal(stddev=stddev)
