"""Shared checks, so that each family's test file stays short.

`run_backbone_test` covers what every backbone must do (config and preset
round trips, LoRA trainable set and shapes, adapter round trip, dtypes);
`run_hf_parity_test` pins a converted transformers checkpoint's hidden states;
`run_keras_hub_preset_test` pins a converted keras-hub preset's outputs and
token ids; `make_hf_cache` / `make_kaggle_cache` build hub caches offline.
"""

import json
import shutil
from pathlib import Path

import keras
import numpy as np

import backbones
from backbones import lora


def bundled_presets(encoder=None):
    """One bundled (on-disk) tiny preset per registered family, sorted, from
    the registry: a new family is tested without editing a list. `encoder`:
    True keeps encoders only, False decoders only.

    Example:
    >>> "gpt2_tiny_en" in bundled_presets(encoder=False), bundled_presets(encoder=True)
    (True, ['bert_tiny_random_en'])
    """
    presets = []
    for family in backbones.registry.FAMILIES.values():
        if encoder is not None and family.is_encoder != encoder:
            continue
        bundled = [name for name, meta in family.presets.items() if Path(str(meta["handle"])).is_dir()]
        assert bundled, (f"Family {family.class_name} has no bundled preset (a preset directory in "
                         "its folder, see scripts/make_tiny_presets.py): the shared tests need one.")
        presets.append(bundled[0])
    return sorted(presets)


def hidden(outputs):
    """The sequence output of a backbone (encoders return a dict)."""
    if isinstance(outputs, dict):
        outputs = outputs["sequence_output"]
    return keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32"))


def randomize_lora(backbone, scale=0.1):
    """Non-zero LoRA B matrices, so LoRA changes outputs (B starts at zero)."""
    rng = np.random.default_rng(0)
    for w in backbone.weights:
        if w.name == "lora_kernel_b":
            w.assign(rng.normal(size=w.shape).astype("float32") * scale)


def run_backbone_test(cls, init_kwargs, input_data, expected_output_shape, tmp_path, lora_targets=None):
    """Every contract check on a small instance of `cls`.

    Args:
        cls: the Backbone subclass.
        init_kwargs: dict. Small constructor arguments.
        input_data: dict. Model inputs (token_ids, padding_mask, ...).
        expected_output_shape: tuple. Shape of the hidden states.
        tmp_path: pathlib.Path. Scratch directory.
        lora_targets: list. Extra LoRA targets to check besides the default.
    """
    tmp_path = Path(tmp_path)
    model = cls(**init_kwargs)
    out = hidden(model(input_data))
    assert out.shape == tuple(expected_output_shape)
    assert np.isfinite(out).all()
    assert isinstance(model.token_embedding, keras.layers.Embedding)

    # Config round trip through JSON, then identical outputs with the same weights.
    config = json.loads(json.dumps(model.get_config()))
    clone = cls.from_config(config)
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(hidden(clone(input_data)), out)

    # Preset round trip, through the base class (subclass inferred).
    model.save_to_preset(tmp_path / "preset")
    restored = backbones.Backbone.from_preset(tmp_path / "preset")
    assert type(restored) is cls
    np.testing.assert_array_equal(hidden(restored(input_data)), out)
    assert sorted(p.name for p in (tmp_path / "preset").iterdir())[:3] == ["config.json", "metadata.json", "model.weights.h5"]

    _check_lora(cls, init_kwargs, model, input_data, out, tmp_path, None)
    for target in lora_targets or ():
        _check_lora(cls, init_kwargs, cls(**init_kwargs), input_data, None, tmp_path / target, [target])
    _check_dtypes(cls, init_kwargs, input_data, tmp_path)


def _check_lora(cls, init_kwargs, model, input_data, base_out, tmp_path, targets):
    weights = model.get_weights()
    model.enable_lora(4, targets=targets)
    layers = lora.target_layers(model, model.lora_spec.targets)
    trainable = {id(w) for w in model.trainable_weights}
    expected = {id(w) for _, l in layers for w in (l.lora_kernel_a, l.lora_kernel_b)}
    assert trainable == expected, "trainable weights must be exactly the LoRA matrices"
    for _, layer in layers:
        # PEFT's shapes: A (in, r), B (r, out) on a 2-D kernel.
        assert tuple(layer.lora_kernel_a.shape) == (layer.kernel.shape[0], 4)
        assert tuple(layer.lora_kernel_b.shape) == (4, layer.kernel.shape[1])
    if base_out is not None:  # B starts at zero: LoRA is a no-op until trained
        np.testing.assert_allclose(hidden(model(input_data)), base_out, atol=1e-6)
    randomize_lora(model)
    with_lora = hidden(model(input_data))
    tmp_path.mkdir(parents=True, exist_ok=True)

    # Adapter round trip into a fresh backbone with the same base weights.
    model.save_lora_weights(tmp_path / "adapter.lora.safetensors")
    fresh = cls(**init_kwargs)
    fresh.set_weights(weights)
    fresh.load_lora_weights(tmp_path / "adapter.lora.safetensors")
    assert fresh.lora_spec == model.lora_spec
    np.testing.assert_allclose(hidden(fresh(input_data)), with_lora, atol=1e-6)

    # Merged preset: loads without LoRA, same outputs.
    model.save_to_preset(tmp_path / "merged")
    merged = backbones.Backbone.from_preset(tmp_path / "merged")
    assert merged.lora_spec is None and all("lora" not in w.name for w in merged.weights)
    np.testing.assert_allclose(hidden(merged(input_data)), with_lora, atol=1e-4)


def _check_dtypes(cls, init_kwargs, input_data, tmp_path):
    model = cls(**init_kwargs, dtype="bfloat16")
    assert all(l.dtype_policy.name == "bfloat16" for _, l in lora.layer_paths(model) if l.weights)
    raw = model(input_data)
    raw = raw["sequence_output"] if isinstance(raw, dict) else raw
    assert keras.backend.standardize_dtype(raw.dtype) == "bfloat16"
    out = hidden(raw)
    model.save_to_preset(tmp_path / "bf16")
    restored = backbones.Backbone.from_preset(tmp_path / "bf16")
    assert restored.dtype_policy.name == "bfloat16"
    np.testing.assert_array_equal(hidden(restored(input_data)), out)
    # A user's dtype wins over the saved one.
    assert backbones.Backbone.from_preset(tmp_path / "bf16", dtype="float32").dtype_policy.name == "float32"

    mixed = cls(**init_kwargs, dtype="mixed_bfloat16")
    assert all(w.dtype == "float32" for w in mixed.weights)
    assert np.isfinite(hidden(mixed(input_data))).all()


def run_hf_parity_test(hf_model, input_ids, attention_mask, tmp_path, atol=1e-4, extra_inputs=None):
    """Saves `hf_model` with save_pretrained, loads it with `Backbone.from_preset`
    and compares last hidden states on real (unpadded) tokens. Returns the max error."""
    import torch

    directory = Path(tmp_path) / "hf_checkpoint"
    hf_model.save_pretrained(directory)
    hf_model.eval()
    with torch.no_grad():
        kwargs = {k: torch.tensor(v) for k, v in (extra_inputs or {}).items()}
        expected = hf_model(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(attention_mask),
                            **kwargs).last_hidden_state.numpy()
    backbone = backbones.Backbone.from_preset(directory)
    inputs = {"token_ids": np.asarray(input_ids), "padding_mask": np.asarray(attention_mask), **(extra_inputs or {})}
    got = hidden(backbone(inputs))
    real = np.asarray(attention_mask).astype(bool)
    error = float(np.abs(got[real] - expected[real]).max())
    assert error < atol, f"max abs error {error} >= {atol}"
    return error


def make_hf_cache(cache_dir, repo_id, files_dir, revision="main", commit="0" * 40):
    """Lays out `files_dir` as huggingface_hub's cache holds a downloaded repo."""
    repo_dir = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    shutil.copytree(files_dir, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return snapshot


def make_kaggle_cache(cache_dir, handle, files_dir, monkeypatch):
    """Lays out `files_dir` as kagglehub's cache holds a downloaded model version."""
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache_dir))
    from kagglehub.cache import Cache, get_cached_path
    from kagglehub.handle import parse_model_handle

    parsed = parse_model_handle(handle)
    shutil.copytree(files_dir, get_cached_path(parsed))
    Cache().mark_as_complete(parsed)


def check_converter_errors(hf_model, tmp_path, config_changes, dropped_tensor):
    """A saved transformers checkpoint converts with a clear `ConversionError`
    for each broken variant: `config_changes` is a list of (config.json keys
    to change, message pattern); `dropped_tensor` is (tensor name, pattern)."""
    import pytest
    from safetensors.numpy import load_file, save_file

    from backbones.errors import ConversionError

    directory = Path(tmp_path) / "ckpt"
    hf_model.save_pretrained(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    config = json.loads(config_path.read_text())
    for change, match in config_changes:
        config_path.write_text(json.dumps({**config, **change}))
        with pytest.raises(ConversionError, match=match):
            backbones.Backbone.from_preset(directory)
    config_path.write_text(json.dumps(config))
    name, match = dropped_tensor
    tensors = load_file(weights_path)
    del tensors[name]
    save_file(tensors, weights_path)
    with pytest.raises(ConversionError, match=match):
        backbones.Backbone.from_preset(directory)


ROUND_TRIP_TEXTS = ["The movie was great!", "  spaces  and\nnewlines", "naïve café 🙂"]


def check_tiny_preset_rebuilds(family, name, tmp_path, special_token_ids=None):
    """`scripts/make_tiny_presets.py --family FAMILY` rebuilds the bundled preset
    `name` bit for bit (weights and tokenizer.json); returns the bundled backbone.
    With `special_token_ids` (role -> id), also checks those ids and that the
    tokenizer decodes its encoding of a few texts back to the texts exactly."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(root / "scripts" / "make_tiny_presets.py"), "--out", str(tmp_path),
                    "--family", family], check=True, timeout=300)
    bundled = backbones.Backbone.from_preset(name)
    rebuilt = backbones.Backbone.from_preset(Path(tmp_path) / name)
    for a, b in zip(bundled.get_weights(), rebuilt.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (Path(tmp_path) / name / "tokenizer.json").read_text() == \
        (backbones.handles.resolve_preset(name) / "tokenizer.json").read_text()
    if special_token_ids is not None:
        tokenizer = bundled.tokenizer
        assert {role: tokenizer.special_token_id(role) for role in special_token_ids} == special_token_ids
        assert tokenizer.detokenize(tokenizer(ROUND_TRIP_TEXTS)) == ROUND_TRIP_TEXTS
    return bundled


def keras_hub_tokenizer_from_bundled(family):
    """A keras-hub tokenizer with the vocabulary of our bundled tiny preset of `family`."""
    import keras_hub

    if family == "gpt2":
        bundled = backbones.Tokenizer.from_preset("gpt2_tiny_en").tokenizer
        merges = json.loads(bundled.to_str())["model"]["merges"]
        return keras_hub.models.GPT2Tokenizer(
            vocabulary=bundled.get_vocab(), merges=[m if isinstance(m, str) else " ".join(m) for m in merges])
    vocab = backbones.Tokenizer.from_preset("bert_tiny_random_en").tokenizer.get_vocab()
    return keras_hub.models.BertTokenizer(vocabulary=sorted(vocab, key=vocab.get), lowercase=True)


def run_keras_hub_preset_test(hub_backbone, hub_tokenizer, inputs, texts, tmp_path, atol=1e-5, class_name=None):
    """Saves a keras-hub backbone + tokenizer with keras-hub's `save_to_preset`, loads
    the directory with our `Backbone.from_preset` and checks: same class name (or
    `class_name`, e.g. keras-hub's Llama3Backbone loads as our LlamaBackbone), outputs
    within `atol` on real tokens, subclass call, `load_weights=False`, dtype override,
    token ids equal to keras-hub's on `texts` (`hub_tokenizer=None`: no tokenizer).
    Returns the preset directory."""
    directory = Path(tmp_path) / "keras_hub_preset"
    hub_backbone.save_to_preset(directory)
    if hub_tokenizer is not None:
        hub_tokenizer.save_to_preset(directory)
    ours = backbones.Backbone.from_preset(directory)
    cls = type(ours)
    assert cls.__name__ == (class_name or type(hub_backbone).__name__)
    expected, got = hub_backbone(inputs), ours(inputs)
    real = np.asarray(inputs["padding_mask"]).astype(bool)
    assert np.abs(hidden(got)[real] - hidden(expected)[real]).max() < atol
    if isinstance(expected, dict) and "pooled_output" in expected:
        np.testing.assert_allclose(hidden(got["pooled_output"]), hidden(expected["pooled_output"]), atol=atol)

    assert type(cls.from_preset(directory)) is cls
    fresh = backbones.Backbone.from_preset(directory, load_weights=False)
    assert type(fresh) is cls and fresh.get_config() == ours.get_config()
    assert not np.allclose(hidden(fresh(inputs))[real], hidden(got)[real])
    bf16 = backbones.Backbone.from_preset(directory, dtype="bfloat16", trainable=False)
    assert bf16.dtype_policy.name == "bfloat16" and not bf16.trainable
    np.testing.assert_allclose(hidden(bf16(inputs))[real], hidden(got)[real], atol=0.1)

    if hub_tokenizer is None:  # families whose tokenizer converter is not written yet
        assert ours.tokenizer is None
        return directory
    theirs = hub_tokenizer(texts)
    theirs = theirs.to_list() if hasattr(theirs, "to_list") else theirs  # ragged: lists, or a tf.RaggedTensor
    assert ours.tokenizer(texts) == [[int(i) for i in ids] for ids in theirs]
    return directory
