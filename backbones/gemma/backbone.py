"""`GemmaBackbone`: Google's Gemma (v1) decoder."""

import math

import keras

from backbones.backbone import Backbone, normal_initializer
from backbones.common.attention import DecoderMask
from backbones.common.decoder import GatedDecoderBlock, decode_packed, decode_with_cache, init_decoder_cache
from backbones.common.logits import tied_logits
from backbones.common.rms_norm import RMSNormalization
from backbones.common.rotary import RotaryEmbedding
from backbones.gemma.family import FAMILY


class GemmaBackbone(Backbone):
    """Gemma decoder: token embeddings scaled by sqrt(hidden_dim), pre-norm
    blocks (RMS norm with a `1 + scale` weight, multi-query or multi-head
    attention with rotary positions, GeGLU feed-forward with tanh GELU),
    final RMS norm.

    The output is the final-normed hidden states; the output embedding is
    tied: `compute_logits(hidden)` is `hidden @ token_embedding.embeddings^T`.

    Args:
        vocabulary_size: int. Number of token ids.
        num_layers: int. Number of decoder blocks.
        num_query_heads: int. Query heads per block.
        num_key_value_heads: int. Key/value heads per block (1 in Gemma 2B:
            multi-query attention).
        hidden_dim: int. Width of the residual stream.
        intermediate_dim: int. Width of the GeGLU gate and up projections
            (transformers' `intermediate_size`, 16384 in Gemma 2B).
        head_dim: int. Width of each head, independent of hidden_dim (256 in Gemma).
        layer_norm_epsilon: float. Epsilon of every RMS norm.
        rope_theta: float. Rotary base wavelength.
        max_sequence_length: int. Context length the weights were trained
            for (informational: rotary positions have no hard limit).
        dropout: float. Dropout on attention probabilities.
        dtype: str or keras.DTypePolicy. Dtype policy (see `Backbone`).

    Example:
    >>> import numpy as np
    >>> model = GemmaBackbone(vocabulary_size=100, num_layers=2, num_query_heads=4,
    ...                       num_key_value_heads=1, hidden_dim=16, intermediate_dim=32, head_dim=8)
    >>> h = model({"token_ids": np.ones((1, 5), "int32"), "padding_mask": np.ones((1, 5), "int32")})
    >>> h.shape, model.compute_logits(h).shape
    (TensorShape([1, 5, 16]), TensorShape([1, 5, 100]))
    """

    lora_target_layers = FAMILY.lora_targets

    def __init__(self, vocabulary_size, num_layers, num_query_heads, num_key_value_heads, hidden_dim,
                 intermediate_dim, head_dim, layer_norm_epsilon=1e-6, rope_theta=10000.0,
                 max_sequence_length=8192, dropout=0.0, dtype=None, **kwargs):
        # === Layers ===
        policy = keras.dtype_policies.get(dtype or keras.config.dtype_policy())
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size, hidden_dim, embeddings_initializer=normal_initializer(0.02),
            dtype=policy, name="token_embedding")
        # Rescaling casts the scale to the compute dtype before the product, as
        # the reference does (sqrt(3072) becomes 55.5 in bfloat16).
        self.embedding_scale = keras.layers.Rescaling(math.sqrt(hidden_dim), dtype=policy, name="embedding_scale")
        self.rotary_embedding = RotaryEmbedding(head_dim, rope_theta, dtype=policy, name="rotary_embedding")
        self.transformer_layers = [
            GatedDecoderBlock(hidden_dim, intermediate_dim, num_query_heads, num_key_value_heads, head_dim,
                              "gelu_tanh", layer_norm_epsilon, True, dropout=dropout,
                              dtype=policy, name=f"transformer_layer_{i}")
            for i in range(num_layers)
        ]
        self.layer_norm = RMSNormalization(layer_norm_epsilon, unit_offset=True, dtype=policy, name="layer_norm")

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = self._embed(token_ids)
        rotary = self.rotary_embedding(token_ids)
        mask = DecoderMask(name="decoder_mask")(padding_mask)
        for block in self.transformer_layers:
            x = block(x, rotary=rotary, attention_mask=mask)
        outputs = self.layer_norm(x)
        super().__init__(inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                         outputs=outputs, dtype=policy, **kwargs)

        # === Config ===
        self.vocabulary_size, self.num_layers, self.hidden_dim = vocabulary_size, num_layers, hidden_dim
        self.num_query_heads, self.num_key_value_heads, self.head_dim = num_query_heads, num_key_value_heads, head_dim
        self.intermediate_dim, self.layer_norm_epsilon, self.rope_theta = intermediate_dim, layer_norm_epsilon, rope_theta
        self.max_sequence_length, self.dropout = max_sequence_length, dropout

    def _embed(self, token_ids):
        return self.embedding_scale(self.token_embedding(token_ids))

    def compute_logits(self, hidden_states):
        """Next-token logits `(..., vocabulary_size)` of final hidden states (tied embeddings)."""
        return tied_logits(hidden_states, self.token_embedding)

    def init_cache(self, batch_size, max_length):
        """An empty key/value cache `(batch, layers, 2, max_length, kv_heads, head_dim)`."""
        return init_decoder_cache(self, batch_size, max_length)

    def call_with_cache(self, token_ids, padding_mask, cache, cache_index):
        """Hidden states of `token_ids` placed at `cache_index`, reading and
        updating `cache` (see `common.decoder.decode_with_cache`). Returns
        `(hidden_states, new_cache)`."""
        return decode_with_cache(self, self._embed(token_ids), token_ids, padding_mask, cache, cache_index)

    def call_packed(self, token_ids, segment_ids, training=None):
        """Hidden states of packed rows (see `Backbone.call_packed`)."""
        return decode_packed(self, self._embed(token_ids), token_ids, segment_ids, None, training)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size, "num_layers": self.num_layers,
            "num_query_heads": self.num_query_heads, "num_key_value_heads": self.num_key_value_heads,
            "hidden_dim": self.hidden_dim, "intermediate_dim": self.intermediate_dim, "head_dim": self.head_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon, "rope_theta": self.rope_theta,
            "max_sequence_length": self.max_sequence_length, "dropout": self.dropout,
        }
