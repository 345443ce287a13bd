"""Grouped-query self-attention with rotary positions and a key/value cache."""

import math

import keras
from keras import ops

from backbones.backbone import normal_initializer
from backbones.common.dense import Dense
from backbones.common.rotary import apply_rotary


def decoder_attention_mask(padding_mask, query_length, start_index=0, sliding_window=None):
    """Boolean `(batch, query, key)` mask: key j is visible to query i (at
    absolute position p = start_index + i) if j <= p, j is not padding and,
    with a sliding window, p - j < sliding_window.

    Example:
    >>> import numpy as np
    >>> m = decoder_attention_mask(np.ones((1, 4), "int32"), 4, sliding_window=2)
    >>> np.asarray(m[0]).astype(int).tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    key_length = ops.shape(padding_mask)[1]
    query_pos = ops.arange(query_length)[:, None] + start_index
    key_pos = ops.arange(key_length)[None, :]
    visible = key_pos <= query_pos
    if sliding_window is not None:
        visible = ops.logical_and(visible, query_pos - key_pos < sliding_window)
    return ops.logical_and(visible[None], ops.cast(padding_mask, "bool")[:, None, :])


def packed_attention_mask(segment_ids, sliding_window=None):
    """The mask and positions of packed rows: several examples per row.

    `segment_ids` `(batch, seq)` int numbers each row's examples 1, 2, ...
    (0 is padding). Returns `(mask, positions)`: the boolean
    `(batch, query, key)` mask where key j is visible to query i if both are
    in the same example and j <= i (and, with a sliding window,
    i - j < sliding_window), and the int32 `(batch, seq)` position of each
    token inside its example (0 at each example's first token; 0 on padding).
    Positions are the row sums of the causal same-example mask, minus one: no
    cumulative op, and correct for any example lengths. Unpacked rows
    (segment ids = padding mask) give `decoder_attention_mask` and 0, 1, 2, ...

    Example:
    >>> import numpy as np
    >>> mask, positions = packed_attention_mask(np.array([[1, 1, 2, 2, 2, 0]]))
    >>> np.asarray(positions).tolist()
    [[0, 1, 0, 1, 2, 0]]
    >>> np.asarray(mask[0, 3]).astype(int).tolist()  # the second token of example 2
    [0, 0, 1, 1, 0, 0]
    """
    segment_ids = ops.convert_to_tensor(segment_ids, "int32")
    index = ops.arange(ops.shape(segment_ids)[1])
    causal = index[None, :] <= index[:, None]
    same = ops.equal(segment_ids[:, :, None], segment_ids[:, None, :])
    mask = ops.logical_and(ops.logical_and(causal[None], same), ops.not_equal(segment_ids, 0)[:, None, :])
    positions = ops.maximum(ops.sum(ops.cast(mask, "int32"), axis=-1) - 1, 0)
    if sliding_window is not None:
        # Inside one example, index distance is position distance.
        mask = ops.logical_and(mask, (index[:, None] - index[None, :] < sliding_window)[None])
    return mask, positions


class DecoderMask(keras.layers.Layer):
    """`decoder_attention_mask` of a full sequence, as a layer for functional graphs."""

    def __init__(self, sliding_window=None, **kwargs):
        super().__init__(**kwargs)
        self.sliding_window = sliding_window

    def call(self, padding_mask):
        return decoder_attention_mask(padding_mask, ops.shape(padding_mask)[1], sliding_window=self.sliding_window)

    def compute_output_spec(self, padding_mask):
        return keras.KerasTensor((padding_mask.shape[0], padding_mask.shape[1], padding_mask.shape[1]), "bool")

    def get_config(self):
        return {**super().get_config(), "sliding_window": self.sliding_window}


class GroupedQueryAttention(keras.layers.Layer):
    """Causal attention where groups of query heads share a key/value head.

    `num_key_value_heads == num_query_heads` is multi-head attention, 1 is
    multi-query attention (Gemma 2B). Query head h reads key/value head
    `h // (num_query_heads // num_key_value_heads)`, as in Llama checkpoints.
    The projections are Dense layers `query`, `key`, `value`,
    `attention_output` with 2-D kernels (hidden -> heads * head_dim), so
    LoRA matrices have PEFT's shapes. Scores and softmax run in float32.

    The cache is `(batch, 2, max_length, num_key_value_heads, head_dim)` and
    holds rotated keys; with it, the new keys and values are written at
    `cache_index` and attention reads the whole cache.

    Args:
        num_query_heads: int. Query heads.
        num_key_value_heads: int. Key/value heads; divides num_query_heads.
        head_dim: int. Width of each head (independent of the hidden width).
        hidden_dim: int. Width of the input and output.
        attention_bias: bool. Biases on the query, key and value projections.
        attention_output_bias: bool. Bias on the output projection.
        dropout: float. Dropout on the attention probabilities.
    """

    def __init__(self, num_query_heads, num_key_value_heads, head_dim, hidden_dim,
                 attention_bias=False, attention_output_bias=False, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if num_query_heads % num_key_value_heads:
            raise ValueError(
                f"num_query_heads={num_query_heads} is not a multiple of "
                f"num_key_value_heads={num_key_value_heads}.")
        self.num_query_heads, self.num_key_value_heads = num_query_heads, num_key_value_heads
        self.head_dim, self.hidden_dim, self.dropout = head_dim, hidden_dim, dropout
        self.attention_bias, self.attention_output_bias = attention_bias, attention_output_bias
        self.groups = num_query_heads // num_key_value_heads
        dense = lambda units, bias, name: Dense(  # noqa: E731
            units, use_bias=bias, kernel_initializer=normal_initializer(0.02),
            dtype=self.dtype_policy, name=name)
        self.query = dense(num_query_heads * head_dim, attention_bias, "query")
        self.key = dense(num_key_value_heads * head_dim, attention_bias, "key")
        self.value = dense(num_key_value_heads * head_dim, attention_bias, "value")
        self.attention_output = dense(hidden_dim, attention_output_bias, "attention_output")
        self.probs_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="probs_dropout") if dropout else None

    def build(self, input_shape):
        for layer in (self.query, self.key, self.value):
            layer.build(input_shape)
        self.attention_output.build(input_shape[:-1] + (self.num_query_heads * self.head_dim,))

    def call(self, x, rotary, attention_mask, cache=None, cache_index=None, training=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        cos, sin = rotary
        q = apply_rotary(ops.reshape(self.query(x), (batch, length, self.num_query_heads, self.head_dim)), cos, sin)
        k = apply_rotary(ops.reshape(self.key(x), (batch, length, self.num_key_value_heads, self.head_dim)), cos, sin)
        v = ops.reshape(self.value(x), (batch, length, self.num_key_value_heads, self.head_dim))
        if cache is not None:
            start = (0, cache_index, 0, 0)
            k = ops.slice_update(cache[:, 0], start, k)
            v = ops.slice_update(cache[:, 1], start, v)
            cache = ops.stack((k, v), axis=1)
        # Query heads grouped by the key/value head they share: no repeated keys.
        q = ops.reshape(q, (batch, length, self.num_key_value_heads, self.groups, self.head_dim))
        scores = ops.einsum("bqkgd,btkd->bkgqt", ops.cast(q, "float32"), ops.cast(k, "float32"))
        scores = scores * (1.0 / math.sqrt(self.head_dim))
        # A large negative, not -inf: fully masked rows (padding) stay finite.
        scores = ops.where(attention_mask[:, None, None], scores, -1e9)
        probs = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        if self.probs_dropout is not None:
            probs = self.probs_dropout(probs, training=training)
        out = ops.einsum("bkgqt,btkd->bqkgd", probs, v)
        out = self.attention_output(ops.reshape(out, (batch, length, self.num_query_heads * self.head_dim)))
        return out if cache is None else (out, cache)

    def get_config(self):
        return {**super().get_config(), "num_query_heads": self.num_query_heads,
                "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
                "hidden_dim": self.hidden_dim, "attention_bias": self.attention_bias,
                "attention_output_bias": self.attention_output_bias, "dropout": self.dropout}
