"""Root-mean-square layer normalisation (Llama, Gemma)."""

import keras
from keras import ops


class RMSNormalization(keras.layers.Layer):
    """`x / sqrt(mean(x^2) + epsilon)`, computed in float32, times a learned scale.

    The two conventions differ in where the scale is applied, which matters
    in half precision, so both follow their reference implementation:
    - `unit_offset=False` (Llama): the normalised x is cast back to the input
      dtype, then multiplied by `scale` (initialised to ones).
    - `unit_offset=True` (Gemma): multiplied by `1 + scale` (scale initialised
      to zeros) in float32, then cast back.

    Args:
        epsilon: float. Added to the mean square.
        unit_offset: bool. Gemma's `1 + scale` convention.

    Example:
    >>> import numpy as np
    >>> RMSNormalization()(np.array([[3.0, -3.0]])).numpy().round(4).tolist()
    [[1.0, -1.0]]
    """

    def __init__(self, epsilon=1e-6, unit_offset=False, **kwargs):
        super().__init__(**kwargs)
        self.epsilon, self.unit_offset = epsilon, unit_offset

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(input_shape[-1],),
            initializer="zeros" if self.unit_offset else "ones",
        )

    def call(self, x):
        x32 = ops.cast(x, "float32")
        x32 = x32 * ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + self.epsilon)
        if self.unit_offset:
            return ops.cast(x32 * (1.0 + ops.cast(self.scale, "float32")), x.dtype)
        return ops.cast(x32, x.dtype) * ops.cast(self.scale, x.dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "unit_offset": self.unit_offset}
