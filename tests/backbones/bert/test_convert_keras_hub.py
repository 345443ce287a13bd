"""A keras-hub BERT preset (what kaggle://keras/bert/keras/... holds) loads converted."""

import numpy as np

from tests.helpers import keras_hub_tokenizer_from_bundled, run_keras_hub_preset_test

INPUTS = {"token_ids": np.array([[2, 17, 42, 7, 98, 3, 0, 0], [2, 30, 31, 3, 40, 41, 3, 0]], "int32"),
          "segment_ids": np.array([[0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 0]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]], "int32")}
TEXTS = ["The movie was GREAT!", "  spaces  and\nnewlines, punctuation?!", "unseen zqxj words 2024", "ﬁne ligature", ""]


def test_keras_hub_bert_preset(tmp_path):
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    tokenizer = keras_hub_tokenizer_from_bundled("bert")
    hub = keras_hub.models.BertBackbone(vocabulary_size=tokenizer.vocabulary_size(), num_layers=2,
                                        num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=24)
    run_keras_hub_preset_test(hub, tokenizer, INPUTS, TEXTS, tmp_path)
