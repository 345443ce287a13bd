"""Converting a keras-hub Gemma (v1) preset (`keras_hub>GemmaBackbone`).

Layout facts (read from presets keras-hub saves): top-level layers
`reversible_embedding` (tied), `gemma_decoder_block[_i]` (`pre_attention_norm`,
`attention/{query,key,value}_dense` with kernels `(heads, hidden, head_dim)`,
`attention/output_dense` `(heads, head_dim, hidden)`, `pre_ffw_norm`,
`gating_ffw` (gate, through the tanh GELU), `gating_ffw_2` (up), `ffw_linear`
(down)) and the final `rms_normalization`. keras-hub's `intermediate_dim` is
twice the width of each gated projection (ours is that width). Gemma 2
options (post norms, logit soft caps, sliding windows) are not supported. The
tokenizer (`GemmaTokenizer`) is SentencePiece, `assets/tokenizer/vocabulary.spm`,
with keras-hub's roles `<bos>`, `<eos>`, `<pad>`.
"""

from backbones.common.sentencepiece import tokenizer_from_spm
from backbones.errors import ConversionError
from backbones.formats.keras_hub import layer_name, tokenizer_asset, var
from backbones.registry import register_keras_hub_converter

# Options that keras-hub's GemmaBackbone uses for Gemma 2 / 3; value of Gemma v1.
_GEMMA_V1 = {"query_head_dim_normalize": True, "use_post_ffw_norm": False, "use_post_attention_norm": False,
             "attention_logit_soft_cap": None, "final_logit_soft_cap": None,
             "use_sliding_window_attention": False}


@register_keras_hub_converter("GemmaBackbone")
class GemmaKerasHubConverter:
    backbone_class = "GemmaBackbone"

    @staticmethod
    def convert_config(config):
        for key, v1 in _GEMMA_V1.items():
            if config.get(key, v1) != v1:
                raise ConversionError(
                    f"keras-hub Gemma config has {key}={config[key]!r} (a Gemma 2 / 3 option); only "
                    f"Gemma v1 ({key}={v1!r}) is supported.")
        kwargs = {key: config[key] for key in ("vocabulary_size", "num_layers", "num_query_heads",
                                                "num_key_value_heads", "hidden_dim", "head_dim",
                                                "layer_norm_epsilon", "dropout") if key in config}
        return {**kwargs, "intermediate_dim": config["intermediate_dim"] // 2}

    @staticmethod
    def convert_weights(backbone, reader, config):
        reader.put_layer(backbone.token_embedding, "reversible_embedding")
        for i, block in enumerate(backbone.transformer_layers):
            name, attn = layer_name("gemma_decoder_block", i), block.self_attention
            reader.put_layer(block.attention_norm, f"{name}/pre_attention_norm")
            for ours, theirs in ((attn.query, "query_dense"), (attn.key, "key_dense"), (attn.value, "value_dense")):
                # (heads, hidden, head_dim) -> (hidden, heads * head_dim)
                reader.put(ours.kernel, var(f"{name}/attention/{theirs}"),
                           lambda k: k.transpose(1, 0, 2).reshape(k.shape[1], -1))
            reader.put_layer(attn.attention_output, f"{name}/attention/output_dense", merge_heads=True)
            reader.put_layer(block.ffn_norm, f"{name}/pre_ffw_norm")
            reader.put_layer(block.ffn_gate, f"{name}/gating_ffw")
            reader.put_layer(block.ffn_intermediate, f"{name}/gating_ffw_2")
            reader.put_layer(block.ffn_output, f"{name}/ffw_linear")
        reader.put_layer(backbone.layer_norm, "rms_normalization")

    @staticmethod
    def convert_tokenizer(directory):
        """SentencePiece from `assets/tokenizer/vocabulary.spm`, with keras-hub's GemmaTokenizer roles."""
        return tokenizer_from_spm(tokenizer_asset(directory, "vocabulary.spm"),
                                  {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>"})
