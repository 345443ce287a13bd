"""A keras-hub GPT-2 preset (what kaggle://keras/gpt2/keras/... holds) loads converted."""

import numpy as np

from tests.helpers import keras_hub_tokenizer_from_bundled, run_keras_hub_preset_test

INPUTS = {"token_ids": np.array([[5, 17, 42, 7, 98, 3, 11, 0], [1, 2, 3, 4, 5, 0, 0, 0]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0]], "int32")}
TEXTS = ["The movie was great!", "  spaces  and\nnewlines", "naïve café 🙂", "a<|endoftext|>b", ""]


def test_keras_hub_gpt2_preset(tmp_path):
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    tokenizer = keras_hub_tokenizer_from_bundled("gpt2")
    hub = keras_hub.models.GPT2Backbone(vocabulary_size=tokenizer.vocabulary_size(), num_layers=2,
                                        num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=24)
    run_keras_hub_preset_test(hub, tokenizer, INPUTS, TEXTS, tmp_path)
