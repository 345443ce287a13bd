"""Converting transformers checkpoints laid out like Llama (Llama, Mistral,
Qwen2, Gemma): the rotary config and the decoder tensors.

Weight layout facts: torch `Linear.weight` is `(out, in)`, the transpose of
a Keras Dense kernel; tensors are prefixed `model.` in `*ForCausalLM`
checkpoints and not in bare `*Model` ones; RMS norm weights are stored as
`scale` (Gemma stores w of its `1 + w`, which is what our layer holds).
"""

import numpy as np

from backbones.errors import ConversionError
from backbones.hf_checkpoint import assign

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


def convert_decoder_weights(backbone, reader, prefix):
    """Token embedding, every `GatedDecoderBlock` and the final norm."""

    def put(variable, name, transpose=False):
        value = reader.get(prefix + name)
        assign(variable, value.T if transpose else value, prefix + name)

    def put_dense(layer, name):
        put(layer.kernel, f"{name}.weight", transpose=True)
        if layer.use_bias:
            put(layer.bias, f"{name}.bias")

    put(backbone.token_embedding.embeddings, "embed_tokens.weight")
    for i, block in enumerate(backbone.transformer_layers):
        attn, hf = block.self_attention, f"layers.{i}"
        put(block.attention_norm.scale, f"{hf}.input_layernorm.weight")
        put_dense(attn.query, f"{hf}.self_attn.q_proj")
        put_dense(attn.key, f"{hf}.self_attn.k_proj")
        put_dense(attn.value, f"{hf}.self_attn.v_proj")
        put_dense(attn.attention_output, f"{hf}.self_attn.o_proj")
        put(block.ffn_norm.scale, f"{hf}.post_attention_layernorm.weight")
        put_dense(block.ffn_gate, f"{hf}.mlp.gate_proj")
        put_dense(block.ffn_intermediate, f"{hf}.mlp.up_proj")
        put_dense(block.ffn_output, f"{hf}.mlp.down_proj")
    put(backbone.layer_norm.scale, "norm.weight")


def check_tied_head(reader, prefix):
    """A tied checkpoint may still store `lm_head.weight`: it must equal the embeddings."""
    if "lm_head.weight" not in reader:
        return
    if not np.array_equal(reader.get("lm_head.weight"), reader.get(prefix + "embed_tokens.weight")):
        raise ConversionError(
            "The checkpoint's config.json says tie_word_embeddings=true, but its lm_head.weight "
            "differs from embed_tokens.weight: set tie_word_embeddings=false in config.json.")
