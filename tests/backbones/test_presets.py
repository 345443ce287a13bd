"""Preset handles, preset directories and their failure modes."""

import json
import os

import numpy as np
import pytest

import backbones
from backbones import Backbone, GPT2Backbone, preset_io
from backbones.errors import (PresetChecksumError, PresetClassMismatchError, PresetDownloadError,
                              PresetFormatError, PresetNotFoundError)
from tests.helpers import bundled_presets, make_hf_cache, make_kaggle_cache

X = {"token_ids": np.array([[5, 6, 7, 8]]), "padding_mask": np.array([[1, 1, 1, 1]])}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "tiny"
    Backbone.from_preset("gpt2_tiny_en").save_to_preset(path)
    return path


def test_presets_class_property():
    assert set(GPT2Backbone.presets) <= set(Backbone.presets)
    assert all(meta["class_name"] == "GPT2Backbone" for meta in GPT2Backbone.presets.values())
    assert {"description", "handle"} <= set(Backbone.presets["gpt2_base_en"])


def test_unknown_name_suggests_closest():
    with pytest.raises(PresetNotFoundError, match="gpt2_base_en"):
        Backbone.from_preset("gpt2_bse_en")


def test_wrong_subclass_names_both_classes(tiny_dir):
    class OtherBackbone(Backbone):  # registered as a subclass only for this test
        pass

    with pytest.raises(PresetClassMismatchError, match="GPT2Backbone.*OtherBackbone"):
        OtherBackbone.from_preset(tiny_dir)
    assert type(GPT2Backbone.from_preset(tiny_dir)) is GPT2Backbone


def test_load_weights_false_keeps_architecture(tiny_dir):
    loaded = Backbone.from_preset(tiny_dir)
    fresh = Backbone.from_preset(tiny_dir, load_weights=False)
    assert fresh.get_config() == loaded.get_config()
    assert not np.allclose(fresh(X).numpy(), loaded(X).numpy())


def test_weights_built_as_zeros_are_all_loaded(tiny_dir):
    """from_preset builds with zeros (`weights_to_be_loaded`), then loads every
    weight; backbones built afterwards get random weights again."""
    saved = Backbone.from_preset("gpt2_tiny_en").get_weights()
    for got, expected in zip(Backbone.from_preset(tiny_dir).get_weights(), saved):
        np.testing.assert_array_equal(got, expected)
    fresh = GPT2Backbone(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)
    assert all(np.abs(w.numpy()).max() > 0 for w in
               (fresh.token_embedding.embeddings, fresh.transformer_layers[0].self_attention.query.kernel))


TINY_PRESETS = bundled_presets()  # one per registered family


@pytest.mark.parametrize("name", TINY_PRESETS)
@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_loader_matches_keras_load_weights(name, sharded, dtype, tmp_path, monkeypatch):
    """Our loader (large weights created from their stored arrays, the rest
    assigned) gives bit for bit what Keras's own `load_weights` gives, for
    every family, single and sharded files, and a bfloat16 override of a
    float32 preset; the large weights really are created from the file."""
    import keras

    from backbones import weights_h5

    path = tmp_path / "p"
    Backbone.from_preset(name).save_to_preset(path, max_shard_size=0.0002 if sharded else 5.0)
    assert (path / "model.weights.json").exists() == sharded
    served = []
    load_into = weights_h5.StoredWeights.load_into
    monkeypatch.setattr(weights_h5.StoredWeights, "load_into", lambda self, model: (
        served.extend(k for k, n in self._requests.items() if n == 1), load_into(self, model))[1])
    ours = Backbone.from_preset(path, dtype=dtype)
    assert "token_embedding/0" in served
    reference = Backbone.from_preset(path, load_weights=False, dtype=dtype)
    assert np.abs(keras.ops.convert_to_numpy(reference.token_embedding.embeddings)).max() > 0  # random again
    reference.load_weights(preset_io.weights_path(path))
    assert [w.path for w in ours.weights] == [w.path for w in reference.weights]
    for got, expected in zip(ours.weights, reference.weights):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected))
    inputs = {**X, "segment_ids": np.zeros_like(X["token_ids"])} if ours.is_encoder else X
    for got, expected in zip(keras.tree.flatten(ours(inputs)), keras.tree.flatten(reference(inputs))):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected))


@pytest.mark.parametrize("case", ["missing", "extra", "shape"])
def test_weights_file_not_matching_model_names_variable_and_file(tiny_dir, tmp_path, case):
    import shutil

    import h5py

    path = tmp_path / "p"
    shutil.copytree(tiny_dir, path)
    (path / "metadata.json").unlink()  # no checksum: the mismatch itself is what is tested
    with h5py.File(path / "model.weights.h5", "a") as f:
        group = f["layers/gpt2_block/self_attention/query/vars"]
        if case == "missing":
            del group["1"]
        elif case == "extra":
            group["2"] = np.zeros(3, "float32")
        else:
            del group["0"]
            group["0"] = np.zeros((5, 5), "float32")
    expected = {
        "missing": r"transformer_layer_0/self_attention/query/bias .*not in the file",
        "extra": r"layers/gpt2_block/self_attention/query/vars/2 in model.weights.h5 matches no weight",
        "shape": r"transformer_layer_0/self_attention/query/kernel has shape .* model.weights.h5 has shape \(5, 5\)",
    }[case]
    with pytest.raises(PresetFormatError, match=expected):
        Backbone.from_preset(path)


def test_kwargs_override_config(tiny_dir):
    model = Backbone.from_preset(tiny_dir, dtype="mixed_bfloat16", trainable=False, name="mine")
    assert (model.dtype_policy.name, model.trainable, model.name) == ("mixed_bfloat16", False, "mine")
    assert model.tokenizer is not None


def test_metadata_records_checksums(tiny_dir):
    meta = json.loads((tiny_dir / "metadata.json").read_text())
    assert meta["parameter_count"] == Backbone.from_preset(tiny_dir).count_params()
    assert meta["sha256"]["model.weights.h5"] == preset_io.sha256(tiny_dir / "model.weights.h5")
    assert {"keras_version", "backbone_lab_version", "date"} <= set(meta)


def test_corrupted_weights_fail_checksum(tiny_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    data = bytearray((bad / "model.weights.h5").read_bytes())
    data[-100] ^= 0xFF
    (bad / "model.weights.h5").write_bytes(bytes(data))
    with pytest.raises(PresetChecksumError, match="model.weights.h5"):
        Backbone.from_preset(bad)
    Backbone.from_preset(bad, load_weights=False)  # architecture alone still loads


def test_interrupted_save_keeps_old_preset(tiny_dir, tmp_path, monkeypatch):
    import shutil

    target = tmp_path / "p"
    shutil.copytree(tiny_dir, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    model = GPT2Backbone(vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C while writing weights

    monkeypatch.setattr(GPT2Backbone, "save_weights", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save_to_preset(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["p"]  # no partial directory left beside it


def test_save_replaces_whole_directory(tiny_dir, tmp_path):
    """No stale file survives: a preset saved without a tokenizer has none."""
    import shutil

    target = tmp_path / "p"
    shutil.copytree(tiny_dir, target)
    (target / "stale.txt").write_text("old")
    GPT2Backbone(vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16).save_to_preset(target)
    assert sorted(os.listdir(target)) == ["config.json", "metadata.json", "model.weights.h5"]


def test_sharded_weights_round_trip(tiny_dir, tmp_path):
    model = Backbone.from_preset(tiny_dir)
    model.save_to_preset(tmp_path / "sharded", max_shard_size=0.0002)  # 200 kB shards
    files = sorted(os.listdir(tmp_path / "sharded"))
    assert "model.weights.json" in files and len([f for f in files if f.endswith(".weights.h5")]) > 1
    meta = json.loads((tmp_path / "sharded" / "metadata.json").read_text())
    assert set(meta["sha256"]) == {f for f in files if f.startswith("model") and "weights" in f}
    np.testing.assert_array_equal(Backbone.from_preset(tmp_path / "sharded")(X).numpy(), model(X).numpy())


def test_keras_hub_name_on_our_weights_is_not_misloaded(tiny_dir, tmp_path):
    """A config claiming keras-hub over our weights layout: the converter names what is missing."""
    import shutil

    from backbones.errors import ConversionError

    shutil.copytree(tiny_dir, tmp_path / "kh")
    config = json.loads((tmp_path / "kh" / "config.json").read_text())
    config["registered_name"] = "keras_hub>GPT2Backbone"
    (tmp_path / "kh" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="layers/reversible_embedding/vars/0.*missing"):
        Backbone.from_preset(tmp_path / "kh")


@pytest.mark.parametrize("case", ["empty", "bad_json", "unregistered", "no_weights", "file"])
def test_not_a_preset(tmp_path, tiny_dir, case):
    import shutil

    path = tmp_path / "p"
    if case == "file":
        path.write_text("x")
        with pytest.raises(PresetNotFoundError, match="directory"):
            Backbone.from_preset(path)
        return
    shutil.copytree(tiny_dir, path)
    if case == "empty":
        shutil.rmtree(path)
        path.mkdir()
    elif case == "bad_json":
        (path / "config.json").write_text("{not json")
    elif case == "unregistered":
        config = json.loads((path / "config.json").read_text())
        config["class_name"] = "os.system"
        (path / "config.json").write_text(json.dumps(config))
    elif case == "no_weights":
        (path / "model.weights.h5").unlink()
        (path / "metadata.json").unlink()
    with pytest.raises(PresetFormatError, match="config.json|model.weights.h5"):
        Backbone.from_preset(path)


def test_missing_directory_is_not_found(tmp_path):
    with pytest.raises(PresetNotFoundError, match="Unknown preset"):
        Backbone.from_preset(tmp_path / "nope")


def test_hf_handle_not_cached_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PresetDownloadError, match="not in the Hugging Face cache"):
        Backbone.from_preset("hf://nobody/not-cached")


def test_hf_handle_of_our_own_preset_with_revision(tiny_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    make_hf_cache(tmp_path / "hub", "me/tiny", tiny_dir, revision="v1", commit="a" * 40)
    model = Backbone.from_preset("hf://me/tiny@v1")
    np.testing.assert_array_equal(model(X).numpy(), Backbone.from_preset(tiny_dir)(X).numpy())
    with pytest.raises(PresetDownloadError):
        Backbone.from_preset("hf://me/tiny@v2")


def test_kaggle_handle_from_cache(tiny_dir, tmp_path, monkeypatch):
    make_kaggle_cache(tmp_path / "kaggle", "me/tiny/keras/tiny_en/2", tiny_dir, monkeypatch)
    expected = Backbone.from_preset(tiny_dir)(X).numpy()
    np.testing.assert_array_equal(Backbone.from_preset("kaggle://me/tiny/keras/tiny_en/2")(X).numpy(), expected)
    # Unversioned: Kaggle is unreachable here, so the newest cached version is used.
    np.testing.assert_array_equal(Backbone.from_preset("kaggle://me/tiny/keras/tiny_en")(X).numpy(), expected)
    with pytest.raises(PresetDownloadError, match="kaggle://me/other/keras/x/1"):
        Backbone.from_preset("kaggle://me/other/keras/x/1")
    with pytest.raises(PresetNotFoundError, match="kaggle://"):
        Backbone.from_preset("kaggle://not-a-handle")


def test_hf_checkpoint_of_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(PresetFormatError, match="mamba.*Supported"):
        Backbone.from_preset(tmp_path)


def test_pickled_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10, "n_layer": 1, "n_head": 1,
                                                      "n_embd": 4, "n_positions": 8}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(PresetFormatError, match="never loaded"):
        Backbone.from_preset(tmp_path)


def test_loaded_layers_serialize(tmp_path):
    """Layers built from stored arrays keep a serializable initializer (zeros once the arrays are gone)."""
    import keras

    model = Backbone.from_preset("gpt2_tiny_en")
    layer = model.transformer_layers[0].ffn_intermediate
    clone = keras.layers.deserialize(json.loads(json.dumps(keras.layers.serialize(layer))))
    assert type(clone.kernel_initializer).__name__ == "Zeros"


def test_unknown_keyword_is_named_with_the_accepted_ones(tiny_dir):
    with pytest.raises(backbones.UnknownArgumentError, match=r"\['hiden_dim'\]. Did you mean 'hidden_dim'"):
        Backbone.from_preset(tiny_dir, hiden_dim=3)


def test_truncated_safetensors_names_the_file(tmp_path):
    from safetensors.numpy import save_file

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 97, "n_layer": 1,
                                                      "n_head": 2, "n_embd": 24, "n_positions": 16}))
    save_file({"wte.weight": np.ones((97, 24), "float32")}, str(tmp_path / "model.safetensors"))
    full = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(full[: len(full) // 2])
    with pytest.raises(backbones.PresetFormatError, match=r"model.safetensors is incomplete .*'wte.weight'.* again"):
        Backbone.from_preset(tmp_path)
