"""Converting a keras-hub BERT preset (`keras_hub>BertBackbone`).

Layout facts (read from presets keras-hub saves): top-level layers
`reversible_embedding` (tokens), `position_embedding`, `embedding`
(segments), `layer_normalization` (embeddings), `transformer_encoder[_i]`
(post-norm: `_self_attention_layer/{query,key,value,output}_dense` with
per-head kernels, `_self_attention_layer_norm`,
`_feedforward_{intermediate,output}_dense`, `_feedforward_layer_norm`) and
`dense` (the tanh pooler). keras-hub's BERT uses the tanh GELU and LayerNorm
epsilon 1e-12 (not in its config). The tokenizer is WordPiece from
`assets/tokenizer/vocabulary.txt`, with the `lowercase` / `strip_accents`
of its tokenizer.json.
"""

from backbones.bert.tokenizer import SPECIAL_TOKENS, wordpiece_from_vocab
from backbones.formats.keras_hub import layer_name, tokenizer_asset, tokenizer_config
from backbones.registry import register_keras_hub_converter
from backbones.tokenizer import Tokenizer

_CONFIG_KEYS = ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
                "dropout", "max_sequence_length", "num_segments")


@register_keras_hub_converter("BertBackbone")
class BertKerasHubConverter:
    backbone_class = "BertBackbone"

    @staticmethod
    def convert_config(config):
        # Same argument names as ours; the activation is keras-hub's fixed choice.
        return {**{key: config[key] for key in _CONFIG_KEYS if key in config},
                "activation": "gelu_approximate", "layer_norm_epsilon": 1e-12}

    @staticmethod
    def convert_weights(backbone, reader, config):
        reader.put_layer(backbone.token_embedding, "reversible_embedding")
        reader.put_layer(backbone.position_embedding, "position_embedding")
        reader.put_layer(backbone.segment_embedding, "embedding")
        reader.put_layer(backbone.embeddings_norm, "layer_normalization")
        for i, block in enumerate(backbone.transformer_layers):
            name, attn = layer_name("transformer_encoder", i), block.self_attention
            reader.put_attention(attn, f"{name}/_self_attention_layer")
            reader.put_layer(block.attention_norm, f"{name}/_self_attention_layer_norm")
            reader.put_layer(block.ffn_intermediate, f"{name}/_feedforward_intermediate_dense")
            reader.put_layer(block.ffn_output, f"{name}/_feedforward_output_dense")
            reader.put_layer(block.ffn_norm, f"{name}/_feedforward_layer_norm")
        reader.put_layer(backbone.pooled_dense, "dense")

    @staticmethod
    def convert_tokenizer(directory):
        """WordPiece from `assets/tokenizer/vocabulary.txt` and tokenizer.json's options.

        keras-hub's `lowercase` case-folds with NFKC (a ligature `ﬁ` becomes `fi`),
        so NFKC runs first here. One difference is kept on purpose: special
        tokens written in the text (`"[SEP]"`) stay whole, as in transformers,
        where keras-hub (`special_tokens_in_strings=False`) splits them.
        """
        from tokenizers import normalizers

        _, config = tokenizer_config(directory)
        special = {**SPECIAL_TOKENS, "unk": config.get("oov_token") or SPECIAL_TOKENS["unk"]}
        lowercase = config.get("lowercase", False)
        wordpiece = wordpiece_from_vocab(
            tokenizer_asset(directory, "vocabulary.txt"), special,
            lowercase=lowercase, strip_accents=bool(config.get("strip_accents")))
        if lowercase:
            wordpiece.normalizer = normalizers.Sequence([normalizers.NFKC(), wordpiece.normalizer])
        return Tokenizer(wordpiece, {r: t for r, t in special.items() if wordpiece.token_to_id(t) is not None})
