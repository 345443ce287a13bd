"""Converting a keras-hub Llama preset (`keras_hub>LlamaBackbone`, Llama 3's `keras_hub>Llama3Backbone`).

Layout facts (read from presets keras-hub saves): top-level layers
`reversible_embedding` (`vars/0` the token embeddings; `vars/1`, present when
untied, the output embedding `(hidden, vocabulary)`, our `output_embedding`
kernel), `llama_transformer_decoder[_i]` (`_self_attention_layernorm`,
`_self_attention_layer/_{query,key,value,output}_dense` with per-head kernels
and no biases, `_feedforward_layernorm`, `_feedforward_{gate,intermediate,output}_dense`)
and the final `llama_layer_norm`. keras-hub 0.32 does not save
`tie_word_embeddings` in config.json: whether `vars/1` is stored decides it.
keras-hub's `Llama3Backbone` is a `LlamaBackbone` subclass with the same
config and weights; it loads as our `LlamaBackbone`.

Tokenizers, by tokenizer.json's class: `LlamaTokenizer` is SentencePiece
(`assets/tokenizer/vocabulary.spm`); `Llama3Tokenizer` is byte-level BPE
(`vocabulary.json` + `merges.txt`, `unsplittable_tokens` in its config),
pre-split as GPT-2's (as keras-hub's BytePairTokenizer does, roughly: this is not
Llama 3's own pattern, e.g. digit runs are not cut in threes). Known
differences from keras-hub, measured: a run of spaces before a word
(`"  hello"`) can come out `Ġ` + `Ġhello` here, `ĠĠ` + `hello` in keras-hub;
SentencePiece control tokens written in the text (`"<s>"`) are that token
here, characters in keras-hub (see `backbones/common/sentencepiece.py`). Special-token roles are keras-hub's: `<s>`/`</s>` (Llama 2) or
`<|begin_of_text|>`/`<|end_of_text|>` (Llama 3) as bos/eos, and pad is id 0
(keras-hub's `pad_token_id`) in both.
"""

from backbones.common.sentencepiece import tokenizer_from_spm
from backbones.errors import ConversionError, PresetFormatError
from backbones.gpt2.convert_keras_hub import keras_hub_byte_level_bpe
from backbones.formats.keras_hub import layer_name, tokenizer_asset, tokenizer_config, var
from backbones.registry import register_keras_hub_converter
from backbones.tokenizer import Tokenizer

# keras-hub Llama3Tokenizer's defaults (tokenizer.json does not store bos/eos).
LLAMA3_BOS, LLAMA3_EOS = "<|begin_of_text|>", "<|end_of_text|>"
LLAMA3_UNSPLITTABLE = [LLAMA3_BOS, LLAMA3_EOS, "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]


@register_keras_hub_converter("Llama3Backbone")
@register_keras_hub_converter("LlamaBackbone")
class LlamaKerasHubConverter:
    backbone_class = "LlamaBackbone"

    @staticmethod
    def convert_config(config):
        kwargs = {key: config[key] for key in ("vocabulary_size", "num_layers", "num_query_heads",
                                                "num_key_value_heads", "hidden_dim", "intermediate_dim",
                                                "layer_norm_epsilon", "dropout") if key in config}
        kwargs["rope_theta"] = float(config.get("rope_max_wavelength", 10000))
        kwargs["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", False))  # see config_from_weights
        if (config.get("rope_position_scaling_factor") or 1.0) != 1.0:
            # Measured: keras-hub 0.32's Llama rotary layer ignores this factor, so
            # applying it would not reproduce keras-hub's outputs and ignoring it
            # would not do what the config says.
            raise ConversionError(
                f"keras-hub Llama config has rope_position_scaling_factor="
                f"{config['rope_position_scaling_factor']}, which keras-hub itself ignores; "
                "not supported. Load the model from its Hugging Face checkpoint instead.")
        if config.get("rope_frequency_adjustment_factor") is not None:  # Llama 3.1+ scaling
            kwargs.update(rope_scaling_type="llama3",
                          rope_scaling_factor=float(config["rope_frequency_adjustment_factor"]),
                          rope_low_freq_factor=float(config["rope_low_freq_factor"]),
                          rope_high_freq_factor=float(config["rope_high_freq_factor"]),
                          rope_original_max_position_embeddings=int(config["rope_pretraining_sequence_length"]))
        return kwargs

    @staticmethod
    def config_from_weights(reader):
        # Untied presets store the output embedding as vars/1; tied ones do not.
        return {"tie_word_embeddings": var("reversible_embedding", 1) not in reader}

    @staticmethod
    def convert_weights(backbone, reader, config):
        reader.put(backbone.token_embedding.embeddings, var("reversible_embedding", 0))
        if backbone.output_embedding is not None:
            reader.put(backbone.output_embedding.kernel, var("reversible_embedding", 1))
        for i, block in enumerate(backbone.transformer_layers):
            name, attn = layer_name("llama_transformer_decoder", i), block.self_attention
            reader.put_layer(block.attention_norm, f"{name}/_self_attention_layernorm")
            reader.put_attention(attn, f"{name}/_self_attention_layer", prefix="_")
            reader.put_layer(block.ffn_norm, f"{name}/_feedforward_layernorm")
            reader.put_layer(block.ffn_gate, f"{name}/_feedforward_gate_dense")
            reader.put_layer(block.ffn_intermediate, f"{name}/_feedforward_intermediate_dense")
            reader.put_layer(block.ffn_output, f"{name}/_feedforward_output_dense")
        reader.put_layer(backbone.layer_norm, "llama_layer_norm")

    @staticmethod
    def convert_tokenizer(directory):
        """SentencePiece (`LlamaTokenizer`) or byte-level BPE (`Llama3Tokenizer`); see the module doc."""
        class_name, config = tokenizer_config(directory)
        if class_name == "LlamaTokenizer":
            path = tokenizer_asset(directory, "vocabulary.spm")
            tokenizer = tokenizer_from_spm(path)
            return _with_pad_id_0(tokenizer, {"bos": "<s>", "eos": "</s>"}, path)
        if class_name == "Llama3Tokenizer":
            bpe = keras_hub_byte_level_bpe(directory, LLAMA3_UNSPLITTABLE)
            roles = {"bos": config.get("bos_token", LLAMA3_BOS), "eos": config.get("eos_token", LLAMA3_EOS)}
            return _with_pad_id_0(Tokenizer(bpe), roles, tokenizer_asset(directory, "vocabulary.json"))
        raise PresetFormatError(
            f"{directory}/tokenizer.json is a keras-hub {class_name!r}; a Llama preset's tokenizer "
            "converts from LlamaTokenizer or Llama3Tokenizer only.")


def _with_pad_id_0(tokenizer, roles, path):
    """`tokenizer` with `roles` and pad = the token of id 0, as keras-hub's Llama tokenizers."""
    pad = tokenizer.tokenizer.id_to_token(0)
    if pad is None:
        raise PresetFormatError(f"{path} has no token of id 0 (keras-hub's Llama pad id).")
    return Tokenizer(tokenizer.tokenizer, {**tokenizer.special_tokens, **roles, "pad": pad})
