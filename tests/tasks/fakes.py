"""A tiny encoder backbone and word-level tokenizer, to test the encoder paths
of tasks without depending on a real encoder family."""

import keras
import tokenizers
from keras import ops

from backbones import Backbone, Tokenizer

WORDS = "[PAD] [UNK] [CLS] [SEP] good bad film the".split()


def word_tokenizer():
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return Tokenizer(tok, {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]"})


class TinyEncoderTestBackbone(Backbone):
    """Embeds tokens and segments, mixes them with a mean over real tokens;
    returns a dict with `sequence_output` (and `pooled_output` if `pooled`)."""

    is_encoder = True
    lora_target_layers = {"query": ("query",), "value": ("value",)}

    def __init__(self, vocabulary_size=len(WORDS), hidden_dim=8, pooled=True, dtype=None, **kwargs):
        self.token_embedding = keras.layers.Embedding(vocabulary_size, hidden_dim, name="token_embedding")
        self.segment_embedding = keras.layers.Embedding(2, hidden_dim, name="segment_embedding")
        self.query = keras.layers.Dense(hidden_dim, name="query")
        self.value = keras.layers.Dense(hidden_dim, activation="tanh", name="value")
        inputs = {n: keras.Input((None,), dtype="int32", name=n) for n in ("token_ids", "padding_mask", "segment_ids")}
        x = self.token_embedding(inputs["token_ids"]) + self.segment_embedding(inputs["segment_ids"])
        x = self.query(x)
        outputs = {"sequence_output": x}
        if pooled:
            outputs["pooled_output"] = self.value(x[:, 0])
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.vocabulary_size, self.hidden_dim, self.pooled = vocabulary_size, hidden_dim, pooled
        self.tokenizer = word_tokenizer()

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim, "pooled": self.pooled}


def hidden_of(outputs):
    return ops.convert_to_numpy(outputs["sequence_output"] if isinstance(outputs, dict) else outputs)
