"""Converting a keras-hub Llama preset (`keras_hub>LlamaBackbone`); weights and config only.

Layout facts (read from presets keras-hub saves): top-level layers
`reversible_embedding` (`vars/0` the token embeddings; `vars/1`, present when
untied, the output embedding `(hidden, vocabulary)`, our `output_embedding`
kernel), `llama_transformer_decoder[_i]` (`_self_attention_layernorm`,
`_self_attention_layer/_{query,key,value,output}_dense` with per-head kernels
and no biases, `_feedforward_layernorm`, `_feedforward_{gate,intermediate,output}_dense`)
and the final `llama_layer_norm`. keras-hub 0.32 does not save
`tie_word_embeddings` in config.json: whether `vars/1` is stored decides it.
The tokenizer (SentencePiece) is left to a later converter: the backbone loads
with `tokenizer=None`.
"""

from backbones.errors import ConversionError
from backbones.keras_hub_preset import layer_name
from backbones.registry import register_keras_hub_converter


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
        return {"tie_word_embeddings": not reader.has("reversible_embedding", 1)}

    @staticmethod
    def convert_weights(backbone, reader, config):
        reader.put(backbone.token_embedding.embeddings, "reversible_embedding", 0)
        if backbone.output_embedding is not None:
            reader.put(backbone.output_embedding.kernel, "reversible_embedding", 1)
        for i, block in enumerate(backbone.transformer_layers):
            name, attn = layer_name("llama_transformer_decoder", i), block.self_attention
            reader.put_layer(block.attention_norm, f"{name}/_self_attention_layernorm")
            for ours, theirs in ((attn.query, "_query_dense"), (attn.key, "_key_dense"),
                                 (attn.value, "_value_dense"), (attn.attention_output, "_output_dense")):
                reader.put_layer(ours, f"{name}/_self_attention_layer/{theirs}", merge_heads=True)
            reader.put_layer(block.ffn_norm, f"{name}/_feedforward_layernorm")
            reader.put_layer(block.ffn_gate, f"{name}/_feedforward_gate_dense")
            reader.put_layer(block.ffn_intermediate, f"{name}/_feedforward_intermediate_dense")
            reader.put_layer(block.ffn_output, f"{name}/_feedforward_output_dense")
        reader.put_layer(backbone.layer_norm, "llama_layer_norm")
