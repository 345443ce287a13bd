"""Converting a transformers BERT checkpoint (`model_type: bert`).

Weight layout facts: torch `Linear` weights are `(out, in)`, the transpose of
a Keras Dense kernel. `BertModel` checkpoints name tensors `embeddings.*`,
`encoder.*`, `pooler.*`; `BertForPreTraining` / `BertForMaskedLM` / task
checkpoints prefix them with `bert.`. Old checkpoints may call LayerNorm
parameters `gamma`/`beta` instead of `weight`/`bias`; both are read.
"""

import json
import logging
from pathlib import Path

from backbones.bert.tokenizer import SPECIAL_TOKENS, wordpiece_from_vocab
from backbones.errors import ConversionError
from backbones.hf_checkpoint import assign
from backbones.registry import register_converter
from backbones.tokenizer import Tokenizer

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
    def convert_weights(backbone, reader, hf):
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in reader else ""

        def put(variable, name, transpose=False):
            value = reader.get(prefix + name)
            assign(variable, value.T if transpose else value, prefix + name)

        def put_dense(layer, name):
            put(layer.kernel, f"{name}.weight", transpose=True)
            put(layer.bias, f"{name}.bias")

        def put_norm(layer, name):
            scale, shift = ("weight", "bias") if f"{prefix}{name}.weight" in reader else ("gamma", "beta")
            put(layer.gamma, f"{name}.{scale}")
            put(layer.beta, f"{name}.{shift}")

        put(backbone.token_embedding.embeddings, "embeddings.word_embeddings.weight")
        put(backbone.position_embedding.embeddings, "embeddings.position_embeddings.weight")
        put(backbone.segment_embedding.embeddings, "embeddings.token_type_embeddings.weight")
        put_norm(backbone.embeddings_norm, "embeddings.LayerNorm")
        for i, block in enumerate(backbone.transformer_layers):
            name, attn = f"encoder.layer.{i}", block.self_attention
            put_dense(attn.query, f"{name}.attention.self.query")
            put_dense(attn.key, f"{name}.attention.self.key")
            put_dense(attn.value, f"{name}.attention.self.value")
            put_dense(attn.attention_output, f"{name}.attention.output.dense")
            put_norm(block.attention_norm, f"{name}.attention.output.LayerNorm")
            put_dense(block.ffn_intermediate, f"{name}.intermediate.dense")
            put_dense(block.ffn_output, f"{name}.output.dense")
            put_norm(block.ffn_norm, f"{name}.output.LayerNorm")
        if f"{prefix}pooler.dense.weight" in reader:
            put_dense(backbone.pooled_dense, "pooler.dense")
        else:  # e.g. BertForMaskedLM, which has no pooler
            log.warning("The checkpoint in %s has no pooler: pooled_output comes from a randomly "
                        "initialised dense layer (sequence_output is the pretrained one).", reader.directory)

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
