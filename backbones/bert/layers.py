"""BERT layers: bidirectional self-attention and the post-norm encoder block."""

import math

import keras
from keras import ops

from backbones.initializers import normal_initializer
from backbones.common.dense import Dense


def _dense(units, name, dtype, activation=None):
    # BERT initialises every projection with N(0, 0.02) (initializer_range).
    return Dense(units, activation=activation, name=name, dtype=dtype,
                              kernel_initializer=normal_initializer(0.02))


class BertSelfAttention(keras.layers.Layer):
    """Bidirectional multi-head attention over the non-padding keys.

    `query`/`key`/`value`/`attention_output` are Dense layers with 2-D kernels
    (hidden -> heads * head_dim), so LoRA matrices have PEFT's shapes.
    Scores and softmax are computed in float32 whatever the compute dtype.
    """

    def __init__(self, num_heads, hidden_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}.")
        self.num_heads, self.hidden_dim, self.dropout = num_heads, hidden_dim, dropout
        self.head_dim = hidden_dim // num_heads
        policy = self.dtype_policy
        self.query, self.key, self.value = (_dense(hidden_dim, n, policy) for n in ("query", "key", "value"))
        self.attention_output = _dense(hidden_dim, "attention_output", policy)
        self.probs_dropout = (keras.layers.Dropout(dropout, dtype=policy, name="probs_dropout")
                              if dropout else None)

    def build(self, input_shape):
        for layer in (self.query, self.key, self.value, self.attention_output):
            layer.build(input_shape)

    def _heads(self, x):
        return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.num_heads, self.head_dim))

    def call(self, x, padding_mask, training=None):
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = ops.einsum("bqhd,bkhd->bhqk", ops.cast(q, "float32"), ops.cast(k, "float32"))
        scores = scores / math.sqrt(self.head_dim)
        visible = ops.cast(padding_mask, "bool")[:, None, None, :]  # every query sees every real key
        scores = ops.where(visible, scores, -1e9)
        probs = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        if self.probs_dropout is not None:
            probs = self.probs_dropout(probs, training=training)
        out = ops.einsum("bhqk,bkhd->bqhd", probs, v)
        out = ops.reshape(out, (ops.shape(x)[0], ops.shape(x)[1], self.hidden_dim))
        return self.attention_output(out)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim, "dropout": self.dropout}


# Feed-forward activations: BERT's exact (erf) GELU, as in the original release
# and transformers' `hidden_act="gelu"`, or the tanh approximation keras-hub's
# BertBackbone uses.
ACTIVATIONS = {"gelu": False, "gelu_approximate": True}  # name -> gelu(approximate=...)


class BertBlock(keras.layers.Layer):
    """Post-norm encoder block: x = ln(x + attn(x)), then x = ln(x + ffn(x)),
    with a GELU (`activation`: `"gelu"`, exact, or `"gelu_approximate"`, tanh)."""

    def __init__(self, num_heads, hidden_dim, intermediate_dim, dropout=0.0,
                 layer_norm_epsilon=1e-12, activation="gelu", **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; use one of {sorted(ACTIVATIONS)}.")
        self.activation = activation
        self.num_heads, self.hidden_dim, self.intermediate_dim = num_heads, hidden_dim, intermediate_dim
        self.dropout, self.layer_norm_epsilon = dropout, layer_norm_epsilon
        policy = self.dtype_policy
        norm = lambda name: keras.layers.LayerNormalization(  # noqa: E731
            epsilon=layer_norm_epsilon, dtype=policy, name=name)
        self.self_attention = BertSelfAttention(num_heads, hidden_dim, dropout, dtype=policy, name="self_attention")
        self.attention_norm = norm("attention_norm")
        self.ffn_intermediate = _dense(intermediate_dim, "ffn_intermediate", policy)
        self.ffn_output = _dense(hidden_dim, "ffn_output", policy)
        self.ffn_norm = norm("ffn_norm")
        # Dropout at rate 0 is skipped, not applied as a no-op op in the graph.
        self.residual_dropout = (keras.layers.Dropout(dropout, dtype=policy, name="residual_dropout")
                                 if dropout else None)

    def build(self, input_shape):
        self.self_attention.build(input_shape)
        self.attention_norm.build(input_shape)
        self.ffn_intermediate.build(input_shape)
        self.ffn_output.build(input_shape[:-1] + (self.intermediate_dim,))
        self.ffn_norm.build(input_shape)

    def _drop(self, x, training):
        return x if self.residual_dropout is None else self.residual_dropout(x, training=training)

    def call(self, x, padding_mask, training=None):
        attended = self.self_attention(x, padding_mask=padding_mask, training=training)
        x = self.attention_norm(x + self._drop(attended, training))
        h = keras.activations.gelu(self.ffn_intermediate(x), approximate=ACTIVATIONS[self.activation])
        return self.ffn_norm(x + self._drop(self.ffn_output(h), training))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim, "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon, "activation": self.activation}
