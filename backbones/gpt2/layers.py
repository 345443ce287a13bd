"""GPT-2 layers: learned positions, causal self-attention, pre-norm decoder block."""

import math

import keras
from keras import ops

from backbones.backbone import normal_initializer
from backbones.common.dense import Dense


class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions: returns the embeddings of positions
    `start_index .. start_index + seq_len` for a `(batch, seq_len)` input
    (shape `(1, seq_len, hidden)`), or of `position_ids` `(batch, seq_len)`."""

    def __init__(self, sequence_length, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length, self.hidden_dim = sequence_length, hidden_dim

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.sequence_length, self.hidden_dim),
            initializer=normal_initializer(0.02),
        )

    def call(self, token_ids, start_index=0, position_ids=None):
        if position_ids is not None:  # packed rows: `(batch, seq)` positions restarting per example
            return ops.take(self.embeddings, position_ids, axis=0)
        length = ops.shape(token_ids)[1]
        return ops.expand_dims(ops.slice(self.embeddings, (start_index, 0), (length, self.hidden_dim)), 0)

    def compute_output_shape(self, input_shape):
        return (1, input_shape[1], self.hidden_dim)

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length, "hidden_dim": self.hidden_dim}


def causal_attention_mask(padding_mask, query_length, start_index=0):
    """Boolean `(batch, query, key)` mask: key j is visible to query i (at
    absolute position start_index + i) if j <= start_index + i and j is not padding."""
    key_length = ops.shape(padding_mask)[1]
    query_pos = ops.arange(query_length)[:, None] + start_index
    causal = ops.arange(key_length)[None, :] <= query_pos
    return ops.logical_and(causal[None], ops.cast(padding_mask, "bool")[:, None, :])


class CausalMask(keras.layers.Layer):
    """`causal_attention_mask` of a full sequence, as a layer for functional graphs."""

    def call(self, padding_mask):
        return causal_attention_mask(padding_mask, ops.shape(padding_mask)[1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[1])


class CausalSelfAttention(keras.layers.Layer):
    """Multi-head attention with separate `query`/`key`/`value` Dense
    projections (hidden -> heads * head_dim, so LoRA matrices are PEFT-shaped)
    and an optional key/value cache for incremental decoding.

    The cache is `(batch, 2, max_length, heads, head_dim)`; with it, the new
    keys and values are written at `cache_index` and attention reads the
    whole cache.

    Kept simple on purpose: training under XLA, one fused q/k/v matmul and
    `keras.ops.dot_product_attention` measured within noise of this form
    (-3% to +3%, BENCHMARKS.md). The projections are the shared
    `backbones.common.dense.Dense` (LoRA as `x W + s (x A) B`).
    """

    def __init__(self, num_heads, hidden_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.hidden_dim, self.dropout = num_heads, hidden_dim, dropout
        self.head_dim = hidden_dim // num_heads
        dense = lambda name: Dense(  # noqa: E731
            hidden_dim, kernel_initializer=normal_initializer(0.02),
            dtype=self.dtype_policy, name=name,
        )
        self.query, self.key, self.value = dense("query"), dense("key"), dense("value")
        self.attention_output = dense("attention_output")
        self.probs_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy) if dropout else None

    def build(self, input_shape):
        for layer in (self.query, self.key, self.value):
            layer.build(input_shape)
        self.attention_output.build(input_shape[:-1] + (self.hidden_dim,))

    def _heads(self, x):
        return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.num_heads, self.head_dim))

    def call(self, x, attention_mask, cache=None, cache_index=None, training=None):
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        if cache is not None:
            start = (0, cache_index, 0, 0)
            k = ops.slice_update(cache[:, 0], start, k)
            v = ops.slice_update(cache[:, 1], start, v)
            cache = ops.stack((k, v), axis=1)
        # Scores and softmax in float32 whatever the compute dtype.
        scores = ops.einsum("bqhd,bkhd->bhqk", ops.cast(q, "float32"), ops.cast(k, "float32"))
        scores = scores / math.sqrt(self.head_dim)
        scores = ops.where(attention_mask[:, None], scores, -1e9)
        probs = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        if self.probs_dropout is not None:
            probs = self.probs_dropout(probs, training=training)
        out = ops.einsum("bhqk,bkhd->bqhd", probs, v)
        out = ops.reshape(out, (ops.shape(x)[0], ops.shape(x)[1], self.hidden_dim))
        out = self.attention_output(out)
        return out if cache is None else (out, cache)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim, "dropout": self.dropout}


class GPT2Block(keras.layers.Layer):
    """Pre-norm decoder block: x + attn(ln(x)), then x + mlp(ln(x)), GELU (tanh)."""

    def __init__(self, num_heads, hidden_dim, intermediate_dim, dropout=0.0,
                 layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.hidden_dim, self.intermediate_dim = num_heads, hidden_dim, intermediate_dim
        self.dropout, self.layer_norm_epsilon = dropout, layer_norm_epsilon
        policy = self.dtype_policy
        norm = lambda name: keras.layers.LayerNormalization(  # noqa: E731
            epsilon=layer_norm_epsilon, dtype=policy, name=name)
        init = normal_initializer(0.02)
        self.attention_norm = norm("attention_norm")
        self.self_attention = CausalSelfAttention(num_heads, hidden_dim, dropout, dtype=policy, name="self_attention")
        self.ffn_norm = norm("ffn_norm")
        self.ffn_intermediate = Dense(intermediate_dim, kernel_initializer=init, dtype=policy, name="ffn_intermediate")
        self.ffn_output = Dense(hidden_dim, kernel_initializer=init, dtype=policy, name="ffn_output")
        # Dropout at rate 0 is skipped, not applied as a no-op op in the graph.
        self.residual_dropout = keras.layers.Dropout(dropout, dtype=policy) if dropout else None

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.self_attention.build(input_shape)
        self.ffn_norm.build(input_shape)
        self.ffn_intermediate.build(input_shape)
        self.ffn_output.build(input_shape[:-1] + (self.intermediate_dim,))

    def _drop(self, x, training):
        return x if self.residual_dropout is None else self.residual_dropout(x, training=training)

    def call(self, x, attention_mask, cache=None, cache_index=None, training=None):
        attended = self.self_attention(
            self.attention_norm(x), attention_mask=attention_mask, cache=cache, cache_index=cache_index, training=training)
        if cache is not None:
            attended, cache = attended
        x = x + self._drop(attended, training)
        h = self.ffn_intermediate(self.ffn_norm(x))
        h = self.ffn_output(keras.activations.gelu(h, approximate=True))
        x = x + self._drop(h, training)
        return x if cache is None else (x, cache)

    def compute_output_shape(self, input_shape):
        # Declared, so that building the functional graph does not trace `call`
        # (Keras traces layers without it): 1.5 s of a 12-layer from_preset.
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim, "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon}
