"""`BertBackbone`: Google's BERT encoder (learned positions, segments, post-norm blocks)."""

import keras

from backbones.backbone import Backbone
from backbones.initializers import normal_initializer
from backbones.common.dense import Dense
from backbones.bert.family import FAMILY
from backbones.bert.layers import BertBlock
from backbones.gpt2.layers import PositionEmbedding  # the same learned absolute positions


class BertBackbone(Backbone):
    """BERT encoder: token + position + segment embeddings, post-norm blocks, pooler.

    Attention is bidirectional over the tokens where `padding_mask` is 1.
    Returns a dict: `sequence_output` `(batch, seq, hidden)`, the last hidden
    states, and `pooled_output` `(batch, hidden)`, tanh(dense(first token)),
    the `[CLS]` summary BERT's next-sentence head was pretrained on.

    Args:
        vocabulary_size: int. Number of token ids.
        num_layers: int. Number of encoder blocks.
        num_heads: int. Attention heads per block (must divide hidden_dim).
        hidden_dim: int. Width of the residual stream.
        intermediate_dim: int. Width of the feed-forward layer (4 * hidden_dim in BERT).
        dropout: float. Dropout on embeddings, attention probabilities and residuals.
        max_sequence_length: int. Number of learned positions.
        num_segments: int. Number of segment (token type) ids.
        layer_norm_epsilon: float. Epsilon of every LayerNorm.
        activation: str. Feed-forward GELU: `"gelu"` (exact, BERT's and
            transformers') or `"gelu_approximate"` (tanh, keras-hub's BERT).
        dtype: str or keras.DTypePolicy. Dtype policy (see `Backbone`).

    Example:
    >>> import numpy as np
    >>> model = BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2,
    ...                      hidden_dim=8, intermediate_dim=32, max_sequence_length=16)
    >>> out = model({"token_ids": np.ones((1, 5), "int32"), "segment_ids": np.zeros((1, 5), "int32"),
    ...              "padding_mask": np.ones((1, 5), "int32")})
    >>> out["sequence_output"].shape, out["pooled_output"].shape
    (TensorShape([1, 5, 8]), TensorShape([1, 8]))
    """

    is_encoder = FAMILY.is_encoder
    lora_target_layers = FAMILY.lora_targets

    def __init__(self, vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
                 dropout=0.1, max_sequence_length=512, num_segments=2, layer_norm_epsilon=1e-12,
                 activation="gelu", dtype=None, **kwargs):
        # === Layers ===
        policy = keras.dtype_policies.get(dtype or keras.config.dtype_policy())
        embedding = lambda count, name: keras.layers.Embedding(  # noqa: E731
            count, hidden_dim, embeddings_initializer=normal_initializer(0.02),
            dtype=policy, name=name)
        self.token_embedding = embedding(vocabulary_size, "token_embedding")
        self.position_embedding = PositionEmbedding(
            max_sequence_length, hidden_dim, dtype=policy, name="position_embedding")
        self.segment_embedding = embedding(num_segments, "segment_embedding")
        self.embeddings_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="embeddings_norm")
        self.embeddings_dropout = (keras.layers.Dropout(dropout, dtype=policy, name="embeddings_dropout")
                                   if dropout else None)
        self.transformer_layers = [
            BertBlock(num_heads, hidden_dim, intermediate_dim, dropout, layer_norm_epsilon,
                      activation, dtype=policy, name=f"transformer_layer_{i}")
            for i in range(num_layers)
        ]
        self.pooled_dense = Dense(
            hidden_dim, activation="tanh", kernel_initializer=normal_initializer(0.02),
            dtype=policy, name="pooled_dense")

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = (self.token_embedding(token_ids) + self.position_embedding(token_ids)
             + self.segment_embedding(segment_ids))
        x = self.embeddings_norm(x)
        if self.embeddings_dropout is not None:
            x = self.embeddings_dropout(x)
        for block in self.transformer_layers:
            x = block(x, padding_mask=padding_mask)
        super().__init__(
            inputs={"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask},
            outputs={"sequence_output": x, "pooled_output": self.pooled_dense(x[:, 0, :])},
            dtype=policy, **kwargs)

        # === Config ===
        self.vocabulary_size, self.num_layers, self.num_heads = vocabulary_size, num_layers, num_heads
        self.hidden_dim, self.intermediate_dim, self.dropout = hidden_dim, intermediate_dim, dropout
        self.max_sequence_length, self.num_segments = max_sequence_length, num_segments
        self.layer_norm_epsilon, self.activation = layer_norm_epsilon, activation

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size, "num_layers": self.num_layers,
            "num_heads": self.num_heads, "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim, "dropout": self.dropout,
            "max_sequence_length": self.max_sequence_length, "num_segments": self.num_segments,
            "layer_norm_epsilon": self.layer_norm_epsilon, "activation": self.activation,
        }
