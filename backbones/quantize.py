"""A quantized frozen base: int8 weights under LoRA (`Backbone.quantize`,
`Backbone.from_preset(..., quantize="int8")`).

Keras's own int8 quantization of `Dense` (every subclass too) and `Embedding`
layers: each kernel becomes an int8 variable plus a scale per output
channel (absmax), and LoRA on a quantized Dense runs factorised,
`x @ W_int8 / s + (x @ A) @ B * alpha / r`, with A and B float32.

Weight-only: the activations stay in the compute dtype (bfloat16 or
float32) and the int8 kernel is cast to it inside the matmul, as QLoRA does
on GPUs. Keras's default int8 config also quantizes activations (int8 x
int8 matmuls); on this CPU that measured 4-9x slower than the weight-only
form, and 2x the error (Gemma-2B-sized Dense 2048 -> 16384, batch 8 x 48,
bf16, LoRA r4, forward and backward: bf16 kernel 297 ms, int8 weights and
activations 1248 ms, int8 weights 156 ms; max relative error of the outputs
1.1% vs 0.64%).

Where the memory goes, and what keeps it down (all measured, BENCHMARKS.md
"int8 base"):

- Training. A dequantized kernel does not depend on the activations, so
  TensorFlow's executor ran every layer's int8 -> bfloat16 cast as soon as
  the step began, and all of them were alive at once: more memory than the
  bfloat16 model. Here (`int8_matmul`, `int8_tied_logits`, TensorFlow only)
  each cast waits for its layer's input (forward) or incoming gradient
  (backward) through a control dependency, and the backward scales the
  gradient rather than the kernel, so about one dequantized kernel is alive
  at a time.
- Quantizing. Keras's absmax runs in NumPy over the whole kernel (~4
  float copies of Gemma's 256000 x 2048 embedding); `ChunkedAbsMax` reads
  and quantizes a few MB of rows at a time.
- Loading. `from_preset(..., quantize="int8")` quantizes each layer as soon
  as its kernel is filled (`quantizing_as_filled`), so loading a bfloat16
  checkpoint as int8 never holds more than the int8 model plus one float layer.
"""

import contextlib
import functools
import gc

import keras

from backbones import variables
from backbones.errors import QuantizationError

MODES = ("int8",)
CHUNK_ELEMENTS = 1 << 20  # 1M weights (4 MB in float32) quantized at a time


def check_mode(mode):
    """Raises `QuantizationError` unless `mode` is a supported quantization mode."""
    if mode not in MODES:
        raise QuantizationError(
            f"quantize={mode!r} is not supported; the only mode is 'int8' (weight-only int8 "
            "for a frozen base under LoRA). Use quantize=null for no quantization."
        )


@keras.saving.register_keras_serializable(package="backbone_lab")
class ChunkedAbsMax(keras.quantizers.AbsMaxQuantizer):
    """Keras's `AbsMaxQuantizer` for 2-D weights, a chunk of rows at a time.

    Same scheme (`scale = 127 / (max|w| + eps)` along `axis`, stored in the
    weight's dtype; `q = clip(round(w * scale))`), with `w * scale` computed
    in float32: Keras 3.15's NumPy path multiplies in the weight's dtype, and
    in bfloat16 a product between 64 and 127 is rounded to a multiple of 0.5
    before it is rounded to an integer. Peak memory: the int8 result plus
    one chunk's float32 temporaries, where Keras's holds several float
    copies of the whole weight. Other ranks and backends: Keras's own.

    Example:
    >>> import numpy as np
    >>> q, scale = ChunkedAbsMax(axis=0)(np.array([[1.0, -0.5], [0.5, 2.0]], "float32"))
    >>> np.asarray(q).tolist(), np.asarray(scale).shape
    ([[127, -32], [63, 127]], (1, 2))
    """

    def __call__(self, x, axis=None, to_numpy=False):
        axis = self.axis if axis is None else axis
        axis = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
        if keras.backend.backend() != "tensorflow" or len(x.shape) != 2 or axis not in ((0,), (1,), (-1,)):
            return super().__call__(x, axis=axis, to_numpy=to_numpy)
        return _absmax_rows(x, axis == (0,), self.value_range, self.epsilon)


def _absmax_rows(x, per_column, value_range, epsilon):
    import tensorflow as tf

    x = x.value if isinstance(x, keras.Variable) else tf.convert_to_tensor(x)
    rows, cols = x.shape
    step = max(1, CHUNK_ELEMENTS // max(cols, 1))
    chunks = [(start, min(start + step, rows)) for start in range(0, rows, step)]

    def absmax(chunk, axis):  # max(max w, -min w): two reductions in the weight's dtype, exact, no temporaries
        top, bottom = (tf.reduce_max(chunk, axis, keepdims=True), tf.reduce_min(chunk, axis, keepdims=True))
        return tf.maximum(tf.cast(top, "float32"), -tf.cast(bottom, "float32"))

    def stored_scale(amax):  # rounded to the weight's dtype: the scale the layer keeps and divides by
        return tf.cast(value_range[1] / (amax + epsilon), x.dtype)

    scale = stored_scale(functools.reduce(tf.maximum, (absmax(x[a:b], 0) for a, b in chunks))) if per_column else None
    out, row_scales = variables.aligned_empty((rows, cols), "int8"), []
    for a, b in chunks:
        chunk = tf.cast(x[a:b], "float32")
        chunk_scale = scale if per_column else stored_scale(absmax(x[a:b], 1))
        q = tf.clip_by_value(tf.round(chunk * tf.cast(chunk_scale, "float32")), *value_range)
        out[a:b] = tf.cast(q, "int8").numpy()
        row_scales.append(chunk_scale)
    if not per_column:
        scale = tf.concat(row_scales, axis=0)
    return variables.as_tensor(out, "int8"), scale


def _int8_config(axis):
    # Weight-only: activation_quantizer=None keeps activations in the compute dtype.
    return keras.quantizers.Int8QuantizationConfig(weight_quantizer=ChunkedAbsMax(axis=axis),
                                                   activation_quantizer=None)


def _float_weight(layer):
    """The variable a quantizable layer's quantization replaces, or None for other layers."""
    if getattr(layer, "_is_quantized", False):
        return None
    if isinstance(layer, keras.layers.Dense):
        return layer._kernel
    if isinstance(layer, keras.layers.Embedding):
        return layer._embeddings
    return None


def quantize_layer(layer, mode="int8"):
    """Quantizes one built `Dense` or `Embedding` layer in place; returns
    whether it did (other layers, and quantized ones, are left alone).

    Example:
    >>> import keras
    >>> dense = keras.layers.Dense(4); dense.build((None, 8))
    >>> quantize_layer(dense), dense.kernel.dtype
    (True, 'int8')
    """
    check_mode(mode)
    if _float_weight(layer) is None:
        return False
    # type_check=False: Keras refuses subclasses by default; ours keep its int8 build and call.
    # Dense scales per output channel (axis 0 reduced), Embedding per row (Keras's choice).
    axis = 0 if isinstance(layer, keras.layers.Dense) else -1
    # Keras's quantize builds zero-initialised int8 variables and assigns the
    # int8 weights to them: built unallocated here, they adopt the weights
    # instead (no second int8 copy of the layer in flight).
    with variables.deferred_variables() as finish, _without_gc_collect():
        layer.quantize(mode, config=_int8_config(axis), type_check=False)
    finish()
    return True


@contextlib.contextmanager
def _without_gc_collect():
    # Keras's Layer.__delattr__ runs a full gc.collect() for each variable it
    # drops (for JAX device buffers): 0.34 s a layer here, 5.0 of the 6.6 s
    # of loading a 285M-parameter Gemma-shaped checkpoint as int8. The float
    # kernel is in no reference cycle: it is freed when dropped all the same
    # (tests/backbones/test_quantize.py checks it).
    collect = gc.collect
    gc.collect = lambda *args, **kwargs: 0
    try:
        yield
    finally:
        gc.collect = collect


def _check_dtype(backbone, mode):
    if backbone.compute_dtype == "float16":
        raise QuantizationError(
            f"quantize={mode!r} with dtype={backbone.dtype_policy.name!r}: Keras's int8 layers "
            "do not support float16 compute (the scales underflow). Use bfloat16 or float32.")


def quantize_backbone(backbone, mode="int8"):
    """Quantizes every Dense and Embedding layer of `backbone` not quantized yet, one at a time."""
    check_mode(mode)
    _check_dtype(backbone, mode)
    for layer in backbone._flatten_layers(include_self=False):
        quantize_layer(layer, mode)


@contextlib.contextmanager
def quantizing_as_filled(backbone, mode):
    """Within it, each Dense and Embedding of `backbone` (built unallocated,
    `variables.deferred_variables`) is quantized as soon as `variables.fill`
    gives its kernel a value: a loader then holds the int8 model plus one
    float layer, never the float model. `mode` None: nothing happens.
    Layers whose kernel is not filled inside are left to `quantize_backbone`.

    Example:
    >>> import keras, numpy as np
    >>> from backbones import variables
    >>> with variables.deferred_variables() as finish:
    ...     dense = keras.layers.Dense(2); dense.build((None, 3))
    >>> with quantizing_as_filled(dense, "int8"):  # any layer or model
    ...     variables.fill(dense.kernel, np.ones((3, 2), "float32"))
    >>> finish(); dense.kernel.dtype
    'int8'
    """
    if mode is None:
        yield
        return
    check_mode(mode)
    if isinstance(backbone, keras.Model):
        _check_dtype(backbone, mode)
    layers = [backbone, *backbone._flatten_layers(include_self=False)]
    # Keyed by id: a float kernel stays alive (its layer holds it) until it is quantized.
    owners = {id(weight): layer for layer in layers if (weight := _float_weight(layer)) is not None}

    def filled(variable):
        layer = owners.pop(id(variable), None)
        if layer is not None:
            quantize_layer(layer, mode)

    with variables.on_filled(filled):
        yield


# -- the int8 calls (TensorFlow) ------------------------------------------
def _matmul(x, w, transpose_b=False):
    """`x (..., k) @ w` as one 2-D matmul (oneDNN; `transpose_b` without a copy)."""
    import tensorflow as tf

    y = tf.matmul(tf.reshape(x, (-1, x.shape[-1])), w, transpose_b=transpose_b)
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], tf.shape(y)[-1:]], 0))


def int8_matmul(inputs, kernel, scale):
    """`inputs @ (kernel / scale)` for an int8 `kernel (k, n)` and per-column
    `scale (n,)`, with a gradient for `inputs` only (TensorFlow).

    The dequantized kernel is made when `inputs` (forward) or the incoming
    gradient (backward) exists, not when the step starts, and dropped after
    its matmul. The backward scales the gradient (`(g / s) @ kernel^T`), not
    the kernel: one cast of it, no second float copy.

    Example:
    >>> import numpy as np
    >>> y = int8_matmul(np.ones((1, 2), "float32"), np.array([[2, 4], [6, 8]], "int8"), np.array([2.0, 4.0], "float32"))
    >>> np.asarray(y).tolist()
    [[4.0, 3.0]]
    """
    import tensorflow as tf

    kernel, scale = tf.convert_to_tensor(kernel), tf.convert_to_tensor(scale)

    @tf.custom_gradient
    def matmul(x):
        with tf.control_dependencies([x]):
            w = tf.cast(kernel, x.dtype)
        y = _matmul(x, w) / tf.cast(scale, x.dtype)

        def grad(upstream):
            g = upstream / tf.cast(scale, upstream.dtype)
            with tf.control_dependencies([g]):
                w = tf.cast(kernel, upstream.dtype)
            return _matmul(g, w, transpose_b=True)

        return y, grad

    return matmul(tf.convert_to_tensor(inputs))


def int8_tied_logits(hidden_states, embeddings, scale):
    """`hidden_states @ (embeddings / scale)^T` for int8 `embeddings (V, d)`
    and per-row `scale (V,)`: tied logits, made like `int8_matmul` (one cast
    of the table when the hidden states exist, another in the backward)."""
    import tensorflow as tf

    embeddings, scale = tf.convert_to_tensor(embeddings), tf.convert_to_tensor(scale)

    @tf.custom_gradient
    def logits(h):
        with tf.control_dependencies([h]):
            e = tf.cast(embeddings, h.dtype)
        y = _matmul(h, e, transpose_b=True) * tf.cast(1.0 / scale, h.dtype)

        def grad(upstream):
            g = upstream * tf.cast(1.0 / scale, upstream.dtype)
            with tf.control_dependencies([g]):
                e = tf.cast(embeddings, upstream.dtype)
            return _matmul(g, e)

        return y, grad

    return logits(tf.convert_to_tensor(hidden_states))
