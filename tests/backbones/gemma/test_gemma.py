import numpy as np

from backbones.gemma import GemmaBackbone
from tests.backbones.common.decoder_checks import (
    IDS, MASK, perturb, run_cache_test, run_causal_lm_parity_test, run_sharded_checkpoint_test,
)
from tests.helpers import check_converter_errors, check_tiny_preset_rebuilds, run_backbone_test, run_hf_parity_test

SMALL = dict(vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=1, hidden_dim=16,
             intermediate_dim=32, head_dim=8)
INPUTS = {"token_ids": np.array([[3, 9, 4, 1, 7, 2], [5, 8, 6, 0, 0, 0]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], "int32")}


def test_backbone_contract(tmp_path):
    run_backbone_test(GemmaBackbone, SMALL, INPUTS, (2, 6, 16), tmp_path,
                      lora_targets=["key", "attention_output", "ffn"])


def hf_config(**overrides):
    import transformers

    return transformers.GemmaConfig(**{**dict(vocab_size=99, hidden_size=32, intermediate_size=48,
                                              num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                                              head_dim=16, max_position_embeddings=64), **overrides})


def hf_causal_lm(config):
    import torch
    import transformers

    torch.manual_seed(0)
    return perturb(transformers.GemmaForCausalLM(config))


def test_causal_lm_parity_mqa_wide_heads(tmp_path):
    """Gemma 2B's shape: one key/value head, head_dim (16) != hidden / heads (8)."""
    _, hidden_error, logits_error = run_causal_lm_parity_test(hf_causal_lm(hf_config()), tmp_path)
    print(f"gemma_mqa_head_dim16 parity max abs error: hidden {hidden_error:.2e}, logits {logits_error:.2e}")


def test_parity_with_bare_gemma_model_mha(tmp_path):
    """Gemma 7B's shape (multi-head), from a GemmaModel checkpoint (no `model.` prefix)."""
    import transformers

    model = perturb(transformers.GemmaModel(hf_config(num_key_value_heads=4, head_dim=8, rope_theta=500.0)))
    error = run_hf_parity_test(model, IDS, MASK, tmp_path)
    print(f"bare GemmaModel (MHA) parity max abs error: {error:.2e}")


def test_hub_config_converts():
    """google/gemma-2b's config.json (transformers 4): legacy "gelu" means the tanh GELU."""
    from backbones.gemma.convert_hf import GemmaConverter

    gemma_2b = {"model_type": "gemma", "head_dim": 256, "hidden_act": "gelu", "hidden_size": 2048,
                "intermediate_size": 16384, "max_position_embeddings": 8192, "num_attention_heads": 8,
                "num_hidden_layers": 18, "num_key_value_heads": 1, "rms_norm_eps": 1e-06,
                "rope_scaling": None, "rope_theta": 10000.0, "vocab_size": 256000}
    assert GemmaConverter.convert_config(gemma_2b) == {
        "vocabulary_size": 256000, "num_layers": 18, "num_query_heads": 8, "num_key_value_heads": 1,
        "hidden_dim": 2048, "intermediate_dim": 16384, "head_dim": 256, "layer_norm_epsilon": 1e-06,
        "rope_theta": 10000.0, "max_sequence_length": 8192, "dropout": 0.0}


def test_cache_matches_full_forward():
    run_cache_test(GemmaBackbone(**SMALL))


def test_sharded_checkpoint_loads_identically(tmp_path):
    run_sharded_checkpoint_test(hf_causal_lm(hf_config()), tmp_path)


def test_converter_errors(tmp_path):
    check_converter_errors(hf_causal_lm(hf_config()), tmp_path, [
        ({"hidden_act": "silu"}, "hidden_act='silu'"),
        ({"num_hidden_layers": 2}, "unexpected tensor"),  # layers.2.* left over
    ], ("model.layers.1.self_attn.k_proj.weight", "k_proj.weight' is missing"))


def test_tiny_preset_is_reproducible(tmp_path):
    """scripts/make_tiny_presets.py rebuilds the bundled preset bit for bit."""
    check_tiny_preset_rebuilds("gemma", "gemma_tiny_en", tmp_path, special_token_ids={"pad": 0, "eos": 1, "bos": 2, "unk": 3})


def test_builtin_presets_listed():
    presets = GemmaBackbone.presets
    assert {"gemma_tiny_en", "gemma_2b_en", "gemma_instruct_2b_en", "gemma_7b_en", "gemma_instruct_7b_en"} <= set(presets)
    assert presets["gemma_2b_en"]["handle"] == "hf://google/gemma-2b"
