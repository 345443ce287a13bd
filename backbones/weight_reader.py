"""`WeightReader`: the one interface of stored weights, whatever the format.

A reader holds a file's arrays by key (a transformers tensor name, a
keras-hub `layers/<layer>/vars/<i>`, our `<layer path>/<i>`), reads each one
on demand into its own page-aligned buffer, and puts it into its variable
(`put`): a variable still pending (built inside `built_to_be_filled`) is
created from that buffer, so the weights are held once (`backbones.variables`).
It records what was read, so a loader can refuse leftovers (`check_all_used`).
"""

from backbones import variables
from backbones.errors import ConversionError


def assign(variable, value, name):
    """Puts a stored array into a Keras variable, checking the shape.

    A variable still pending (built inside `variables.deferred_variables()`)
    is created from `value` itself, without a copy when the dtypes match.
    """
    if tuple(variable.shape) != tuple(value.shape):
        raise ConversionError(
            f"Stored array {name!r} has shape {tuple(value.shape)}, but "
            f"{variable.path} expects {tuple(variable.shape)}: the weights do not "
            "match their config.json."
        )
    variables.fill(variable, value)


class WeightReader:
    """Stored arrays by key. Subclasses implement `keys()` and `_read(key)`.

    Example:
    >>> import numpy as np
    >>> class Arrays(WeightReader):
    ...     def __init__(self, arrays):
    ...         super().__init__("memory")
    ...         self.arrays = arrays
    ...     def keys(self):
    ...         return set(self.arrays)
    ...     def _read(self, key):
    ...         return self.arrays[key]
    >>> reader = Arrays({"w": np.ones((2, 3), "float32"), "b": np.zeros(3, "float32")})
    >>> reader.get("w").shape
    (2, 3)
    >>> reader.check_all_used()
    Traceback (most recent call last):
    ...
    backbones.errors.ConversionError: 1 unexpected stored array(s) in the weights in memory, which the architecture has no place for, e.g. ['b']. Its config.json probably describes another architecture, or it has an option we do not support.
    """

    item, container = "stored array", "weights"  # what error messages call them

    def __init__(self, source):
        self.source = source  # what error messages name: a directory or file
        self.used = set()

    def keys(self):
        raise NotImplementedError

    def _read(self, key):
        raise NotImplementedError

    def __contains__(self, key):
        return key in self.keys()

    def get(self, key):
        """The stored array `key` (its own buffer), marked as used."""
        if key not in self:
            raise ConversionError(
                f"{self.item.capitalize()} {key!r} is missing from the {self.container} in {self.source}: "
                "they do not match their config.json (or were saved by a version laid out "
                "differently). Re-download or re-save them.")
        value = self._read(key)
        self.used.add(key)
        return value

    def put(self, variable, key, transform=None):
        """Reads `key`, applies `transform(array)` if given (a transpose, a
        reshape), and puts it into `variable`, checking the shape."""
        value = self.get(key)
        if transform is not None:
            value = transform(value)  # the untransformed array is freed here when it was copied
        assign(variable, value, key)

    def check_all_used(self, ignore=()):
        """Raises if a stored array was never read (except keys ending in `ignore`)."""
        left = sorted(k for k in self.keys() - self.used if not k.endswith(tuple(ignore)))
        if left:
            raise ConversionError(
                f"{len(left)} unexpected {self.item}(s) in the {self.container} in {self.source}, "
                f"which the architecture has no place for, e.g. {left[:5]}. Its config.json "
                "probably describes another architecture, or it has an option we do not support.")
