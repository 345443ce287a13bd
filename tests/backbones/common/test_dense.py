"""backbones.common.dense.Dense: LoRA as x W + s (x A) B, equal to Keras's
merged-kernel path; quantized layers left to Keras's own call."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from backbones.common.dense import Dense


def lora_layer(dtype, rank=3, alpha=6.0, bias=True):
    layer = Dense(5, use_bias=bias, dtype=dtype)
    layer.build((None, 7))
    layer.enable_lora(rank, lora_alpha=alpha)
    rng = np.random.default_rng(0)
    layer.lora_kernel_a.assign(rng.normal(size=(7, rank)))
    layer.lora_kernel_b.assign(rng.normal(size=(rank, 5)))
    if bias:
        layer.bias.assign(rng.normal(size=5))
    return layer


def merged_call(layer, x):
    return keras.layers.Dense.call(layer, x)  # Keras's own: x (W + s A B)


def f32(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("bfloat16", 0.1), ("mixed_bfloat16", 0.1),
                                        ("float16", 1e-2)])
def test_factorised_equals_merged(dtype, atol):
    layer = lora_layer(dtype)
    x = np.random.default_rng(1).normal(size=(2, 4, 7))
    out = layer(keras.ops.convert_to_tensor(x, layer.compute_dtype))
    assert keras.backend.standardize_dtype(out.dtype) == layer.compute_dtype
    merged = f32(layer._kernel) + 2.0 * f32(layer.lora_kernel_a) @ f32(layer.lora_kernel_b)
    np.testing.assert_allclose(f32(out), x @ merged + f32(layer.bias), atol=atol, rtol=atol)
    if dtype == "float32":
        np.testing.assert_allclose(out, merged_call(layer, x.astype("float32")), atol=1e-5)


def test_gradients_reach_a_and_b_as_through_the_merged_kernel():
    layer = lora_layer("float32")
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 7)), "float32")
    grads = {}
    for name, fn in (("factorised", layer), ("merged", lambda x: merged_call(layer, x))):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fn(x) ** 2)
        grads[name] = tape.gradient(loss, layer.trainable_variables)
    assert [v.name for v in layer.trainable_variables] == ["bias", "lora_kernel_a", "lora_kernel_b"]
    for got, want in zip(grads["factorised"], grads["merged"]):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_without_lora_and_serialized():
    layer = Dense(4, activation="relu")
    x = np.random.default_rng(3).normal(size=(2, 3)).astype("float32")
    out = layer(x).numpy()
    np.testing.assert_allclose(out, np.maximum(x @ layer.kernel.numpy() + layer.bias.numpy(), 0), atol=1e-6)
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == "backbone_lab>Dense"
    assert type(keras.saving.deserialize_keras_object(config)) is Dense


def test_int8_quantized_layer_keeps_keras_call():
    layer = Dense(5, use_bias=False, dtype="float32")
    layer.build((None, 7))
    layer.quantize("int8")
    layer.enable_lora(2)
    layer.lora_kernel_b.assign(np.ones((2, 5)))
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 7)), "float32")
    called = []
    original = Dense.call
    Dense.call = lambda self, *a, **k: called.append(1) or original(self, *a, **k)
    try:
        out = layer(x)
    finally:
        Dense.call = original
    assert called == []
    np.testing.assert_allclose(out.numpy(), layer._int8_call(x).numpy())
