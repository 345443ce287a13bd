"""Our cross-entropy against Keras's own: values, gradients, weights, dtypes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tasks.losses import SparseCrossEntropy, sparse_cross_entropy


def loss_and_grad(loss, labels, logits, sample_weight=None, jit=False):
    @tf.function(jit_compile=jit)
    def run(logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = loss(labels, logits, sample_weight=sample_weight)
        return value, tape.gradient(value, logits)

    value, grad = run(tf.constant(logits))
    return float(value), tf.cast(grad, "float32").numpy()


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean_with_sample_weight", "sum"])
@pytest.mark.parametrize("jit", [False, True])
def test_matches_keras_sparse_categorical_crossentropy(reduction, jit):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(3, 5, 37)) * 4 + 30).astype("float32")  # large offsets: needs the max shift
    labels = rng.integers(0, 37, (3, 5))
    weights = (rng.random((3, 5)) > 0.3).astype("float32")
    ours = loss_and_grad(SparseCrossEntropy(reduction=reduction), labels, logits, weights, jit)
    ref = loss_and_grad(keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction),
                        labels, logits, weights, jit)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-6)
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-7)
    assert np.all(ours[1][weights == 0] == 0)  # padding gets no gradient


def test_bfloat16_logits_compute_in_float32():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 11)).astype("float32")
    labels = rng.integers(0, 11, 4)
    per_token = sparse_cross_entropy(labels, tf.constant(logits, "bfloat16"))
    assert per_token.dtype == tf.float32
    reference = -np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))[np.arange(4), labels]
    np.testing.assert_allclose(per_token.numpy(), reference, atol=0.05)  # bf16 inputs, float32 math


def test_causal_lm_defaults_use_it_and_perplexity_is_exp_loss():
    import tasks

    lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=8)
    lm.compile()
    assert isinstance(lm.loss, SparseCrossEntropy) and lm.jit_compile
    logs = lm.evaluate(["the movie was great", "the food"], verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["perplexity"], np.exp(logs["loss"]), rtol=1e-5)

