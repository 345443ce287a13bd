"""LoRA on the base class: trainable set, scaling, adapter file and its errors."""

import numpy as np
import pytest

from backbones import Backbone, GPT2Backbone
from backbones.errors import LoRAError
from tests.helpers import randomize_lora

X = {"token_ids": np.array([[5, 6, 7, 8]]), "padding_mask": np.array([[1, 1, 1, 1]])}
SMALL = dict(vocabulary_size=32, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16)


def test_alpha_scales_the_update():
    base = GPT2Backbone(**SMALL)
    weights = base.get_weights()
    outs = {}
    for alpha in (4, 8):
        model = GPT2Backbone(**SMALL)
        model.set_weights(weights)
        model.enable_lora(4, alpha=alpha)
        randomize_lora(model)
        outs[alpha] = model(X).numpy()
    layer = model.transformer_layers[0].self_attention.query  # alpha 8 / rank 4: scale 2
    x = np.ones((1, 8), "float32")
    expected = x @ (layer._kernel.numpy() + 2.0 * layer.lora_kernel_a.numpy() @ layer.lora_kernel_b.numpy()) + layer.bias.numpy()
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(outs[4], outs[8])


def test_bad_requests():
    model = GPT2Backbone(**SMALL)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(LoRAError, match="rank"):
            model.enable_lora(bad)
    with pytest.raises(LoRAError, match="alpha"):
        model.enable_lora(4, alpha=0)
    with pytest.raises(LoRAError, match="'qkv'.*choose from"):
        model.enable_lora(4, targets=["qkv"])
    model.enable_lora(4)
    with pytest.raises(LoRAError, match="already enabled"):
        model.enable_lora(4)


def test_adapter_file_errors(tmp_path):
    model = GPT2Backbone(**SMALL)
    model.enable_lora(4)
    path = tmp_path / "a.lora.safetensors"
    with pytest.raises(LoRAError, match="not enabled"):
        GPT2Backbone(**SMALL).save_lora_weights(path)
    model.save_lora_weights(path)
    assert path.stat().st_size < 20_000

    other_rank = GPT2Backbone(**SMALL)
    other_rank.enable_lora(8)
    with pytest.raises(LoRAError, match="rank=4.*rank=8"):
        other_rank.load_lora_weights(path)
    with pytest.raises(LoRAError, match="another architecture"):
        GPT2Backbone(**{**SMALL, "num_layers": 3}).load_lora_weights(path)
    with pytest.raises(LoRAError, match="does not exist"):
        GPT2Backbone(**SMALL).load_lora_weights(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LoRAError, match="not a LoRA file"):
        GPT2Backbone(**SMALL).load_lora_weights(tmp_path / "junk.safetensors")


def test_adapter_keys_are_layer_paths(tmp_path):
    from safetensors import safe_open

    model = Backbone.from_preset("gpt2_tiny_en")
    model.enable_lora(2, alpha=16, targets=["query", "value", "ffn"])
    model.save_lora_weights(tmp_path / "a.safetensors")
    with safe_open(str(tmp_path / "a.safetensors"), framework="numpy") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert "transformer_layer_1/self_attention/value/lora_b" in keys
    assert "transformer_layer_0/ffn_output/lora_a" in keys
    assert len(keys) == 2 * 2 * 4
    assert (meta["rank"], meta["alpha"], meta["backbone_class"]) == ("2", "16.0", "GPT2Backbone")

    fresh = Backbone.from_preset("gpt2_tiny_en")
    fresh.load_lora_weights(tmp_path / "a.safetensors")  # enables LoRA with the stored settings
    assert fresh.lora_spec == model.lora_spec
