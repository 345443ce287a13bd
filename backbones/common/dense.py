"""`Dense`: Keras's Dense whose LoRA forward is factorised.

Keras 3.15's float `Dense.call` with LoRA multiplies by the merged kernel
`W + s A B`: every step builds a full `(in, out)` kernel per adapted layer,
and backward computes that kernel's full `(in, out)` gradient before
reducing it to A and B, the same matmul as training W itself. Here the
adapted path is `x W + s (x A) B`: W is only read, and gradients reach A and
B through rank-r products. Everything else is Keras's: `enable_lora`, the
variable names `lora_kernel_a` / `lora_kernel_b`, `kernel` (merged, what
`save_weights` writes), serialization, `quantize` (with its refusal of
subclasses lifted) and the int8 layer's variables. The int8 call is Keras's
math with the dequantized kernel made only when the layer's input exists
(`quantize.int8_matmul`, TensorFlow): Keras's own call dequantized every
layer's kernel at the start of each step. Every projection of every family
is this class, so a quantized backbone has no Keras int8 call left.

What it bought (scripts/bench_lora_forward.py: Gemma-2B widths, 2 layers,
bf16, LoRA r4 on every linear layer, batch 8 x 48, no XLA, two A/B rounds):
step 1.82 / 0.96 s -> 0.95 / 0.53 s (1.8-1.9x), peak RSS while training
4.13 -> 3.87 GB (0.13 GB a layer: the merged kernels). On query/value only,
within noise (their kernel gradients are ~2% of a Gemma step's FLOPs).
"""

import keras
from keras import ops

from backbones.quantize import int8_matmul


@keras.saving.register_keras_serializable(package="backbone_lab")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` computing LoRA as `x W + s (x A) B`.

    The low-rank branch runs in the LoRA matrices' dtype (float32 under a
    bfloat16 / float16 policy, as PEFT runs its float32 adapters): it is
    rank-r, so cheap at any precision, and float32 keeps the adapter's small
    contribution from rounding away before it is added. Under a mixed policy
    Keras autocasts A and B to the compute dtype, like every other weight.

    Example:
    >>> import numpy as np
    >>> layer = Dense(3, use_bias=False); layer.build((None, 4)); layer.enable_lora(2)
    >>> _ = layer.lora_kernel_b.assign(np.ones((2, 3)))
    >>> x = np.ones((1, 4), "float32")
    >>> bool(np.allclose(layer(x), x @ layer.kernel.numpy(), atol=1e-5))  # merged kernel, same output
    True
    """

    def call(self, inputs, training=None):
        if not self.lora_enabled:
            return super().call(inputs, training=training)
        return self._lora_bias_activation(inputs, ops.matmul(inputs, self._kernel))

    def _int8_call(self, inputs, training=None):
        # Keras's int8 call casts the int8 kernel with no dependence on the
        # inputs: TensorFlow's executor then dequantizes every layer's kernel
        # when the step starts and keeps them all alive (more memory than the
        # bfloat16 model). quantize.int8_matmul ties each cast to the layer's input.
        if keras.backend.backend() != "tensorflow" or self.inputs_quantizer is not None:
            return super()._int8_call(inputs, training=training)
        x = int8_matmul(inputs, self._kernel, self.kernel_scale)
        if not self.lora_enabled:
            return self._bias_activation(x)
        return self._lora_bias_activation(inputs, x)

    def _lora_bias_activation(self, inputs, x):
        a, b = ops.convert_to_tensor(self.lora_kernel_a), ops.convert_to_tensor(self.lora_kernel_b)
        low_rank = ops.multiply(ops.matmul(ops.cast(inputs, a.dtype), a), self.lora_alpha / self.lora_rank)
        return self._bias_activation(ops.add(x, ops.cast(ops.matmul(low_rank, b), x.dtype)))

    def _bias_activation(self, x):
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def quantize(self, mode=None, type_check=True, config=None):
        # Keras's Dense.quantize refuses subclasses (a subclass may change the
        # math quantization replaces), and `Model.quantize` then skips the
        # layer with a warning. Ours changes only the float LoRA path, which a
        # quantized layer never takes, so Keras's quantization applies as is.
        super().quantize(mode, type_check=False, config=config)
