"""Activation rematerialisation: same losses and gradients as without it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from backbones import Backbone
from tests.helpers import bundled_presets

# One bundled tiny preset per registered family (Mistral and Qwen2 are LlamaBackbone).
TINY = bundled_presets()


def _losses_and_gradients(preset, remat, jit_compile, lora):
    keras.utils.set_random_seed(0)
    # Dropout on inside the blocks: the recomputation must draw the forward pass's masks.
    backbone = Backbone.from_preset(preset, dropout=0.2)
    if lora:
        backbone.enable_lora(2)
        for w in backbone.weights:  # B starts at zero: make LoRA change the outputs
            if w.name == "lora_kernel_b":
                w.assign(np.random.default_rng(0).normal(size=w.shape).astype("float32") * 0.1)
    if remat:
        backbone.enable_remat()
    x = {"token_ids": np.arange(32).reshape(2, 16) % 50 + 3, "padding_mask": np.ones((2, 16), "int32")}
    x["padding_mask"][1, 12:] = 0
    if backbone.is_encoder:
        x["segment_ids"] = np.zeros((2, 16), "int32")
    weights = backbone.trainable_weights

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            out = backbone(x, training=True)
            out = out["sequence_output"] if isinstance(out, dict) else out
            loss = tf.reduce_mean(tf.square(tf.cast(out[:, :, :4], "float32") - 0.5))
        return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, weights) if g is not None]

    results = [step() for _ in range(2)]  # two steps: the dropout seeds must advance alike
    return [float(loss) for loss, _ in results], [np.asarray(g) for _, grads in results for g in grads]


# Every family with LoRA and with full gradients; XLA once (8 s per family; the
# wrapper is the same for every block).
CASES = [(p, False, lora) for p in TINY for lora in (True, False)] + [("gpt2_tiny_en", True, True)]


@pytest.mark.parametrize("preset,jit_compile,lora", CASES)
def test_remat_keeps_losses_and_gradients(preset, jit_compile, lora):
    losses, grads = _losses_and_gradients(preset, False, jit_compile, lora)
    remat_losses, remat_grads = _losses_and_gradients(preset, True, jit_compile, lora)
    np.testing.assert_allclose(remat_losses, losses, rtol=1e-6)
    assert len(remat_grads) == len(grads) > 0
    scale = max(float(np.abs(g).max()) for g in grads)
    assert scale > 0
    for g, r in zip(grads, remat_grads):
        np.testing.assert_allclose(r, g, rtol=1e-4, atol=1e-5 * scale)


def test_remat_is_not_saved_and_inference_is_unchanged(tmp_path):
    backbone = Backbone.from_preset("gpt2_tiny_en")
    x = {"token_ids": np.array([[5, 6, 7]]), "padding_mask": np.array([[1, 1, 1]])}
    before = np.asarray(backbone(x))
    backbone.enable_remat()
    backbone.enable_remat()  # idempotent
    assert backbone.remat_enabled
    np.testing.assert_array_equal(np.asarray(backbone(x)), before)
    assert "remat" not in backbone.get_config()
    backbone.save_to_preset(tmp_path / "p")
    assert not Backbone.from_preset(tmp_path / "p").remat_enabled
