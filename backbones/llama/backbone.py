"""`LlamaBackbone`: Meta's Llama 2 / 3 decoder (also Mistral and Qwen2 checkpoints)."""

import keras

from backbones.backbone import Backbone, normal_initializer
from backbones.common.dense import Dense
from backbones.common.attention import DecoderMask
from backbones.common.decoder import GatedDecoderBlock, decode_packed, decode_with_cache, init_decoder_cache
from backbones.common.logits import tied_logits
from backbones.common.rms_norm import RMSNormalization
from backbones.common.rotary import RotaryEmbedding
from backbones.llama.family import FAMILY


class LlamaBackbone(Backbone):
    """Llama decoder: token embeddings, pre-norm blocks (RMS norm, grouped-query
    attention with rotary positions, SwiGLU feed-forward), final RMS norm.

    The output is the final-normed hidden states. `compute_logits(hidden)`
    gives next-token logits: through `token_embedding` when
    `tie_word_embeddings`, otherwise through `output_embedding`, a bias-free
    Dense layer whose kernel is `(hidden_dim, vocabulary_size)` (transformers'
    `lm_head.weight` transposed). Mistral (`sliding_window`) and Qwen2
    (`attention_bias`) checkpoints convert to this class too.

    Args:
        vocabulary_size: int. Number of token ids.
        num_layers: int. Number of decoder blocks.
        num_query_heads: int. Query heads per block.
        num_key_value_heads: int. Key/value heads per block (grouped-query
            attention when fewer than num_query_heads).
        hidden_dim: int. Width of the residual stream.
        intermediate_dim: int. Width of the SwiGLU gate and up projections.
        head_dim: int. Width of each head; default hidden_dim // num_query_heads.
        rope_theta: float. Rotary base wavelength (10000 in Llama 2, 500000 in Llama 3).
        rope_scaling_type: str. None, `"linear"` or `"llama3"` (Llama 3.1+).
        rope_scaling_factor: float. Frequency division factor of the scaling.
        rope_low_freq_factor: float. Llama 3 scaling: low-frequency boundary.
        rope_high_freq_factor: float. Llama 3 scaling: high-frequency boundary.
        rope_original_max_position_embeddings: int. Llama 3 scaling: the
            pretraining context length.
        layer_norm_epsilon: float. Epsilon of every RMS norm.
        tie_word_embeddings: bool. Logits through the token embedding (True)
            or a separate `output_embedding` (False, Llama 2 / 3 8B).
        attention_bias: bool. Biases on the query/key/value projections (Qwen2).
        attention_output_bias: bool. Bias on the attention output projection.
        sliding_window: int. Each token attends to at most this many
            positions, itself included (Mistral v0.1); None for full attention.
        max_sequence_length: int. Context length the weights were trained
            for (informational: rotary positions have no hard limit).
        dropout: float. Dropout on attention probabilities.
        dtype: str or keras.DTypePolicy. Dtype policy (see `Backbone`).

    Example:
    >>> import numpy as np
    >>> model = LlamaBackbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                       num_key_value_heads=2, hidden_dim=16, intermediate_dim=32)
    >>> h = model({"token_ids": np.ones((1, 5), "int32"), "padding_mask": np.ones((1, 5), "int32")})
    >>> h.shape, model.compute_logits(h).shape
    (TensorShape([1, 5, 16]), TensorShape([1, 5, 100]))
    """

    lora_target_layers = FAMILY.lora_targets

    def __init__(self, vocabulary_size, num_layers, num_query_heads, num_key_value_heads, hidden_dim,
                 intermediate_dim, head_dim=None, rope_theta=10000.0, rope_scaling_type=None,
                 rope_scaling_factor=1.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                 rope_original_max_position_embeddings=8192, layer_norm_epsilon=1e-6,
                 tie_word_embeddings=False, attention_bias=False, attention_output_bias=False,
                 sliding_window=None, max_sequence_length=4096, dropout=0.0, dtype=None, **kwargs):
        # === Layers ===
        policy = keras.dtype_policies.get(dtype or keras.config.dtype_policy())
        head_dim = head_dim or hidden_dim // num_query_heads
        init = normal_initializer(0.02)
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size, hidden_dim, embeddings_initializer=init, dtype=policy, name="token_embedding")
        self.rotary_embedding = RotaryEmbedding(
            head_dim, rope_theta, rope_scaling_type, rope_scaling_factor, rope_low_freq_factor,
            rope_high_freq_factor, rope_original_max_position_embeddings, dtype=policy, name="rotary_embedding")
        self.transformer_layers = [
            GatedDecoderBlock(hidden_dim, intermediate_dim, num_query_heads, num_key_value_heads, head_dim,
                              "silu", layer_norm_epsilon, False, attention_bias, attention_output_bias, dropout,
                              dtype=policy, name=f"transformer_layer_{i}")
            for i in range(num_layers)
        ]
        self.layer_norm = RMSNormalization(layer_norm_epsilon, dtype=policy, name="layer_norm")

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = self.token_embedding(token_ids)
        rotary = self.rotary_embedding(token_ids)
        mask = DecoderMask(sliding_window, name="decoder_mask")(padding_mask)
        for block in self.transformer_layers:
            x = block(x, rotary=rotary, attention_mask=mask)
        outputs = self.layer_norm(x)
        super().__init__(inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                         outputs=outputs, dtype=policy, **kwargs)
        # Not in the graph (the output is hidden states); tracked as an attribute,
        # so it is saved, loaded and counted with the backbone's weights.
        self.output_embedding = None
        if not tie_word_embeddings:
            self.output_embedding = Dense(
                vocabulary_size, use_bias=False, kernel_initializer=init, dtype=policy, name="output_embedding")
            self.output_embedding.build((None, None, hidden_dim))

        # === Config ===
        self.vocabulary_size, self.num_layers, self.hidden_dim = vocabulary_size, num_layers, hidden_dim
        self.num_query_heads, self.num_key_value_heads, self.head_dim = num_query_heads, num_key_value_heads, head_dim
        self.intermediate_dim, self.rope_theta, self.rope_scaling_type = intermediate_dim, rope_theta, rope_scaling_type
        self.rope_scaling_factor, self.rope_low_freq_factor = rope_scaling_factor, rope_low_freq_factor
        self.rope_high_freq_factor = rope_high_freq_factor
        self.rope_original_max_position_embeddings = rope_original_max_position_embeddings
        self.layer_norm_epsilon, self.tie_word_embeddings = layer_norm_epsilon, tie_word_embeddings
        self.attention_bias, self.attention_output_bias = attention_bias, attention_output_bias
        self.sliding_window, self.max_sequence_length, self.dropout = sliding_window, max_sequence_length, dropout

    def compute_logits(self, hidden_states):
        """Next-token logits `(..., vocabulary_size)` of final hidden states."""
        if self.output_embedding is not None:
            return self.output_embedding(hidden_states)
        return tied_logits(hidden_states, self.token_embedding)

    def init_cache(self, batch_size, max_length):
        """An empty key/value cache `(batch, layers, 2, max_length, kv_heads, head_dim)`."""
        return init_decoder_cache(self, batch_size, max_length)

    def call_with_cache(self, token_ids, padding_mask, cache, cache_index):
        """Hidden states of `token_ids` placed at `cache_index`, reading and
        updating `cache` (see `common.decoder.decode_with_cache`). Returns
        `(hidden_states, new_cache)`."""
        return decode_with_cache(self, self.token_embedding(token_ids), token_ids, padding_mask, cache, cache_index, self.sliding_window)

    def call_packed(self, token_ids, segment_ids, training=None):
        """Hidden states of packed rows (see `Backbone.call_packed`)."""
        return decode_packed(self, self.token_embedding(token_ids), token_ids, segment_ids, self.sliding_window, training)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size, "num_layers": self.num_layers,
            "num_query_heads": self.num_query_heads, "num_key_value_heads": self.num_key_value_heads,
            "hidden_dim": self.hidden_dim, "intermediate_dim": self.intermediate_dim, "head_dim": self.head_dim,
            "rope_theta": self.rope_theta, "rope_scaling_type": self.rope_scaling_type,
            "rope_scaling_factor": self.rope_scaling_factor, "rope_low_freq_factor": self.rope_low_freq_factor,
            "rope_high_freq_factor": self.rope_high_freq_factor,
            "rope_original_max_position_embeddings": self.rope_original_max_position_embeddings,
            "layer_norm_epsilon": self.layer_norm_epsilon, "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias, "attention_output_bias": self.attention_output_bias,
            "sliding_window": self.sliding_window, "max_sequence_length": self.max_sequence_length,
            "dropout": self.dropout,
        }
