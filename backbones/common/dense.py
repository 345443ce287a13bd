"""`Dense`: Keras's Dense whose LoRA forward is factorised.

Keras 3.15's float `Dense.call` with LoRA multiplies by the merged kernel
`W + s A B`: every step builds a full `(in, out)` kernel per adapted layer,
and backward computes that kernel's full `(in, out)` gradient before
reducing it to A and B, the same matmul as training W itself. Here the
adapted path is `x W + s (x A) B`: W is only read, and gradients reach A and
B through rank-r products. Everything else is Keras's: `enable_lora`, the
variable names `lora_kernel_a` / `lora_kernel_b`, `kernel` (merged, what
`save_weights` writes), serialization, and quantized calls (`int8` and the
others never reach `call`; Keras's `_int8_call` is already factorised).
"""

import keras
from keras import ops


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
    >>> layer.lora_kernel_b.assign(np.ones((2, 3)))
    >>> x = np.ones((1, 4), "float32")
    >>> bool(np.allclose(layer(x), x @ layer.kernel.numpy(), atol=1e-5))  # merged kernel, same output
    True
    """

    def call(self, inputs, training=None):
        if not self.lora_enabled:
            return super().call(inputs, training=training)
        a, b = ops.convert_to_tensor(self.lora_kernel_a), ops.convert_to_tensor(self.lora_kernel_b)
        x = ops.matmul(inputs, self._kernel)
        low_rank = ops.multiply(ops.matmul(ops.cast(inputs, a.dtype), a), self.lora_alpha / self.lora_rank)
        x = ops.add(x, ops.cast(ops.matmul(low_rank, b), x.dtype))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x
