"""Converting a transformers GPT-2 checkpoint (`model_type: gpt2`).

Weight layout facts: GPT-2 uses Conv1D, whose weight is `(in, out)` like a
Keras Dense kernel; `c_attn` packs query, key and value along its output axis.
"""

from pathlib import Path

from backbones.errors import ConversionError
from backbones import weight_table
from backbones.registry import register_converter
from backbones.tokenizer import Tokenizer
from backbones.weight_table import FUSED3_BIAS, FUSED3_KERNEL, Entry, dense, norm


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
    def weight_table(backbone):
        """Our weights by transformers name (without `transformer.`). Conv1D
        weights are `(in, out)` like our kernels; `c_attn` is query, key and
        value side by side."""
        table = [Entry("wte.weight", ((backbone.token_embedding, "embeddings"),)),
                 Entry("wpe.weight", ((backbone.position_embedding, "embeddings"),))]
        for i, block in enumerate(backbone.transformer_layers):
            attn = block.self_attention
            qkv = (attn.query, attn.key, attn.value)
            table += norm(f"h.{i}.ln_1", block.attention_norm)
            table += [Entry(f"h.{i}.attn.c_attn.weight", tuple((l, "kernel") for l in qkv), FUSED3_KERNEL),
                      Entry(f"h.{i}.attn.c_attn.bias", tuple((l, "bias") for l in qkv), FUSED3_BIAS)]
            table += dense(f"h.{i}.attn.c_proj", attn.attention_output, transpose=False)
            table += norm(f"h.{i}.ln_2", block.ffn_norm)
            table += dense(f"h.{i}.mlp.c_fc", block.ffn_intermediate, transpose=False)
            table += dense(f"h.{i}.mlp.c_proj", block.ffn_output, transpose=False)
        return table + norm("ln_f", backbone.layer_norm)

    @classmethod
    def convert_weights(cls, backbone, reader, hf):
        prefix = "transformer." if "transformer.wte.weight" in reader else ""
        weight_table.load(cls.weight_table(backbone), reader, prefix)

    # -- export -----------------------------------------------------------
    model_type = "gpt2"
    architectures = {"base": ("GPT2Model", ""), "causal_lm": ("GPT2LMHeadModel", "transformer."),
                     "classifier": ("GPT2ForSequenceClassification", "transformer.")}

    @staticmethod
    def export_config(backbone):
        return {
            "vocab_size": backbone.vocabulary_size, "n_layer": backbone.num_layers, "n_head": backbone.num_heads,
            "n_embd": backbone.hidden_dim, "n_inner": backbone.intermediate_dim,
            "n_positions": backbone.max_sequence_length, "layer_norm_epsilon": backbone.layer_norm_epsilon,
            "activation_function": "gelu_new", "resid_pdrop": backbone.dropout, "embd_pdrop": backbone.dropout,
            "attn_pdrop": backbone.dropout, "tie_word_embeddings": True,
        }

    @staticmethod
    def convert_tokenizer(directory):
        """Byte-level BPE from `vocab.json` + `merges.txt` when there is no tokenizer.json."""
        directory = Path(directory)
        if not (directory / "vocab.json").exists() or not (directory / "merges.txt").exists():
            return None
        from backbones.gpt2.tokenizer import byte_level_bpe

        bpe = byte_level_bpe(str(directory / "vocab.json"), str(directory / "merges.txt"))
        return Tokenizer(bpe, {"bos": "<|endoftext|>", "eos": "<|endoftext|>"})
