"""keras-hub presets through the generic path: weights reader, handles, failure modes.

Family parity (outputs, token ids) is in tests/backbones/<family>/test_convert_keras_hub.py.
"""

import json
import shutil

import numpy as np
import pytest

from backbones import Backbone, BertBackbone, GPT2Backbone, Tokenizer, registry
from backbones.errors import ConversionError, PresetClassMismatchError, PresetFormatError
from tests.helpers import keras_hub_tokenizer_from_bundled, make_kaggle_cache

X = {"token_ids": np.array([[5, 6, 7, 8], [9, 10, 0, 0]]), "padding_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]])}
SMALL = dict(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A keras-hub GPT-2 preset (backbone + tokenizer) and keras-hub's outputs on X."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    tokenizer = keras_hub_tokenizer_from_bundled("gpt2")
    model = keras_hub.models.GPT2Backbone(vocabulary_size=tokenizer.vocabulary_size(), **SMALL)
    path = tmp_path_factory.mktemp("keras_hub") / "gpt2"
    model.save_to_preset(path)
    tokenizer.save_to_preset(path)
    return path, model, keras.ops.convert_to_numpy(model(X))


def edited(hub, tmp_path, **config_changes):
    """A copy of the preset with config.json's inner config changed."""
    directory = tmp_path / "edited"
    shutil.copytree(hub[0], directory)
    config = json.loads((directory / "config.json").read_text())
    config["config"].update(config_changes)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_sharded_weights(hub, tmp_path):
    _, model, expected = hub
    model.save_to_preset(tmp_path / "sharded", max_shard_size=4e-5)  # GB: several shards
    assert len(list((tmp_path / "sharded").glob("*.weights.h5"))) > 1
    np.testing.assert_allclose(Backbone.from_preset(tmp_path / "sharded")(X).numpy(), expected, atol=1e-5)


def test_bfloat16_weights_load_exactly(tmp_path):
    import keras_hub

    model = keras_hub.models.GPT2Backbone(vocabulary_size=50, dtype="bfloat16", **SMALL)
    model.save_to_preset(tmp_path / "bf16")
    ours = Backbone.from_preset(tmp_path / "bf16")
    assert ours.dtype_policy.name == "bfloat16"
    np.testing.assert_array_equal(ours.token_embedding.embeddings.numpy(), model.weights[0].numpy())


def test_kaggle_handle_offline_from_cache(hub, tmp_path, monkeypatch):
    make_kaggle_cache(tmp_path / "kaggle", "keras/gpt2/keras/gpt2_tiny_en/1", hub[0], monkeypatch)
    ours = Backbone.from_preset("kaggle://keras/gpt2/keras/gpt2_tiny_en/1")
    np.testing.assert_allclose(ours(X).numpy(), hub[2], atol=1e-5)
    assert ours.tokenizer(["hello"]) == Tokenizer.from_preset(hub[0])(["hello"])


def test_missing_weights_file(hub, tmp_path):
    directory = edited(hub, tmp_path)
    (directory / "model.weights.h5").unlink()
    with pytest.raises(PresetFormatError, match="model.weights.h5.*load_weights=False"):
        Backbone.from_preset(directory)
    assert type(Backbone.from_preset(directory, load_weights=False)) is GPT2Backbone


def test_shape_mismatch_names_variable(hub, tmp_path):
    with pytest.raises(ConversionError, match="reversible_embedding/vars/0.*shape"):
        Backbone.from_preset(edited(hub, tmp_path, hidden_dim=8))


def test_leftover_variables(hub, tmp_path):
    with pytest.raises(ConversionError, match="1 variable|variable\\(s\\).*transformer_decoder_1"):
        Backbone.from_preset(edited(hub, tmp_path, num_layers=1))


def test_unsupported_class_lists_supported(hub, tmp_path):
    directory = edited(hub, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config.update(class_name="T5Backbone", registered_name="keras_hub>T5Backbone")
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(PresetFormatError, match="'T5Backbone'.*BertBackbone.*GPT2Backbone"):
        Backbone.from_preset(directory)


def test_wrong_subclass(hub):
    with pytest.raises(PresetClassMismatchError, match="GPT2Backbone.*BertBackbone"):
        BertBackbone.from_preset(hub[0])


def test_tokenizer_assets(hub, tmp_path, monkeypatch):
    directory = edited(hub, tmp_path)
    (directory / "assets" / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(PresetFormatError, match="merges.txt"):
        Tokenizer.from_preset(directory)

    # A family whose tokenizer converter is not written yet loads without a tokenizer.
    gpt2 = vars(registry.KERAS_HUB_CONVERTERS["GPT2Backbone"])
    NoTokenizer = type("NoTokenizer", (), {k: v for k, v in gpt2.items() if k != "convert_tokenizer"})
    monkeypatch.setitem(registry.KERAS_HUB_CONVERTERS, "GPT2Backbone", NoTokenizer)
    assert Backbone.from_preset(hub[0]).tokenizer is None
