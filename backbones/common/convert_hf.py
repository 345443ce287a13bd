"""Converting transformers checkpoints laid out like Llama (Llama, Mistral,
Qwen2, Gemma): the rotary config and the decoder tensors.

Weight layout facts: torch `Linear.weight` is `(out, in)`, the transpose of
a Keras Dense kernel; tensors are prefixed `model.` in `*ForCausalLM`
checkpoints and not in bare `*Model` ones; RMS norm weights are stored as
`scale` (Gemma stores w of its `1 + w`, which is what our layer holds).
"""

import numpy as np

from backbones.errors import ConversionError
from backbones import weight_table
from backbones.weight_table import Entry, dense, norm

ROPE_TYPES = {"default": None, "linear": "linear", "llama3": "llama3"}


def rope_kwargs(hf, model_type, allow_scaling=True):
    """Our `rope_*` constructor arguments from `rope_parameters` (transformers 5)
    or the older `rope_theta` + `rope_scaling` keys."""
    if hf.get("rope_parameters"):
        key, params = "rope_parameters", dict(hf["rope_parameters"])
    else:
        key, params = "rope_scaling", dict(hf.get("rope_scaling") or {})
    params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES or (rope_type != "default" and not allow_scaling):
        supported = sorted(ROPE_TYPES) if allow_scaling else ["default"]
        raise ConversionError(
            f"{model_type} checkpoint has {key}.rope_type={rope_type!r}; supported: {supported}.")
    if not isinstance(params["rope_theta"], (int, float)):
        raise ConversionError(f"{model_type} checkpoint has per-layer {key}; not supported.")
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ConversionError(f"{model_type} checkpoint has partial_rotary_factor={partial}; only 1.0 is supported.")
    kwargs = {"rope_theta": float(params["rope_theta"])}
    if rope_type != "default":
        kwargs.update(rope_scaling_type=ROPE_TYPES[rope_type], rope_scaling_factor=float(params["factor"]))
    if rope_type == "llama3":
        kwargs.update(
            rope_low_freq_factor=float(params["low_freq_factor"]),
            rope_high_freq_factor=float(params["high_freq_factor"]),
            rope_original_max_position_embeddings=int(
                params.get("original_max_position_embeddings") or hf["max_position_embeddings"]),
        )
    return kwargs


def checkpoint_prefix(reader):
    """`"model."` for `*ForCausalLM` checkpoints, `""` for bare `*Model` ones."""
    return "model." if "model.embed_tokens.weight" in reader else ""


def decoder_table(backbone):
    """Token embedding, every `GatedDecoderBlock` and the final norm, by
    transformers name (without the `model.` prefix of `*ForCausalLM`)."""
    table = [Entry("embed_tokens.weight", ((backbone.token_embedding, "embeddings"),))]
    for i, block in enumerate(backbone.transformer_layers):
        attn, hf = block.self_attention, f"layers.{i}"
        table += norm(f"{hf}.input_layernorm", block.attention_norm, "scale", None)
        for layer, name in ((attn.query, "q_proj"), (attn.key, "k_proj"), (attn.value, "v_proj"),
                            (attn.attention_output, "o_proj")):
            table += dense(f"{hf}.self_attn.{name}", layer)
        table += norm(f"{hf}.post_attention_layernorm", block.ffn_norm, "scale", None)
        for layer, name in ((block.ffn_gate, "gate_proj"), (block.ffn_intermediate, "up_proj"),
                            (block.ffn_output, "down_proj")):
            table += dense(f"{hf}.mlp.{name}", layer)
    return table + norm("norm", backbone.layer_norm, "scale", None)


def convert_decoder_weights(backbone, reader, prefix):
    """Token embedding, every `GatedDecoderBlock` and the final norm."""
    weight_table.load(decoder_table(backbone), reader, prefix)


def export_rope(backbone):
    """transformers' `rope_parameters` (and the older top-level `rope_theta`) of our rotary arguments."""
    params = {"rope_type": "default", "rope_theta": float(backbone.rope_theta)}
    scaling = getattr(backbone, "rope_scaling_type", None)
    if scaling == "linear":
        params.update(rope_type="linear", factor=float(backbone.rope_scaling_factor))
    elif scaling == "llama3":
        params.update(rope_type="llama3", factor=float(backbone.rope_scaling_factor),
                      low_freq_factor=float(backbone.rope_low_freq_factor),
                      high_freq_factor=float(backbone.rope_high_freq_factor),
                      original_max_position_embeddings=int(backbone.rope_original_max_position_embeddings))
    return {"rope_parameters": params, "rope_theta": float(backbone.rope_theta)}


def check_tied_head(reader, prefix):
    """A tied checkpoint may still store `lm_head.weight`: it must equal the embeddings."""
    if "lm_head.weight" not in reader:
        return
    if not np.array_equal(reader.get("lm_head.weight"), reader.get(prefix + "embed_tokens.weight")):
        raise ConversionError(
            "The checkpoint's config.json says tie_word_embeddings=true, but its lm_head.weight "
            "differs from embed_tokens.weight: set tie_word_embeddings=false in config.json.")
