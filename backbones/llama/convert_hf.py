"""Converting transformers Llama, Mistral and Qwen2 checkpoints to `LlamaBackbone`.

The three share Llama's tensor layout (see backbones/common/convert_hf.py);
Mistral adds a sliding window, Qwen2 biases on the query/key/value
projections. `lm_head.weight` is our `output_embedding` kernel, transposed,
when the embeddings are untied.
"""

import warnings

from backbones.common.convert_hf import (check_tied_head, checkpoint_prefix, convert_decoder_weights, decoder_table,
                                         export_rope, rope_kwargs)
from backbones.errors import ConversionError
from backbones import weight_table
from backbones.registry import register_converter
from backbones.weight_table import LINEAR, Entry


@register_converter("llama")
class LlamaConverter:
    backbone_class = "LlamaBackbone"
    model_type = "llama"
    # Rotary frequencies, which old checkpoints saved as buffers.
    ignored_tensors = ("rotary_emb.inv_freq",)
    # Roles LlamaTokenizer implies when tokenizer_config.json omits them (Llama 2,
    # Mistral); used only if the token is in the vocabulary (not in Llama 3's).
    default_special_tokens = {"bos": "<s>", "eos": "</s>", "unk": "<unk>"}

    @classmethod
    def convert_config(cls, hf):
        if hf.get("hidden_act", "silu") != "silu":
            raise ConversionError(
                f"{cls.model_type} checkpoint has hidden_act={hf['hidden_act']!r}; only 'silu' (SwiGLU) is supported.")
        if hf.get("mlp_bias"):
            raise ConversionError(f"{cls.model_type} checkpoint has mlp_bias=true; not supported.")
        heads = hf["num_attention_heads"]
        return {
            "vocabulary_size": hf["vocab_size"],
            "num_layers": hf["num_hidden_layers"],
            "num_query_heads": heads,
            "num_key_value_heads": hf.get("num_key_value_heads") or heads,
            "hidden_dim": hf["hidden_size"],
            "intermediate_dim": hf["intermediate_size"],
            "head_dim": hf.get("head_dim") or hf["hidden_size"] // heads,
            **rope_kwargs(hf, cls.model_type),
            "layer_norm_epsilon": hf.get("rms_norm_eps", 1e-6),
            "tie_word_embeddings": bool(hf.get("tie_word_embeddings", False)),
            "max_sequence_length": hf.get("max_position_embeddings", 4096),
            "dropout": hf.get("attention_dropout", 0.0),
            **cls.variant_kwargs(hf),
        }

    @staticmethod
    def variant_kwargs(hf):
        bias = bool(hf.get("attention_bias", False))
        return {"attention_bias": bias, "attention_output_bias": bias}

    @staticmethod
    def lm_head(backbone):
        """The untied output embedding's entry (`lm_head.weight`, outside the `model.` prefix), or None."""
        if backbone.output_embedding is None:
            return None
        return Entry("lm_head.weight", ((backbone.output_embedding, "kernel"),), LINEAR, prefixed=False)

    @classmethod
    def convert_weights(cls, backbone, reader, hf):
        prefix = checkpoint_prefix(reader)
        convert_decoder_weights(backbone, reader, prefix)
        head = cls.lm_head(backbone)
        if head is None:
            check_tied_head(reader, prefix)
        elif "lm_head.weight" in reader or prefix:
            # a causal-LM checkpoint without its head: ConversionError naming it
            weight_table.load([head], reader, prefix)
        else:
            warnings.warn(
                f"{reader.directory} is a bare model checkpoint (no lm_head.weight) with untied "
                "embeddings: output_embedding keeps its random initial weights, so compute_logits "
                "is meaningless until trained. The hidden states are converted.", stacklevel=2)

    # -- export -----------------------------------------------------------
    weight_table = staticmethod(decoder_table)

    @staticmethod
    def export_model_type(backbone):
        """Which of the three layouts a `LlamaBackbone` is: a sliding window is
        Mistral's, biases on query/key/value only are Qwen2's."""
        if backbone.sliding_window is not None:
            if backbone.attention_bias:
                return None
            return "mistral"
        if backbone.attention_bias and not backbone.attention_output_bias:
            return "qwen2"
        if backbone.attention_bias != backbone.attention_output_bias:
            return None
        return "llama"

    @staticmethod
    def export_config(backbone):
        config = {
            "vocab_size": backbone.vocabulary_size, "num_hidden_layers": backbone.num_layers,
            "num_attention_heads": backbone.num_query_heads, "num_key_value_heads": backbone.num_key_value_heads,
            "hidden_size": backbone.hidden_dim, "intermediate_size": backbone.intermediate_dim,
            "head_dim": backbone.head_dim, "rms_norm_eps": backbone.layer_norm_epsilon,
            "max_position_embeddings": backbone.max_sequence_length, "attention_dropout": backbone.dropout,
            "hidden_act": "silu", "tie_word_embeddings": bool(backbone.tie_word_embeddings),
            "mlp_bias": False, **export_rope(backbone),
        }
        if backbone.sliding_window is not None:
            config["sliding_window"] = backbone.sliding_window
        else:
            config["attention_bias"] = bool(backbone.attention_bias)
        return config


@register_converter("mistral")
class MistralConverter(LlamaConverter):
    model_type = "mistral"

    @staticmethod
    def variant_kwargs(hf):
        return {"sliding_window": hf.get("sliding_window")}


@register_converter("qwen2")
class Qwen2Converter(LlamaConverter):
    model_type = "qwen2"
    default_special_tokens = {"eos": "<|endoftext|>", "pad": "<|endoftext|>"}

    @staticmethod
    def variant_kwargs(hf):
        # Qwen2 windows only some layers when use_sliding_window is set; released
        # checkpoints leave it off (their sliding_window value is then unused).
        layer_types = hf.get("layer_types") or []
        if hf.get("use_sliding_window") or "sliding_attention" in layer_types:
            raise ConversionError(
                "qwen2 checkpoint has use_sliding_window=true (per-layer sliding windows); not supported.")
        return {"attention_bias": True, "attention_output_bias": False}


# transformers class (and tensor prefix) written for each head, per layout.
for _converter, _name in ((LlamaConverter, "Llama"), (MistralConverter, "Mistral"), (Qwen2Converter, "Qwen2")):
    _converter.architectures = {"base": (f"{_name}Model", ""), "causal_lm": (f"{_name}ForCausalLM", "model."),
                                "classifier": (f"{_name}ForSequenceClassification", "model.")}
