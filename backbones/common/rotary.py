"""Rotary position embeddings (RoPE), with linear and Llama 3 frequency scaling."""

import math

import keras
import numpy as np
from keras import ops

ROPE_SCALING_TYPES = (None, "linear", "llama3")


def inverse_frequencies(head_dim, theta=10000.0, scaling_type=None, factor=1.0,
                        low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192):
    """The `head_dim / 2` rotation frequencies, float32.

    `theta ** (-2i / head_dim)`; "linear" divides them by `factor`; "llama3"
    divides the low frequencies (wavelength above
    `original_max_position_embeddings / low_freq_factor`) by `factor`, keeps
    the high ones (wavelength below `.../ high_freq_factor`) and interpolates
    smoothly in between (Llama 3.1's long-context recipe).

    Example:
    >>> inverse_frequencies(4, theta=100.0).tolist()
    [1.0, 0.10000000149011612]
    """
    if scaling_type not in ROPE_SCALING_TYPES:
        raise ValueError(f"rope_scaling_type={scaling_type!r}; supported: {ROPE_SCALING_TYPES}.")
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / np.float32(theta) ** exponents).astype(np.float32)
    if scaling_type == "linear":
        inv_freq = inv_freq / np.float32(factor)
    elif scaling_type == "llama3":
        wavelength = np.float32(2 * math.pi) / inv_freq
        low_freq_wavelength = original_max_position_embeddings / low_freq_factor
        high_freq_wavelength = original_max_position_embeddings / high_freq_factor
        smooth = (original_max_position_embeddings / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
        scaled = np.where(wavelength > low_freq_wavelength, inv_freq / factor, inv_freq)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelength >= high_freq_wavelength) & (wavelength <= low_freq_wavelength)
        inv_freq = np.where(medium, smoothed, scaled)
    return inv_freq.astype(np.float32)


class RotaryEmbedding(keras.layers.Layer):
    """The cosines and sines of positions `start_index .. start_index + seq_len`.

    Called on `(batch, seq_len)` token ids, returns `(cos, sin)`, each
    `(seq_len, head_dim)` float32 (the half-size frequencies repeated twice,
    the "rotate half" layout of Llama/Gemma checkpoints). No weights.
    Args as in `inverse_frequencies`.

    Example:
    >>> import numpy as np
    >>> cos, sin = RotaryEmbedding(head_dim=8)(np.zeros((1, 3), "int32"), start_index=2)
    >>> tuple(cos.shape), [round(float(s), 4) for s in sin[:, 0]]  # sin of positions 2, 3, 4
    ((3, 8), [0.9093, 0.1411, -0.7568])
    """

    def __init__(self, head_dim, theta=10000.0, scaling_type=None, factor=1.0, low_freq_factor=1.0,
                 high_freq_factor=4.0, original_max_position_embeddings=8192, **kwargs):
        super().__init__(**kwargs)
        self.head_dim, self.theta, self.scaling_type, self.factor = head_dim, theta, scaling_type, factor
        self.low_freq_factor, self.high_freq_factor = low_freq_factor, high_freq_factor
        self.original_max_position_embeddings = original_max_position_embeddings
        self.inverse_frequencies = inverse_frequencies(
            head_dim, theta, scaling_type, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)
        self.built = True

    def call(self, token_ids, start_index=0, position_ids=None):
        if position_ids is None:
            positions = ops.cast(ops.arange(ops.shape(token_ids)[1]) + start_index, "float32")
        else:  # packed rows: `(batch, seq)` positions restarting per example, angles `(batch, seq, head_dim)`
            positions = ops.cast(position_ids, "float32")
        freqs = positions[..., None] * ops.convert_to_tensor(self.inverse_frequencies)
        angles = ops.concatenate([freqs, freqs], axis=-1)
        return ops.cos(angles), ops.sin(angles)

    def compute_output_spec(self, token_ids, start_index=0, position_ids=None):
        shape = (token_ids.shape[1], self.head_dim)
        if position_ids is not None:
            shape = tuple(position_ids.shape) + (self.head_dim,)
        return keras.KerasTensor(shape, "float32"), keras.KerasTensor(shape, "float32")  # two distinct tensors

    def get_config(self):
        return {**super().get_config(), "head_dim": self.head_dim, "theta": self.theta,
                "scaling_type": self.scaling_type, "factor": self.factor,
                "low_freq_factor": self.low_freq_factor, "high_freq_factor": self.high_freq_factor,
                "original_max_position_embeddings": self.original_max_position_embeddings}


def apply_rotary(x, cos, sin):
    """Rotates `x` `(batch, seq, heads, head_dim)` by `(seq, head_dim)` angles,
    or by `(batch, seq, head_dim)` ones (packed rows, positions per token)."""
    per_row = len(cos.shape) == 3  # static: the unpacked graph is unchanged
    cos = ops.cast(cos, x.dtype)[:, :, None, :] if per_row else ops.cast(cos, x.dtype)[None, :, None, :]
    sin = ops.cast(sin, x.dtype)[:, :, None, :] if per_row else ops.cast(sin, x.dtype)[None, :, None, :]
    first, second = ops.split(x, 2, axis=-1)
    return x * cos + ops.concatenate([-second, first], axis=-1) * sin
