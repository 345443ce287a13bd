"""`GPT2Backbone`: OpenAI's GPT-2 decoder (learned positions, pre-norm blocks)."""

import keras
from keras import ops

from backbones.backbone import Backbone, normal_initializer
from backbones.common.attention import packed_attention_mask
from backbones.common.logits import tied_logits
from backbones.gpt2.family import FAMILY
from backbones.gpt2.layers import CausalMask, GPT2Block, PositionEmbedding, causal_attention_mask


class GPT2Backbone(Backbone):
    """GPT-2 decoder: token + position embeddings, pre-norm blocks, final norm.

    Args:
        vocabulary_size: int. Number of token ids.
        num_layers: int. Number of decoder blocks.
        num_heads: int. Attention heads per block.
        hidden_dim: int. Width of the residual stream.
        intermediate_dim: int. Width of the feed-forward layer (4 * hidden_dim in GPT-2).
        dropout: float. Dropout on embeddings, attention probabilities and residuals.
        max_sequence_length: int. Number of learned positions.
        layer_norm_epsilon: float. Epsilon of every LayerNorm.
        dtype: str or keras.DTypePolicy. Dtype policy (see `Backbone`).

    Example:
    >>> import numpy as np
    >>> model = GPT2Backbone(vocabulary_size=100, num_layers=2, num_heads=2,
    ...                      hidden_dim=8, intermediate_dim=32, max_sequence_length=16)
    >>> model({"token_ids": np.ones((1, 5), "int32"), "padding_mask": np.ones((1, 5), "int32")}).shape
    TensorShape([1, 5, 8])
    """

    lora_target_layers = FAMILY.lora_targets

    def __init__(self, vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
                 dropout=0.0, max_sequence_length=1024, layer_norm_epsilon=1e-5, dtype=None, **kwargs):
        # === Layers ===
        policy = keras.dtype_policies.get(dtype or keras.config.dtype_policy())
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size, hidden_dim, embeddings_initializer=normal_initializer(0.02),
            dtype=policy, name="token_embedding",
        )
        self.position_embedding = PositionEmbedding(max_sequence_length, hidden_dim, dtype=policy, name="position_embedding")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=policy, name="embeddings_dropout") if dropout else None
        self.transformer_layers = [
            GPT2Block(num_heads, hidden_dim, intermediate_dim, dropout, layer_norm_epsilon,
                      dtype=policy, name=f"transformer_layer_{i}")
            for i in range(num_layers)
        ]
        self.layer_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="layer_norm")

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = self._embed(token_ids)
        mask = CausalMask(name="causal_mask")(padding_mask)
        for block in self.transformer_layers:
            x = block(x, attention_mask=mask)
        outputs = self.layer_norm(x)
        super().__init__(inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                         outputs=outputs, dtype=policy, **kwargs)

        # === Config ===
        self.vocabulary_size, self.num_layers, self.num_heads = vocabulary_size, num_layers, num_heads
        self.hidden_dim, self.intermediate_dim, self.dropout = hidden_dim, intermediate_dim, dropout
        self.max_sequence_length, self.layer_norm_epsilon = max_sequence_length, layer_norm_epsilon

    def _embed(self, token_ids, start_index=0, training=None, position_ids=None):
        x = self.token_embedding(token_ids) + self.position_embedding(
            token_ids, start_index=start_index, position_ids=position_ids)
        return x if self.embeddings_dropout is None else self.embeddings_dropout(x, training=training)

    def call_packed(self, token_ids, segment_ids, training=None):
        """Hidden states of packed rows (see `Backbone.call_packed`): learned
        positions restart at each example, attention stays inside it."""
        mask, positions = packed_attention_mask(segment_ids)
        x = self._embed(token_ids, training=training, position_ids=positions)
        for block in self.transformer_layers:
            x = block(x, attention_mask=mask, training=training)
        return self.layer_norm(x)

    def compute_logits(self, hidden_states):
        """Next-token logits `(..., vocabulary_size)` of final hidden states:
        `hidden_states @ token_embedding.embeddings^T` (GPT-2 ties its output embedding).

        Example:
        >>> import numpy as np
        >>> model = GPT2Backbone(vocabulary_size=100, num_layers=1, num_heads=2, hidden_dim=8,
        ...                      intermediate_dim=16, max_sequence_length=16)
        >>> model.compute_logits(np.ones((1, 5, 8), "float32")).shape
        TensorShape([1, 5, 100])
        """
        return tied_logits(hidden_states, self.token_embedding)

    def init_cache(self, batch_size, max_length):
        """An empty key/value cache `(batch, layers, 2, max_length, heads, head_dim)`."""
        head_dim = self.hidden_dim // self.num_heads
        return ops.zeros((batch_size, self.num_layers, 2, max_length, self.num_heads, head_dim), self.compute_dtype)

    def call_with_cache(self, token_ids, padding_mask, cache, cache_index):
        """Hidden states of `token_ids` placed at `cache_index`, reading and
        updating `cache`; `padding_mask` covers all `max_length` cache positions.
        Returns `(hidden_states, new_cache)`."""
        x = self._embed(token_ids, cache_index)
        mask = causal_attention_mask(padding_mask, ops.shape(token_ids)[1], cache_index)
        caches = []
        for i, block in enumerate(self.transformer_layers):
            x, layer_cache = block(x, attention_mask=mask, cache=cache[:, i], cache_index=cache_index)
            caches.append(layer_cache)
        return self.layer_norm(x), ops.stack(caches, axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size, "num_layers": self.num_layers,
            "num_heads": self.num_heads, "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim, "dropout": self.dropout,
            "max_sequence_length": self.max_sequence_length,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
