"""A quantized frozen base: int8 weights under LoRA (`Backbone.quantize`).

Keras's own int8 quantization of `Dense` (every subclass too) and `Embedding`
layers: each kernel becomes an int8 variable plus a float32 scale per output
channel (absmax), and LoRA on a quantized Dense runs factorised,
`x @ W_int8 / s + (x @ A) @ B * alpha / r`, with A and B float32 (Keras's
`_int8_call`).

Weight-only: the activations stay in the compute dtype (bfloat16 or
float32) and the int8 kernel is cast to it inside the matmul, as QLoRA does
on GPUs. Keras's default int8 config also quantizes activations (int8 x
int8 matmuls); on this CPU that measured 4-9x slower than the weight-only
form, and 2x the error (Gemma-2B-sized Dense 2048 -> 16384, batch 8 x 48,
bf16, LoRA r4, forward and backward: bf16 kernel 297 ms, int8 weights and
activations 1248 ms, int8 weights 156 ms; max relative error of the outputs
1.1% vs 0.64%).

Memory: a layer is quantized on its own (`quantize_layer`): its float kernel
is read, its int8 copy and scale written, and the float variable dropped
before the next layer, so quantizing never holds more than one layer's two
copies at once. A loader can call `quantize_layer` on each layer as soon as
its weights are in place.

Measured at Gemma-2B shape (train.py, LoRA r4, debug=fast, no clipping):
peak RSS 15.0 GB with the int8 base against 13.1 GB in bfloat16, same tokens/s
(~40), 2.5 GB less disk (the epoch checkpoint). Not yet a saving: suspected,
not yet confirmed, is TensorFlow's executor running every layer's int8 ->
bfloat16 cast (no data dependence on the activations) at the start of the
step, so that all dequantized kernels are alive at once; and numpy's absmax
of the 256000 x 2048 embedding holds ~4 copies of it while it is quantized.
"""

import keras

from backbones.errors import QuantizationError

MODES = ("int8",)


def check_mode(mode):
    """Raises `QuantizationError` unless `mode` is a supported quantization mode."""
    if mode not in MODES:
        raise QuantizationError(
            f"quantize={mode!r} is not supported; the only mode is 'int8' (weight-only int8 "
            "for a frozen base under LoRA). Use quantize=null for no quantization."
        )


def _weight_only_int8():
    return keras.quantizers.Int8QuantizationConfig(
        weight_quantizer=keras.quantizers.AbsMaxQuantizer(axis=0), activation_quantizer=None)


def quantize_layer(layer, mode="int8"):
    """Quantizes one built `Dense` or `Embedding` layer in place; returns
    whether it did (other layers are left alone).

    Example:
    >>> import keras
    >>> dense = keras.layers.Dense(4); dense.build((None, 8))
    >>> quantize_layer(dense), dense.kernel.dtype
    (True, 'int8')
    """
    check_mode(mode)
    if getattr(layer, "_is_quantized", False):
        return False
    if isinstance(layer, keras.layers.Dense):
        # type_check=False: Keras refuses subclasses of Dense by default; ours
        # keep Dense's int8 build and call.
        layer.quantize(mode, config=_weight_only_int8(), type_check=False)
    elif isinstance(layer, keras.layers.Embedding):
        layer.quantize(mode, type_check=False)  # a lookup: no activations to quantize
    else:
        return False
    return True


def quantize_backbone(backbone, mode="int8"):
    """Quantizes every Dense and Embedding layer of `backbone`, one at a time."""
    check_mode(mode)
    if backbone.compute_dtype == "float16":
        raise QuantizationError(
            f"quantize={mode!r} with dtype={backbone.dtype_policy.name!r}: Keras's int8 layers "
            "do not support float16 compute (the scales underflow). Use bfloat16 or float32.")
    for layer in backbone._flatten_layers(include_self=False):
        quantize_layer(layer, mode)
