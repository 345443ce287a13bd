"""A keras-hub Gemma preset (kaggle://keras/gemma/keras/...) loads converted (weights, config, tokenizer)."""

import json

import numpy as np
import pytest

import backbones
from backbones.errors import ConversionError
from tests.backbones.common.test_sentencepiece import MODELS, TEXTS, train
from tests.helpers import run_keras_hub_preset_test

INPUTS = {"token_ids": np.array([[5, 17, 42, 7, 98, 3, 11, 0], [1, 2, 3, 4, 5, 0, 0, 0]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0]], "int32")}
SMALL = dict(vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=1, hidden_dim=16,
             intermediate_dim=64, head_dim=8)


def test_keras_hub_gemma_preset(tmp_path):
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    # Gemma's layout: <pad> 0, <eos> 1, <bos> 2, <unk> 3, no dummy prefix, user-defined pieces.
    tokenizer = keras_hub.models.GemmaTokenizer(proto=train(**MODELS["bpe_gemma"], bos_piece="<bos>", eos_piece="<eos>"))
    hub = keras_hub.models.GemmaBackbone(**{**SMALL, "vocabulary_size": tokenizer.vocabulary_size()})
    directory = run_keras_hub_preset_test(hub, tokenizer, INPUTS, TEXTS, tmp_path)
    ours = backbones.Backbone.from_preset(directory)
    assert ours.intermediate_dim == SMALL["intermediate_dim"] // 2
    assert ours.tokenizer.special_tokens == {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"}
    assert [ours.tokenizer.special_token_id(r) for r in ("bos", "eos", "pad")] == \
        [tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id]

    config = json.loads((directory / "config.json").read_text())
    config["config"]["use_post_ffw_norm"] = True  # a Gemma 2 option
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="use_post_ffw_norm.*Gemma v1"):
        backbones.Backbone.from_preset(directory)
