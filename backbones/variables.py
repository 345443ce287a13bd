"""Building a backbone whose weights come from a file, holding each weight once.

Building a model allocates and initialises every variable; loading a
checkpoint then overwrites them. At 2.5B parameters that is a second copy of
the model in flight, plus each tensor's conversion temporaries. Here the
model is built inside Keras's `StatelessScope` without initialising its
variables (Keras creates them unallocated, with their paths and shapes), and
each variable is then created straight from its stored array: one copy of the
weights, one tensor in flight at a time.

Measured on a Gemma-2B-shaped transformers checkpoint (bf16 safetensors,
5.0 GB), `Backbone.from_preset(..., dtype="bfloat16")`: see BENCHMARKS.md
("Memory at scale").
"""

import contextlib
import contextvars
import mmap
import weakref

import keras
import numpy as np

try:
    from keras.src.backend.common import global_state
except ImportError:  # pragma: no cover - other Keras layouts: build as usual
    global_state = None

_PENDING = "uninitialized_variables"  # Keras's own list of variables created unallocated
_ON_FILLED = contextvars.ContextVar("on_filled", default=None)


def aligned_empty(shape, dtype):
    """An uninitialised array in its own anonymous memory map: page-aligned,
    so TensorFlow can wrap it in place (it needs 64 bytes). Not `np.empty`:
    numpy asks for transparent huge pages on large arrays, and with the
    kernel's usual `defrag=madvise` the page faults then wait for memory
    compaction: reading the 110M preset took 0.24-0.88 s that way against a
    steady 0.32 s here (warm from_preset 0.89 s -> 0.58 s, medians, quiet machine).

    Example:
    >>> a = aligned_empty((2, 3), "float32")
    >>> a.shape, a.ctypes.data % 4096
    ((2, 3), 0)
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if not nbytes:
        return np.empty(shape, dtype)
    # Private, not shared, anonymous memory: faults in 20-30% faster here.
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buffer, dtype).reshape(shape)


class ArrayView:
    """An array seen through `__array__` only: TensorFlow copies an ndarray
    before wrapping it (and again when it is not 64-byte aligned), but wraps
    any other object exposing `__array__` in place."""

    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array


def as_tensor(value, dtype):
    """`value` (a NumPy array this caller owns) as a tensor of `dtype`.

    The array's buffer is adopted, not copied (TensorFlow); a transposed view
    (`array.T`, as converters of torch `(out, in)` weights give) and a dtype
    change are done by the backend's own multi-threaded ops rather than
    NumPy's single-threaded loops: loading Gemma 2B went from 49 s (NumPy
    copies) to see BENCHMARKS.md.

    Example:
    >>> import numpy as np
    >>> a = np.arange(6, dtype="float32").reshape(2, 3)
    >>> as_tensor(a.T, "float16").numpy().tolist()
    [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    """
    value = np.asarray(value)
    transposed = value.ndim == 2 and not value.flags.c_contiguous and value.T.flags.c_contiguous
    if transposed:
        value = value.T
    if not value.flags.c_contiguous or (value.size and value.ctypes.data % 64):
        copy = aligned_empty(value.shape, value.dtype)
        copy[...] = value
        value = copy
    source_dtype = keras.backend.standardize_dtype(value.dtype)
    tensor = keras.ops.convert_to_tensor(
        ArrayView(value) if keras.backend.backend() == "tensorflow" else value, dtype=source_dtype)
    if transposed:
        tensor = keras.ops.transpose(tensor)
    if source_dtype != keras.backend.standardize_dtype(dtype):
        tensor = keras.ops.cast(tensor, dtype)
    return tensor


def is_pending(variable):
    """True for a variable created inside `deferred_variables()` and not yet filled."""
    return getattr(variable, "_value", True) is None


def fill(variable, value):
    """Creates a pending variable from `value` (an array this caller owns,
    adopted without a copy when its dtype matches), or assigns `value` to a
    variable that already exists. Then calls the `on_filled` callback, if any."""
    if not is_pending(variable):
        variable.assign(as_tensor(value, variable.dtype))
    else:
        tensor = as_tensor(value, variable.dtype)
        import tensorflow as tf  # only reached on TensorFlow: elsewhere variables are never pending

        with tf.init_scope():
            variable._initialize(tensor)
        del tensor
    del value  # the callback may replace the variable (quantization): hold no copy of its value
    callback = _ON_FILLED.get()
    if callback is not None:
        callback(variable)


@contextlib.contextmanager
def on_filled(callback):
    """Within it, `fill` calls `callback(variable)` after filling each variable
    (`backbones.quantize.quantizing_as_filled` quantizes its layer there).

    Example:
    >>> import keras, numpy as np
    >>> seen = []
    >>> v = keras.Variable(np.zeros(2, "float32"))
    >>> with on_filled(seen.append):
    ...     fill(v, np.ones(2, "float32"))
    >>> seen == [v], v.numpy().tolist()
    (True, [1.0, 1.0])
    """
    token = _ON_FILLED.set(callback)
    try:
        yield
    finally:
        _ON_FILLED.reset(token)


@contextlib.contextmanager
def deferred_variables():
    """Builds models inside it without allocating their variables.

    On leaving the block, nothing is allocated yet: fill each variable with
    `fill(variable, array)`, then call the yielded `finish()` to create
    whatever was not filled: from the value assigned to it inside the block
    when there was one (Keras's `quantize` assigns its new int8 kernel: it
    is adopted, not copied into a zero-initialised buffer), else with its
    initializer, as usual. Leaving the block through an error, or without
    `finish()`, still frees Keras of the pending variables. On backends other
    than TensorFlow it builds (and assigns) as usual.

    Example:
    >>> import keras, numpy as np
    >>> with deferred_variables() as finish:
    ...     layer = keras.layers.Dense(3)
    ...     layer.build((None, 2))
    >>> is_pending(layer.kernel)
    True
    >>> fill(layer.kernel, np.ones((2, 3), "float32"))
    >>> finish()
    >>> layer(np.ones((1, 2), "float32")).numpy().tolist()
    [[2.0, 2.0, 2.0]]
    """
    if global_state is None or keras.backend.backend() != "tensorflow":
        yield lambda: None
        return
    outer = global_state.get_global_attribute(_PENDING, []) or []
    global_state.set_global_attribute(_PENDING, [])
    pending = []
    scope = keras.StatelessScope(initialize_variables=False)  # records assignments instead of doing them

    def finish():
        for ref in pending:
            variable = ref()
            if variable is None or not is_pending(variable):
                continue
            assigned = scope.get_current_value(variable)
            if assigned is None:
                variable._deferred_initialize()
            else:
                fill(variable, assigned)
        pending.clear()
        scope.state_mapping.clear()

    try:
        with scope:
            yield finish
    finally:
        # Weak references: a variable replaced while loading (a kernel quantized
        # as soon as it is filled) must be freed then, not when finish() runs.
        pending.extend(weakref.ref(v) for v in global_state.get_global_attribute(_PENDING, []) or [])
        global_state.set_global_attribute(_PENDING, outer)
