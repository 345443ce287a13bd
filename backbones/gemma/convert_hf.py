"""Converting a transformers Gemma (v1) checkpoint (`model_type: gemma`).

Gemma uses Llama's tensor layout (see backbones/common/convert_hf.py); its
norm weights are the w of `1 + w`, its embedding scale sqrt(hidden) is not
stored, and its output embedding is always tied.
"""

from backbones.common.convert_hf import (check_tied_head, checkpoint_prefix, convert_decoder_weights, decoder_table,
                                         export_rope, rope_kwargs)
from backbones.errors import ConversionError
from backbones.registry import register_converter

# transformers reads Gemma's legacy "gelu" as the tanh approximation too.
TANH_GELU = ("gelu", "gelu_pytorch_tanh", "gelu_new")


@register_converter("gemma")
class GemmaConverter:
    backbone_class = "GemmaBackbone"
    ignored_tensors = ("rotary_emb.inv_freq",)
    default_special_tokens = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"}

    @staticmethod
    def convert_config(hf):
        for key in ("hidden_activation", "hidden_act"):
            if hf.get(key) is not None and hf[key] not in TANH_GELU:
                raise ConversionError(
                    f"gemma checkpoint has {key}={hf[key]!r}; only the tanh GELU (gelu_pytorch_tanh) is supported.")
        for key, unsupported in (("tie_word_embeddings", False), ("attention_bias", True),
                                 ("use_bidirectional_attention", True)):
            if hf.get(key) is unsupported:
                raise ConversionError(
                    f"gemma checkpoint has {key}={str(unsupported).lower()}, which Gemma v1 never has; not supported.")
        return {
            "vocabulary_size": hf["vocab_size"],
            "num_layers": hf["num_hidden_layers"],
            "num_query_heads": hf["num_attention_heads"],
            "num_key_value_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
            "hidden_dim": hf["hidden_size"],
            "intermediate_dim": hf["intermediate_size"],
            "head_dim": hf.get("head_dim", 256),
            "layer_norm_epsilon": hf.get("rms_norm_eps", 1e-6),
            **rope_kwargs(hf, "gemma", allow_scaling=False),
            "max_sequence_length": hf.get("max_position_embeddings", 8192),
            "dropout": hf.get("attention_dropout", 0.0),
        }

    @staticmethod
    def convert_weights(backbone, reader, hf):
        prefix = checkpoint_prefix(reader)
        convert_decoder_weights(backbone, reader, prefix)
        check_tied_head(reader, prefix)

    # -- export -----------------------------------------------------------
    model_type = "gemma"
    architectures = {"base": ("GemmaModel", ""), "causal_lm": ("GemmaForCausalLM", "model."),
                     "classifier": ("GemmaForSequenceClassification", "model.")}
    weight_table = staticmethod(decoder_table)

    @staticmethod
    def export_config(backbone):
        rope = export_rope(backbone)
        return {
            "vocab_size": backbone.vocabulary_size, "num_hidden_layers": backbone.num_layers,
            "num_attention_heads": backbone.num_query_heads, "num_key_value_heads": backbone.num_key_value_heads,
            "hidden_size": backbone.hidden_dim, "intermediate_size": backbone.intermediate_dim,
            "head_dim": backbone.head_dim, "rms_norm_eps": backbone.layer_norm_epsilon,
            "max_position_embeddings": backbone.max_sequence_length, "attention_dropout": backbone.dropout,
            "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
            "attention_bias": False, "tie_word_embeddings": True, **rope,
        }
