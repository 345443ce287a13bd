"""Converting a transformers GPT-2 checkpoint (`model_type: gpt2`).

Weight layout facts: GPT-2 uses Conv1D, whose weight is `(in, out)` like a
Keras Dense kernel; `c_attn` packs query, key and value along its output axis.
"""

from pathlib import Path

import numpy as np

from backbones.errors import ConversionError
from backbones.hf_checkpoint import assign
from backbones.registry import register_converter
from backbones.tokenizer import Tokenizer


@register_converter("gpt2")
class GPT2Converter:
    backbone_class = "GPT2Backbone"
    # Causal-mask buffers of old checkpoints, and the LM head tied to wte.
    ignored_tensors = (".attn.bias", ".attn.masked_bias", "lm_head.weight")

    @staticmethod
    def convert_config(hf):
        activation = hf.get("activation_function", "gelu_new")
        if activation not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            raise ConversionError(
                f"GPT-2 checkpoint uses activation_function={activation!r}; only the tanh "
                "GELU of GPT-2 (gelu_new) is supported."
            )
        if hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
            raise ConversionError("GPT-2 checkpoint uses non-standard attention scaling; not supported.")
        return {
            "vocabulary_size": hf["vocab_size"],
            "num_layers": hf["n_layer"],
            "num_heads": hf["n_head"],
            "hidden_dim": hf["n_embd"],
            "intermediate_dim": hf.get("n_inner") or 4 * hf["n_embd"],
            "dropout": hf.get("resid_pdrop", 0.1),
            "max_sequence_length": hf["n_positions"],
            "layer_norm_epsilon": hf.get("layer_norm_epsilon", 1e-5),
        }

    @staticmethod
    def convert_weights(backbone, reader, hf):
        prefix = "transformer." if "transformer.wte.weight" in reader else ""

        def put(variable, name, transform=None):
            value = reader.get(prefix + name)
            assign(variable, transform(value) if transform else value, prefix + name)

        def put_norm(layer, name):
            put(layer.gamma, f"{name}.weight")
            put(layer.beta, f"{name}.bias")

        put(backbone.token_embedding.embeddings, "wte.weight")
        put(backbone.position_embedding.embeddings, "wpe.weight")
        for i, block in enumerate(backbone.transformer_layers):
            attn = block.self_attention
            put_norm(block.attention_norm, f"h.{i}.ln_1")
            qkv_kernel = np.split(reader.get(f"{prefix}h.{i}.attn.c_attn.weight"), 3, axis=-1)
            qkv_bias = np.split(reader.get(f"{prefix}h.{i}.attn.c_attn.bias"), 3, axis=-1)
            for layer, kernel, bias in zip((attn.query, attn.key, attn.value), qkv_kernel, qkv_bias):
                assign(layer.kernel, kernel, f"{prefix}h.{i}.attn.c_attn.weight")
                assign(layer.bias, bias, f"{prefix}h.{i}.attn.c_attn.bias")
            put(attn.attention_output.kernel, f"h.{i}.attn.c_proj.weight")
            put(attn.attention_output.bias, f"h.{i}.attn.c_proj.bias")
            put_norm(block.ffn_norm, f"h.{i}.ln_2")
            put(block.ffn_intermediate.kernel, f"h.{i}.mlp.c_fc.weight")
            put(block.ffn_intermediate.bias, f"h.{i}.mlp.c_fc.bias")
            put(block.ffn_output.kernel, f"h.{i}.mlp.c_proj.weight")
            put(block.ffn_output.bias, f"h.{i}.mlp.c_proj.bias")
        put_norm(backbone.layer_norm, "ln_f")

    @staticmethod
    def convert_tokenizer(directory):
        """Byte-level BPE from `vocab.json` + `merges.txt` when there is no tokenizer.json."""
        directory = Path(directory)
        if not (directory / "vocab.json").exists() or not (directory / "merges.txt").exists():
            return None
        from backbones.gpt2.tokenizer import byte_level_bpe

        bpe = byte_level_bpe(str(directory / "vocab.json"), str(directory / "merges.txt"))
        return Tokenizer(bpe, {"bos": "<|endoftext|>", "eos": "<|endoftext|>"})
