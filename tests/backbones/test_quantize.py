"""An int8 frozen base under LoRA: trains, saves adapters, refuses presets and bad modes."""

import gc
import sys
import weakref
from pathlib import Path

import keras
import numpy as np
import pytest

import tasks
from backbones import Backbone, QuantizationError
from backbones import quantize
from backbones.common.logits import tied_logits
from backbones.quantize import quantize_layer
from tests.helpers import bundled_presets

ROOT = Path(__file__).resolve().parents[2]

TINY = bundled_presets()  # one per registered family
TEXTS = ["a good film", "a bad film", "great fun", "dull and slow"] * 4
LABELS = np.array([1, 0, 1, 0] * 4)


def _fit_losses(task, x, y=None, steps=6):
    task.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    history = task.fit(x, y, batch_size=16, epochs=steps, verbose=0, shuffle=False)
    return history.history["loss"]


@pytest.mark.parametrize("preset", TINY)
def test_int8_base_with_lora_trains(preset):
    keras.utils.set_random_seed(0)
    backbone = Backbone.from_preset(preset, dtype="bfloat16", quantize="int8")
    backbone.enable_lora(2)
    assert backbone.quantized and backbone.token_embedding.embeddings.dtype == "int8"
    kernels = [w for w in backbone.weights if w.name == "kernel"]
    assert kernels and all(w.dtype == "int8" and not w.trainable for w in kernels)
    assert {w.name for w in backbone.trainable_weights} == {"lora_kernel_a", "lora_kernel_b"}
    assert all(w.dtype == "float32" for w in backbone.trainable_weights)
    losses = _fit_losses(tasks.TextClassifier(backbone, num_classes=2, sequence_length=8), TEXTS, LABELS)
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


def test_int8_causal_lm_through_tied_int8_embeddings_trains():
    keras.utils.set_random_seed(0)
    backbone = Backbone.from_preset("gemma_tiny_en")  # tied output embedding
    hidden = np.random.default_rng(0).normal(size=(2, 3, backbone.hidden_dim)).astype("float32")
    reference = np.asarray(tied_logits(hidden, backbone.token_embedding))
    backbone.quantize("int8")
    logits = np.asarray(tied_logits(hidden, backbone.token_embedding))
    # int8 absmax per row: each weight within 0.5/127 of its row's max.
    np.testing.assert_allclose(logits, reference, atol=0.02 * np.abs(reference).max())
    backbone.enable_lora(2)
    losses = _fit_losses(tasks.CausalLM(backbone, sequence_length=8), TEXTS)
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


def test_lora_before_or_after_quantize_gives_the_same_model():
    x = {"token_ids": np.array([[5, 6, 7, 8]]), "padding_mask": np.array([[1, 1, 1, 1]])}
    outputs = []
    for first_quantize in (True, False):
        keras.utils.set_random_seed(0)
        backbone = Backbone.from_preset("llama_tiny_en")
        if first_quantize:
            backbone.quantize("int8")
        backbone.enable_lora(2)
        if not first_quantize:
            backbone.quantize("int8")
        for w in backbone.trainable_weights:
            w.assign(np.full(w.shape, 0.05, "float32"))
        outputs.append(np.asarray(backbone(x)))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_adapter_of_an_int8_base_loads_into_the_float_base(tmp_path):
    x = {"token_ids": np.array([[5, 6, 7, 8]]), "padding_mask": np.array([[1, 1, 1, 1]])}
    quantized = Backbone.from_preset("gpt2_tiny_en")  # biased Dense layers: kernels re-created after biases
    quantized.quantize("int8")
    quantized.enable_lora(2)
    for w in quantized.trainable_weights:
        w.assign(np.random.default_rng(0).normal(size=w.shape).astype("float32") * 0.1)
    quantized.save_lora_weights(tmp_path / "adapter.lora.safetensors")
    with pytest.raises(QuantizationError, match="save_lora_weights"):
        quantized.save_to_preset(tmp_path / "preset")
    assert not (tmp_path / "preset").exists()

    full = Backbone.from_preset("gpt2_tiny_en")
    full.load_lora_weights(tmp_path / "adapter.lora.safetensors")
    out, q_out = np.asarray(full(x)), np.asarray(quantized(x))
    assert np.abs(q_out - out).max() < 0.05 * np.abs(out).max()  # the same model up to int8 rounding


def test_quantize_layer_drops_the_float_kernel():
    dense = keras.layers.Dense(64)
    dense.build((None, 32))
    float_kernel = weakref.ref(dense.kernel)
    gc.disable()  # quantize_layer skips Keras's gc.collect(): the kernel must go by reference counting
    try:
        assert quantize_layer(dense) and dense.kernel.dtype == "int8"
        assert float_kernel() is None, "the float kernel must not outlive its layer's quantization"
    finally:
        gc.enable()
    assert not quantize_layer(dense)  # already quantized: left alone
    assert not quantize_layer(keras.layers.LayerNormalization())


def _tiny_gemma_checkpoint(directory):
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_scale_checkpoint import make_checkpoint

    return make_checkpoint("gemma_2b", directory, config_overrides={
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 512})


@pytest.mark.parametrize("preset", TINY + ["hf_checkpoint"])
def test_quantizing_while_loading_equals_quantizing_after(preset, tmp_path):
    """Native presets (every family; Llama's untied LM head) and a transformers
    checkpoint (converted): the same int8 weights, scales and outputs, and the
    LoRA model trains on it."""
    if preset == "hf_checkpoint":
        preset = _tiny_gemma_checkpoint(tmp_path)
    after = Backbone.from_preset(preset, dtype="bfloat16")
    after.quantize("int8")
    loaded = Backbone.from_preset(preset, dtype="bfloat16", quantize="int8")
    assert loaded.quantized and loaded.dtype_policy.name == "bfloat16"
    weights = {w.path: w for w in after.weights}
    assert sorted(weights) == sorted(w.path for w in loaded.weights)
    for w in loaded.weights:
        assert w.dtype == weights[w.path].dtype, w.path
        np.testing.assert_array_equal(w.numpy(), weights[w.path].numpy(), err_msg=w.path)
    assert {w.path for w in loaded.weights if w.dtype == "int8"} == {
        w.path for w in after.weights if w.dtype == "int8"} != set()
    x = {"token_ids": np.array([[5, 6, 7, 8]]), "padding_mask": np.array([[1, 1, 1, 1]])}
    if "segment_ids" in loaded.input:
        x["segment_ids"] = np.zeros((1, 4), "int32")
    for model in (after, loaded):
        model.enable_lora(2)
        for w in model.trainable_weights:
            w.assign(np.full(w.shape, 0.05, "float32"))
    for ours, reference in zip(keras.tree.flatten(loaded(x)), keras.tree.flatten(after(x))):
        np.testing.assert_array_equal(np.asarray(ours, "float32"), np.asarray(reference, "float32"))


def test_int8_matmul_dequantizes_after_its_input_and_matches_the_float_gradients():
    """The cast of the int8 kernel runs after the layer input exists (forward)
    and after the incoming gradient (backward): a control dependency in the
    graph. Values and input gradients are those of the dequantized kernel."""
    import tensorflow as tf

    from backbones.common.dense import Dense

    layer = Dense(16, dtype="float32")
    layer.build((None, 8))
    float_kernel = layer.kernel.numpy()
    quantize_layer(layer)
    dequantized = layer.kernel.numpy().astype("float32") / layer.kernel_scale.numpy()
    np.testing.assert_allclose(dequantized, float_kernel, atol=np.abs(float_kernel).max() / 127)

    x = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32"))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, x)

    y, grad = step(x)
    np.testing.assert_allclose(y, x.numpy() @ dequantized, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, (2 * y.numpy()) @ dequantized.T, rtol=1e-4, atol=1e-4)
    graph = step.get_concrete_function(x).graph

    def casts_of_int8(g):
        for op in g.get_operations():
            if op.type == "Cast" and op.inputs[0].dtype == tf.int8:
                yield op

    casts = list(casts_of_int8(graph))
    assert len(casts) == 2, [c.name for c in casts]  # one in the forward, one in the backward
    assert all(c.control_inputs for c in casts), "a dequantizing cast without a control dependency"


def test_chunked_absmax_is_keras_absmax_over_chunks(monkeypatch):
    """Keras's scheme (float32 weights give Keras's exact result), whatever the chunking."""
    from keras.src.quantizers.quantizers import abs_max_quantize

    monkeypatch.setattr(quantize, "CHUNK_ELEMENTS", 40)  # several chunks of rows, a partial one last
    w = np.random.default_rng(0).normal(size=(13, 7)).astype("float32")
    for axis in (0, -1):
        q, scale = quantize.ChunkedAbsMax(axis=axis)(keras.Variable(w))
        q_ref, scale_ref = abs_max_quantize(w, axis, to_numpy=True)
        np.testing.assert_array_equal(np.asarray(q), np.asarray(q_ref))
        np.testing.assert_allclose(np.asarray(scale), np.asarray(scale_ref), rtol=1e-6)


def test_unsupported_modes_are_refused():
    backbone = Backbone.from_preset("gpt2_tiny_en")
    for mode in ("int4", "float8"):  # Keras modes that we do not support
        with pytest.raises(QuantizationError, match="only mode is 'int8'"):
            backbone.quantize(mode)
    assert not backbone.quantized
    with pytest.raises(ValueError, match="float16"):  # Keras's own check runs first
        Backbone.from_preset("gpt2_tiny_en", dtype="float16").quantize("int8")
