"""The pre-norm decoder block of Llama and Gemma: RMS norm, grouped-query
attention with rotary positions, RMS norm, gated feed-forward."""

import keras
from keras import ops

from backbones.backbone import normal_initializer
from backbones.common.dense import Dense
from backbones.common.attention import GroupedQueryAttention, decoder_attention_mask, packed_attention_mask
from backbones.common.rms_norm import RMSNormalization

# The LoRA target names of this block's layers: `common.facts.DECODER_LORA_TARGETS`.

# The gate's activation: SwiGLU (Llama) or GeGLU with tanh GELU (Gemma).
ACTIVATIONS = {
    "silu": ops.silu,
    "gelu_tanh": lambda x: ops.gelu(x, approximate=True),
}


class GatedDecoderBlock(keras.layers.Layer):
    """`x + attn(norm(x))`, then `x + ffn_output(act(ffn_gate(h)) * ffn_intermediate(h))`
    with `h = norm(x)`.

    Args:
        hidden_dim: int. Width of the residual stream.
        intermediate_dim: int. Width of the gate and up projections.
        num_query_heads, num_key_value_heads, head_dim: int. See `GroupedQueryAttention`.
        activation: str. `"silu"` (SwiGLU) or `"gelu_tanh"` (GeGLU).
        layer_norm_epsilon: float. Epsilon of the RMS norms.
        norm_unit_offset: bool. Gemma's `1 + scale` RMS norm.
        attention_bias, attention_output_bias: bool. Projection biases.
        dropout: float. Dropout on attention probabilities.
    """

    def __init__(self, hidden_dim, intermediate_dim, num_query_heads, num_key_value_heads, head_dim,
                 activation="silu", layer_norm_epsilon=1e-6, norm_unit_offset=False,
                 attention_bias=False, attention_output_bias=False, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; supported: {sorted(ACTIVATIONS)}.")
        self.hidden_dim, self.intermediate_dim = hidden_dim, intermediate_dim
        self.num_query_heads, self.num_key_value_heads, self.head_dim = num_query_heads, num_key_value_heads, head_dim
        self.activation, self.layer_norm_epsilon, self.norm_unit_offset = activation, layer_norm_epsilon, norm_unit_offset
        self.attention_bias, self.attention_output_bias, self.dropout = attention_bias, attention_output_bias, dropout
        policy = self.dtype_policy
        norm = lambda name: RMSNormalization(layer_norm_epsilon, norm_unit_offset, dtype=policy, name=name)  # noqa: E731
        dense = lambda units, name: Dense(  # noqa: E731
            units, use_bias=False, kernel_initializer=normal_initializer(0.02),
            dtype=policy, name=name)
        self.attention_norm = norm("attention_norm")
        self.self_attention = GroupedQueryAttention(
            num_query_heads, num_key_value_heads, head_dim, hidden_dim, attention_bias,
            attention_output_bias, dropout, dtype=policy, name="self_attention")
        self.ffn_norm = norm("ffn_norm")
        self.ffn_gate = dense(intermediate_dim, "ffn_gate")
        self.ffn_intermediate = dense(intermediate_dim, "ffn_intermediate")
        self.ffn_output = dense(hidden_dim, "ffn_output")

    def build(self, input_shape):
        for layer in (self.attention_norm, self.self_attention, self.ffn_norm, self.ffn_gate, self.ffn_intermediate):
            layer.build(input_shape)
        self.ffn_output.build(input_shape[:-1] + (self.intermediate_dim,))

    def call(self, x, rotary, attention_mask, cache=None, cache_index=None, training=None):
        attended = self.self_attention(self.attention_norm(x), rotary=rotary, attention_mask=attention_mask,
                                       cache=cache, cache_index=cache_index, training=training)
        if cache is not None:
            attended, cache = attended
        x = x + attended
        h = self.ffn_norm(x)
        x = x + self.ffn_output(ACTIVATIONS[self.activation](self.ffn_gate(h)) * self.ffn_intermediate(h))
        return x if cache is None else (x, cache)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "intermediate_dim": self.intermediate_dim,
                "num_query_heads": self.num_query_heads, "num_key_value_heads": self.num_key_value_heads,
                "head_dim": self.head_dim, "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon, "norm_unit_offset": self.norm_unit_offset,
                "attention_bias": self.attention_bias, "attention_output_bias": self.attention_output_bias,
                "dropout": self.dropout}


def init_decoder_cache(backbone, batch_size, max_length):
    """An empty key/value cache `(batch, layers, 2, max_length, kv_heads, head_dim)`."""
    shape = (batch_size, backbone.num_layers, 2, max_length, backbone.num_key_value_heads, backbone.head_dim)
    return ops.zeros(shape, backbone.compute_dtype)


def decode_with_cache(backbone, x, token_ids, padding_mask, cache, cache_index, sliding_window=None):
    """The blocks and final norm of a Llama-style `backbone` on embedded new
    tokens `x` placed at `cache_index` (rotary positions start there), reading
    and updating `cache`; `padding_mask` covers all `max_length` cache
    positions. Returns `(hidden_states, new_cache)`."""
    rotary = backbone.rotary_embedding(token_ids, start_index=cache_index)
    mask = decoder_attention_mask(padding_mask, ops.shape(token_ids)[1], cache_index, sliding_window)
    caches = []
    for i, block in enumerate(backbone.transformer_layers):
        x, layer_cache = block(x, rotary=rotary, attention_mask=mask, cache=cache[:, i], cache_index=cache_index)
        caches.append(layer_cache)
    return backbone.layer_norm(x), ops.stack(caches, axis=1)


def decode_packed(backbone, x, token_ids, segment_ids, sliding_window=None, training=None):
    """The blocks and final norm of a Llama-style `backbone` on embedded packed
    rows `x`: attention stays inside each example of `segment_ids` and rotary
    positions restart at each example (`attention.packed_attention_mask`).
    Returns the hidden states."""
    mask, positions = packed_attention_mask(segment_ids, sliding_window)
    rotary = backbone.rotary_embedding(token_ids, position_ids=positions)
    for block in backbone.transformer_layers:
        x = block(x, rotary=rotary, attention_mask=mask, training=training)
    return backbone.layer_norm(x)
