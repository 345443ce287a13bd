"""Converting a keras-hub GPT-2 preset (`keras_hub>GPT2Backbone`).

Layout facts (read from presets keras-hub saves): top-level layers
`reversible_embedding` (tokens, tied output), `position_embedding`,
`transformer_decoder[_i]` (pre-norm: `_self_attention_layer_norm`,
`_self_attention_layer/{query,key,value,output}_dense` with per-head kernels,
`_feedforward_layer_norm`, `_feedforward_{intermediate,output}_dense`) and the
final `layer_normalization`. keras-hub's GPT-2 uses the tanh GELU and LayerNorm
epsilon 1e-5 (not in its config), as ours does by default. The tokenizer is
byte-level BPE from `assets/tokenizer/vocabulary.json` + `merges.txt`.
"""

from backbones.gpt2.tokenizer import END_OF_TEXT, byte_level_bpe
from backbones.formats.keras_hub import layer_name, tokenizer_asset, tokenizer_config
from backbones.registry import register_keras_hub_converter
from backbones.tokenizer import Tokenizer

_CONFIG_KEYS = ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
                "dropout", "max_sequence_length")


@register_keras_hub_converter("GPT2Backbone")
class GPT2KerasHubConverter:
    backbone_class = "GPT2Backbone"

    @staticmethod
    def convert_config(config):
        # keras-hub's GPT-2 constructor arguments are ours, by the same names.
        return {key: config[key] for key in _CONFIG_KEYS if key in config}

    @staticmethod
    def convert_weights(backbone, reader, config):
        reader.put_layer(backbone.token_embedding, "reversible_embedding")
        reader.put_layer(backbone.position_embedding, "position_embedding")
        for i, block in enumerate(backbone.transformer_layers):
            name, attn = layer_name("transformer_decoder", i), block.self_attention
            reader.put_layer(block.attention_norm, f"{name}/_self_attention_layer_norm")
            reader.put_attention(attn, f"{name}/_self_attention_layer")
            reader.put_layer(block.ffn_norm, f"{name}/_feedforward_layer_norm")
            reader.put_layer(block.ffn_intermediate, f"{name}/_feedforward_intermediate_dense")
            reader.put_layer(block.ffn_output, f"{name}/_feedforward_output_dense")
        reader.put_layer(backbone.layer_norm, "layer_normalization")

    @staticmethod
    def convert_tokenizer(directory):
        """Byte-level BPE from `assets/tokenizer/{vocabulary.json, merges.txt}`."""
        return Tokenizer(keras_hub_byte_level_bpe(directory, [END_OF_TEXT]),
                         {"bos": END_OF_TEXT, "eos": END_OF_TEXT})


def keras_hub_byte_level_bpe(directory, default_unsplittable):
    """The `tokenizers.Tokenizer` of a keras-hub `BytePairTokenizer` preset (GPT-2, Llama 3).

    Reads `assets/tokenizer/{vocabulary.json, merges.txt}` and tokenizer.json's
    `add_prefix_space` and `unsplittable_tokens` (`default_unsplittable` if
    absent), which stay whole in text, as in keras-hub.
    """
    from tokenizers import pre_tokenizers

    _, config = tokenizer_config(directory)
    bpe = byte_level_bpe(str(tokenizer_asset(directory, "vocabulary.json")),
                         str(tokenizer_asset(directory, "merges.txt")))
    if config.get("add_prefix_space"):
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.add_special_tokens([t for t in config.get("unsplittable_tokens") or default_unsplittable
                            if bpe.token_to_id(t) is not None])
    return bpe
