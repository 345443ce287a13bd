import numpy as np
import pytest

from backbones.llama import LlamaBackbone
from tests.backbones.common.decoder_checks import (
    IDS, MASK, perturb, run_cache_test, run_causal_lm_parity_test, run_sharded_checkpoint_test,
)
from tests.helpers import check_converter_errors, check_tiny_preset_rebuilds, run_backbone_test, run_hf_parity_test

SMALL = dict(vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=16,
             intermediate_dim=32)
INPUTS = {"token_ids": np.array([[3, 9, 4, 1, 7, 2], [5, 8, 6, 0, 0, 0]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], "int32")}


def test_backbone_contract(tmp_path):
    run_backbone_test(LlamaBackbone, SMALL, INPUTS, (2, 6, 16), tmp_path,
                      lora_targets=["key", "attention_output", "ffn"])


def hf_config(model_type="llama", **overrides):
    import transformers

    config_class = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
                    "qwen2": transformers.Qwen2Config}[model_type]
    return config_class(**{**dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
                           **overrides})


def hf_causal_lm(config):
    import torch
    import transformers

    torch.manual_seed(0)
    return perturb(transformers.AutoModelForCausalLM.from_config(config))


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
SHAPES = {
    "llama2_gqa_untied": hf_config,
    "llama3_rope_scaling_tied": lambda: hf_config(rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True),
    "llama_head_dim_bias": lambda: hf_config(head_dim=16, attention_bias=True),
    "mistral_sliding_window": lambda: hf_config("mistral", sliding_window=3),
    "qwen2_qkv_bias": lambda: hf_config("qwen2", tie_word_embeddings=True),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_causal_lm_parity_with_transformers(shape, tmp_path):
    backbone, hidden_error, logits_error = run_causal_lm_parity_test(hf_causal_lm(SHAPES[shape]()), tmp_path)
    print(f"{shape} parity max abs error: hidden {hidden_error:.2e}, logits {logits_error:.2e}")
    assert (backbone.output_embedding is None) == backbone.tie_word_embeddings


def test_parity_with_bare_llama_model(tmp_path):
    """LlamaModel checkpoints have no `model.` prefix and no lm_head: untied, the
    output embedding stays random, with a warning."""
    import transformers

    model = perturb(transformers.LlamaModel(hf_config()))
    with pytest.warns(UserWarning, match="output_embedding keeps its random initial weights"):
        error = run_hf_parity_test(model, IDS, MASK, tmp_path)
    print(f"bare LlamaModel parity max abs error: {error:.2e}")


def test_hub_config_with_legacy_rope_keys():
    """Hub configs (transformers 4) keep `rope_theta` and `rope_scaling` at top level."""
    from backbones.llama.convert_hf import LlamaConverter

    llama31_8b = {  # meta-llama/Llama-3.1-8B config.json, abridged
        "model_type": "llama", "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
        "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 32,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": False,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "vocab_size": 128256,
    }
    kwargs = LlamaConverter.convert_config(llama31_8b)
    assert kwargs == {**kwargs, "rope_theta": 500000.0, "rope_scaling_type": "llama3", "rope_scaling_factor": 8.0,
                      "rope_original_max_position_embeddings": 8192, "num_key_value_heads": 8, "head_dim": 128,
                      "layer_norm_epsilon": 1e-05, "tie_word_embeddings": False}


def test_cache_matches_full_forward():
    run_cache_test(LlamaBackbone(**SMALL))
    run_cache_test(LlamaBackbone(**SMALL, sliding_window=2, attention_bias=True))


def test_sharded_checkpoint_loads_identically(tmp_path):
    one, sharded = run_sharded_checkpoint_test(hf_causal_lm(hf_config()), tmp_path)
    np.testing.assert_array_equal(one.output_embedding.kernel.numpy(), sharded.output_embedding.kernel.numpy())


def test_converter_errors(tmp_path):
    check_converter_errors(hf_causal_lm(hf_config()), tmp_path, [
        ({"num_hidden_layers": 2}, "unexpected tensor"),  # layers.2.* left over
        ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "rope_parameters.rope_type='yarn'"),
    ], ("lm_head.weight", "'lm_head.weight' is missing"))


def test_tiny_preset_is_reproducible(tmp_path):
    """scripts/make_tiny_presets.py rebuilds the bundled preset bit for bit."""
    check_tiny_preset_rebuilds("llama", "llama_tiny_en", tmp_path, special_token_ids={"unk": 0, "bos": 1, "eos": 2, "pad": 3})


def test_builtin_presets_listed():
    presets = LlamaBackbone.presets
    assert {"llama_tiny_en", "llama2_7b_en", "llama3_8b_en", "llama3_instruct_8b_en", "llama3.2_1b",
            "mistral_7b_en", "qwen2.5_0.5b_en"} <= set(presets)
    assert presets["llama3_8b_en"]["handle"] == "hf://meta-llama/Meta-Llama-3-8B"
