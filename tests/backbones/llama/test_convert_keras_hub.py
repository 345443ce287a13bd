"""A keras-hub Llama preset (kaggle://keras/llama3/keras/...) loads converted (weights, config)."""

import json

import numpy as np
import pytest

import backbones
from backbones.errors import ConversionError
from tests.helpers import run_keras_hub_preset_test

INPUTS = {"token_ids": np.array([[5, 17, 42, 7, 98, 3, 11, 0], [1, 2, 3, 4, 5, 0, 0, 0]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0]], "int32")}
SMALL = dict(vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=16,
             intermediate_dim=32)
LLAMA3_ROPE = dict(rope_max_wavelength=500000, rope_frequency_adjustment_factor=8.0, rope_low_freq_factor=1.0,
                   rope_high_freq_factor=4.0, rope_pretraining_sequence_length=4)


@pytest.mark.parametrize("variant", [{}, {"tie_word_embeddings": True, **LLAMA3_ROPE}], ids=["untied", "tied_llama3"])
def test_keras_hub_llama_preset(tmp_path, variant):
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    hub = keras_hub.models.LlamaBackbone(**SMALL, **variant)
    directory = run_keras_hub_preset_test(hub, None, INPUTS, [], tmp_path)
    ours = backbones.Backbone.from_preset(directory)
    assert ours.tie_word_embeddings == bool(variant)
    if not variant:
        np.testing.assert_array_equal(ours.output_embedding.kernel.numpy(), hub.token_embedding.reverse_embeddings.numpy())


def test_position_scaling_is_refused(tmp_path):
    import keras_hub

    keras_hub.models.LlamaBackbone(**SMALL).save_to_preset(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    config["config"]["rope_position_scaling_factor"] = 2.0
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="rope_position_scaling_factor"):
        backbones.Backbone.from_preset(tmp_path / "p")
