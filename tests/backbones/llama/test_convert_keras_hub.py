"""A keras-hub Llama preset (kaggle://keras/llama2/..., llama3/...) loads converted (weights, config, tokenizer)."""

import json

import numpy as np
import pytest

import backbones
from backbones.errors import ConversionError, PresetFormatError
from tests.backbones.common.test_sentencepiece import CORPUS, MODELS, TEXTS, train
from tests.helpers import run_keras_hub_preset_test

INPUTS = {"token_ids": np.array([[5, 17, 42, 7, 98, 3, 11, 0], [1, 2, 3, 4, 5, 0, 0, 0]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0]], "int32")}
SMALL = dict(vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=16,
             intermediate_dim=32)
LLAMA3_ROPE = dict(rope_max_wavelength=500000, rope_frequency_adjustment_factor=8.0, rope_low_freq_factor=1.0,
                   rope_high_freq_factor=4.0, rope_pretraining_sequence_length=4)


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
# keras-hub's BytePairTokenizer splits a run of spaces before a word unlike GPT-2's
# and Llama 3's own pattern ("  hello": "ĠĠ" "hello", ours "Ġ" "Ġhello"): left out.
LLAMA3_TEXTS = [t for t in TEXTS if t != "  hello  world  "] + ["<|begin_of_text|>Hello<|eot_id|>", "a <|eot_id|> b", "<|start_header_id|>user<|end_header_id|>"]


def llama2_tokenizer():
    import keras_hub

    return keras_hub.models.LlamaTokenizer(proto=train(**MODELS["bpe_llama2"]))


def llama3_tokenizer():
    """A keras-hub Llama3Tokenizer over a byte-level BPE trained on CORPUS (specials appended)."""
    import keras_hub

    from backbones.gpt2.tokenizer import train_byte_level_bpe

    model = json.loads(train_byte_level_bpe(CORPUS, vocab_size=400).to_str())["model"]
    vocab = {t: i for t, i in model["vocab"].items() if t != "<|endoftext|>"}
    vocab = {t: i for i, t in enumerate(sorted(vocab, key=vocab.get) + LLAMA3_SPECIALS)}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return keras_hub.models.Llama3Tokenizer(vocabulary=vocab, merges=merges)


@pytest.mark.parametrize("variant", ["llama2_untied", "llama3_tied"])
def test_keras_hub_llama_preset(tmp_path, variant):
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    if variant == "llama2_untied":
        tokenizer, cls, texts, options = llama2_tokenizer(), keras_hub.models.LlamaBackbone, TEXTS, {}
    else:
        tokenizer, cls, texts = llama3_tokenizer(), keras_hub.models.Llama3Backbone, LLAMA3_TEXTS
        options = {"tie_word_embeddings": True, **LLAMA3_ROPE}
    hub = cls(**{**SMALL, "vocabulary_size": tokenizer.vocabulary_size()}, **options)
    directory = run_keras_hub_preset_test(hub, tokenizer, INPUTS, texts, tmp_path, class_name="LlamaBackbone")
    ours = backbones.Backbone.from_preset(directory)
    assert ours.tie_word_embeddings == bool(options)
    if not options:
        np.testing.assert_array_equal(ours.output_embedding.kernel.numpy(), hub.token_embedding.reverse_embeddings.numpy())
    # keras-hub's roles: start/end tokens, pad id 0.
    ids = {role: ours.tokenizer.special_token_id(role) for role in ("bos", "eos", "pad")}
    assert ids == {"bos": tokenizer.start_token_id, "eos": tokenizer.end_token_id, "pad": tokenizer.pad_token_id}
    expected = ("<s>", "</s>") if variant == "llama2_untied" else ("<|begin_of_text|>", "<|end_of_text|>")
    assert (ours.tokenizer.special_tokens["bos"], ours.tokenizer.special_tokens["eos"]) == expected


def test_position_scaling_is_refused(tmp_path):
    import keras_hub

    keras_hub.models.LlamaBackbone(**SMALL).save_to_preset(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    config["config"]["rope_position_scaling_factor"] = 2.0
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="rope_position_scaling_factor"):
        backbones.Backbone.from_preset(tmp_path / "p")


def test_unknown_tokenizer_class_is_refused(tmp_path):
    import keras_hub

    keras_hub.models.LlamaBackbone(**SMALL).save_to_preset(tmp_path / "p")
    (tmp_path / "p" / "tokenizer.json").write_text(json.dumps(
        {"class_name": "MistralTokenizer", "registered_name": "keras_hub>MistralTokenizer", "config": {}}))
    with pytest.raises(PresetFormatError, match="MistralTokenizer"):
        backbones.Backbone.from_preset(tmp_path / "p")
