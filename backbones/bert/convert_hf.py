"""Converting a transformers BERT checkpoint (`model_type: bert`).

Weight layout facts: torch `Linear` weights are `(out, in)`, the transpose of
a Keras Dense kernel. `BertModel` checkpoints name tensors `embeddings.*`,
`encoder.*`, `pooler.*`; `BertForPreTraining` / `BertForMaskedLM` / task
checkpoints prefix them with `bert.`. Old checkpoints may call LayerNorm
parameters `gamma`/`beta` instead of `weight`/`bias`; both are read.
"""

import dataclasses
import json
import logging
from pathlib import Path

from backbones.bert.tokenizer import SPECIAL_TOKENS, wordpiece_from_vocab
from backbones.errors import ConversionError
from backbones import weight_table
from backbones.registry import register_converter
from backbones.tokenizer import Tokenizer
from backbones.weight_table import Entry, dense, norm

log = logging.getLogger(__name__)

# Heads outside the backbone: pretraining (masked LM `cls.predictions.*`,
# next sentence `cls.seq_relationship.*`) and fine-tuned task heads.
_HEADS = tuple(
    f"{head}.{param}"
    for head in ("cls.predictions", "cls.predictions.decoder", "cls.predictions.transform.dense",
                 "cls.predictions.transform.LayerNorm", "cls.seq_relationship", "classifier", "qa_outputs")
    for param in ("weight", "bias", "gamma", "beta")
)


@register_converter("bert")
class BertConverter:
    """Maps a transformers BERT checkpoint (config, tensors, vocab.txt) onto `BertBackbone`."""

    backbone_class = "BertBackbone"
    # The position_ids buffer of old checkpoints, and the heads we do not use.
    ignored_tensors = ("embeddings.position_ids",) + _HEADS
    # Roles of transformers' BertTokenizer, which tokenizer_config.json often omits.
    default_special_tokens = SPECIAL_TOKENS

    @staticmethod
    def convert_config(hf):
        position = hf.get("position_embedding_type", "absolute")
        if position != "absolute":
            raise ConversionError(
                f"BERT checkpoint uses position_embedding_type={position!r}; only learned "
                "absolute positions ('absolute') are supported.")
        activation = hf.get("hidden_act", "gelu")
        if activation != "gelu":
            raise ConversionError(
                f"BERT checkpoint uses hidden_act={activation!r}; only BERT's exact (erf) "
                "GELU ('gelu') is supported.")
        if hf.get("is_decoder") or hf.get("add_cross_attention"):
            raise ConversionError(
                "BERT checkpoint is configured as a decoder (is_decoder / add_cross_attention); "
                "only the bidirectional encoder is supported.")
        if hf["hidden_size"] % hf["num_attention_heads"]:
            raise ConversionError(
                f"BERT checkpoint has hidden_size={hf['hidden_size']}, not divisible by "
                f"num_attention_heads={hf['num_attention_heads']}.")
        return {
            "vocabulary_size": hf["vocab_size"],
            "num_layers": hf["num_hidden_layers"],
            "num_heads": hf["num_attention_heads"],
            "hidden_dim": hf["hidden_size"],
            "intermediate_dim": hf["intermediate_size"],
            # One rate for everything; BERT's attention_probs_dropout_prob equals it in every release.
            "dropout": hf.get("hidden_dropout_prob", 0.1),
            "max_sequence_length": hf.get("max_position_embeddings", 512),
            "num_segments": hf.get("type_vocab_size", 2),
            "layer_norm_epsilon": hf.get("layer_norm_eps", 1e-12),
        }

    @staticmethod
    def weight_table(backbone):
        """Our weights by transformers name (without the `bert.` prefix)."""
        table = [Entry("embeddings.word_embeddings.weight", ((backbone.token_embedding, "embeddings"),)),
                 Entry("embeddings.position_embeddings.weight", ((backbone.position_embedding, "embeddings"),)),
                 Entry("embeddings.token_type_embeddings.weight", ((backbone.segment_embedding, "embeddings"),))]
        table += norm("embeddings.LayerNorm", backbone.embeddings_norm, aliases=True)
        for i, block in enumerate(backbone.transformer_layers):
            name, attn = f"encoder.layer.{i}", block.self_attention
            table += dense(f"{name}.attention.self.query", attn.query)
            table += dense(f"{name}.attention.self.key", attn.key)
            table += dense(f"{name}.attention.self.value", attn.value)
            table += dense(f"{name}.attention.output.dense", attn.attention_output)
            table += norm(f"{name}.attention.output.LayerNorm", block.attention_norm, aliases=True)
            table += dense(f"{name}.intermediate.dense", block.ffn_intermediate)
            table += dense(f"{name}.output.dense", block.ffn_output)
            table += norm(f"{name}.output.LayerNorm", block.ffn_norm, aliases=True)
        # e.g. BertForMaskedLM has no pooler
        return table + [dataclasses.replace(e, optional=True) for e in dense("pooler.dense", backbone.pooled_dense)]

    @classmethod
    def convert_weights(cls, backbone, reader, hf):
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in reader else ""
        weight_table.load(cls.weight_table(backbone), reader, prefix)
        if f"{prefix}pooler.dense.weight" not in reader:
            log.warning("The checkpoint in %s has no pooler: pooled_output comes from a randomly "
                        "initialised dense layer (sequence_output is the pretrained one).", reader.directory)

    # -- export -----------------------------------------------------------
    model_type = "bert"
    architectures = {"base": ("BertModel", ""), "classifier": ("BertForSequenceClassification", "bert.")}

    @staticmethod
    def export_config(backbone):
        if backbone.activation != "gelu":
            raise ConversionError(
                f"This BertBackbone has activation={backbone.activation!r}; only 'gelu' exports to "
                "transformers' BERT (hidden_act).")
        return {
            "vocab_size": backbone.vocabulary_size, "num_hidden_layers": backbone.num_layers,
            "num_attention_heads": backbone.num_heads, "hidden_size": backbone.hidden_dim,
            "intermediate_size": backbone.intermediate_dim, "hidden_act": "gelu",
            "hidden_dropout_prob": backbone.dropout, "attention_probs_dropout_prob": backbone.dropout,
            "max_position_embeddings": backbone.max_sequence_length, "type_vocab_size": backbone.num_segments,
            "layer_norm_eps": backbone.layer_norm_epsilon, "position_embedding_type": "absolute",
        }

    @staticmethod
    def convert_tokenizer(directory):
        """WordPiece from `vocab.txt` (+ tokenizer_config.json) when there is no tokenizer.json."""
        directory = Path(directory)
        if not (directory / "vocab.txt").exists():
            return None
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        special = {}
        for role, default in SPECIAL_TOKENS.items():
            token = config.get(f"{role}_token", default)
            special[role] = token.get("content", default) if isinstance(token, dict) else token
        # transformers' BertTokenizer defaults: lowercase, accents follow lowercase.
        wordpiece = wordpiece_from_vocab(
            directory / "vocab.txt", special, lowercase=config.get("do_lower_case", True),
            strip_accents=config.get("strip_accents"),
            tokenize_chinese_chars=config.get("tokenize_chinese_chars", True))
        return Tokenizer(wordpiece, {r: t for r, t in special.items() if wordpiece.token_to_id(t) is not None})
