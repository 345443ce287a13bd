"""An int8 frozen base under LoRA: trains, saves adapters, refuses presets and bad modes."""

import gc
import weakref
from pathlib import Path

import keras
import numpy as np
import pytest

import tasks
from backbones import Backbone, QuantizationError, registry
from backbones.common.logits import tied_logits
from backbones.quantize import quantize_layer

TINY = sorted({meta["class_name"]: name for name, meta in registry.BACKBONE_PRESETS.items()
               if Path(str(meta["handle"])).is_dir()}.values())
TEXTS = ["a good film", "a bad film", "great fun", "dull and slow"] * 4
LABELS = np.array([1, 0, 1, 0] * 4)


def _fit_losses(task, x, y=None, steps=6):
    task.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    history = task.fit(x, y, batch_size=16, epochs=steps, verbose=0, shuffle=False)
    return history.history["loss"]


@pytest.mark.parametrize("preset", TINY)
def test_int8_base_with_lora_trains(preset):
    keras.utils.set_random_seed(0)
    backbone = Backbone.from_preset(preset, dtype="bfloat16")
    backbone.quantize("int8")
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
    assert quantize_layer(dense) and dense.kernel.dtype == "int8"
    assert not quantize_layer(dense)  # already quantized: left alone
    assert not quantize_layer(keras.layers.LayerNormalization())
    gc.collect()
    assert float_kernel() is None, "the float kernel must not outlive its layer's quantization"


def test_unsupported_modes_are_refused():
    backbone = Backbone.from_preset("gpt2_tiny_en")
    for mode in ("int4", "float8"):  # Keras modes that we do not support
        with pytest.raises(QuantizationError, match="only mode is 'int8'"):
            backbone.quantize(mode)
    assert not backbone.quantized
    with pytest.raises(ValueError, match="float16"):  # Keras's own check runs first
        Backbone.from_preset("gpt2_tiny_en", dtype="float16").quantize("int8")
