"""Logits through a tied output embedding: `hidden_states @ embeddings^T`."""

import keras
from keras import ops

from backbones.quantize import int8_tied_logits


class TiedEmbeddingLogits(keras.layers.Layer):
    """`hidden_states @ embeddings^T` in the dtype of the hidden states, with the
    embeddings variable passed as a call argument.

    Being a layer call, it reads the variable at every call, also when it is
    part of a functional graph (a CausalLM built on KerasTensors). A plain
    `ops.cast(variable)` there would run once, at graph construction, and
    freeze the embeddings into a constant. No weights of its own.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False  # keep each dtype; the cast below is explicit
        self.built = True

    def compute_output_spec(self, hidden_states, embeddings, scale=None):
        # Declared, not traced: JAX cannot trace a Keras Variable passed as an argument.
        return keras.KerasTensor(tuple(hidden_states.shape[:-1]) + (embeddings.shape[0],), hidden_states.dtype)

    def call(self, hidden_states, embeddings, scale=None):
        # A matmul, not einsum("...h,vh->...v"): TensorFlow's gradient of an einsum
        # with an ellipsis on one operand only materialises a (..., vocabulary, hidden)
        # tensor (8.6 GB and 30 s per step at batch 8 x 128, V=8192, d=256);
        # matmul of a rank-3 by a rank-2 tensor is one 2-D matmul and its gradient.
        if scale is not None and keras.backend.backend() == "tensorflow":
            # int8 embeddings (row v stored as round(e_v * scale_v)): the table is
            # cast to bfloat16 only once the hidden states exist, not at step start.
            return int8_tied_logits(hidden_states, embeddings, scale)
        table = ops.cast(embeddings, hidden_states.dtype)
        if keras.backend.backend() == "tensorflow":
            logits = _matmul_transposed(hidden_states, table)
        else:
            logits = ops.matmul(hidden_states, ops.transpose(table))
        if scale is not None:
            logits = logits * ops.cast(1.0 / scale, logits.dtype)
        return logits


def _matmul_transposed(hidden_states, table):
    """`hidden_states @ table^T` as one 2-D matmul with `transpose_b`: no
    transposed copy of the (vocabulary, hidden) table is made, nor held for
    the backward pass. Gemma 2B widths, 2 blocks, 256k vocabulary, LoRA
    causal-LM fit at batch 4 x 256: peak 6.97 -> 6.24 GiB, step time the same
    (8.68 vs 8.47 s). At all 18 blocks the step's peak lies elsewhere and did
    not move (14.05 GB, BENCHMARKS.md "Scale")."""
    import tensorflow as tf

    flat = tf.reshape(hidden_states, (-1, tf.shape(hidden_states)[-1]))
    logits = tf.matmul(flat, table, transpose_b=True)
    return tf.reshape(logits, tf.concat([tf.shape(hidden_states)[:-1], tf.shape(table)[:1]], 0))


_TIED_LOGITS = TiedEmbeddingLogits(name="tied_embedding_logits")


def tied_logits(hidden_states, embedding):
    """Logits `(..., vocabulary_size)` of `hidden_states` through the Embedding layer `embedding`
    (also an int8-quantized one: its rows are rescaled after the matmul, so the
    float embeddings are never materialised beyond one cast of the int8 table).

    Example:
    >>> import keras, numpy as np
    >>> embedding = keras.layers.Embedding(10, 4); embedding.build((None,))
    >>> tied_logits(np.ones((2, 3, 4), "float32"), embedding).shape
    TensorShape([2, 3, 10])
    """
    if not isinstance(hidden_states, keras.KerasTensor):
        hidden_states = ops.convert_to_tensor(hidden_states)  # the layer takes tensors only
    # The variable goes as a keyword: Keras accepts only tensors positionally (JAX, torch).
    if getattr(embedding, "quantization_mode", None) == "int8":
        return _TIED_LOGITS(hidden_states, embeddings=embedding.embeddings, scale=embedding.embeddings_scale)
    return _TIED_LOGITS(hidden_states, embeddings=embedding.embeddings)
