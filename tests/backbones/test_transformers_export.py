"""Export to transformers: a tiny random transformers model is converted to
ours, LoRA is trained a little (random B), exported, and transformers loads
the export with no missing or unexpected weights and gives our outputs."""

import json

import numpy as np
import pytest

import backbones
from backbones import registry
from backbones.errors import ConversionError, QuantizationError
from tests.helpers import bundled_presets, hidden, randomize_lora

IDS = np.array([[5, 6, 7, 8, 9, 3], [9, 10, 11, 4, 0, 0]], "int32")
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], "int32")


def tiny_hf_model(model_type, head="base"):
    """A tiny random transformers model of `model_type` (weights perturbed off their init)."""
    import torch
    import transformers

    configs = {
        "gpt2": lambda: transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2),
        "llama": lambda: transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24,
                                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                  max_position_embeddings=32),
        "gemma": lambda: transformers.GemmaConfig(vocab_size=64, hidden_size=16, intermediate_size=24,
                                                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                                  head_dim=8, max_position_embeddings=32),
        "bert": lambda: transformers.BertConfig(vocab_size=64, hidden_size=16, intermediate_size=24,
                                                num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32),
    }
    auto = {"base": transformers.AutoModel, "causal_lm": transformers.AutoModelForCausalLM,
            "classifier": transformers.AutoModelForSequenceClassification}[head]
    torch.manual_seed(0)
    model = auto.from_config(configs[model_type]())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


WORDS = ["the", "movie", "was", "great", "bad", "film", "a", "good"]
SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def save_tiny(model, directory):
    """`save_pretrained` plus a tiny word-level tokenizer (ids below any tiny vocabulary)."""
    import tokenizers

    model.save_pretrained(directory)
    vocab = {t: i for i, t in enumerate([*SPECIAL.values(), *WORDS])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({f"{r}_token": t for r, t in SPECIAL.items()}))
    return directory


def exported_families():
    """model_type of each family that has an exporter (from the converter registry)."""
    backbones.load()
    seen, types = set(), []
    for model_type, converter in registry.HF_CONVERTERS.items():
        if hasattr(converter, "export_config") and converter.backbone_class not in seen:
            seen.add(converter.backbone_class)
            types.append(model_type)
    return types


def test_every_exporting_family_is_tested():
    assert sorted(exported_families()) == ["bert", "gemma", "gpt2", "llama"]


def _inputs(backbone):
    x = {"token_ids": IDS, "padding_mask": MASK}
    if backbone.is_encoder:
        x["segment_ids"] = np.zeros_like(IDS)
    return x


def _hf_load(auto, directory):
    model, info = auto.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@pytest.mark.parametrize("model_type", exported_families())
def test_backbone_with_lora_exports_to_automodel(model_type, tmp_path):
    import torch
    import transformers

    save_tiny(tiny_hf_model(model_type), tmp_path / "source")
    ours = backbones.Backbone.from_preset(tmp_path / "source")
    ours.enable_lora(2, targets=["query", "value", "ffn"])
    randomize_lora(ours)
    expected = hidden(ours(_inputs(ours)))
    ours.export_to_transformers(tmp_path / "export")
    assert not (tmp_path / "export" / "model.safetensors.index.json").exists()
    model = _hf_load(transformers.AutoModel, tmp_path / "export")
    with torch.no_grad():
        got = model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state.numpy()
    real = MASK.astype(bool)
    assert np.abs(got[real] - expected[real]).max() < 1e-4
    # And it reads back as ours (merged kernels: rounding differs from x W + s (x A) B).
    again = backbones.Backbone.from_preset(tmp_path / "export")
    np.testing.assert_allclose(hidden(again(_inputs(again)))[real], expected[real], atol=1e-5)


def test_sharded_export_and_atomic_replace(tmp_path):
    import transformers

    tiny_hf_model("llama").save_pretrained(tmp_path / "source")
    ours = backbones.Backbone.from_preset(tmp_path / "source")
    target = tmp_path / "export"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    ours.export_to_transformers(target, max_shard_size=2e-6)  # ~2 KB shards
    index = json.loads((target / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in target.glob("model-*.safetensors"))
    assert len(shards) > 3 and sorted(set(index["weight_map"].values())) == shards
    assert not (target / "stale.bin").exists()
    _hf_load(transformers.AutoModel, target)


def test_causal_lm_untied_llama_exports_its_lm_head(tmp_path):
    import torch
    import tasks
    import transformers

    save_tiny(tiny_hf_model("llama", "causal_lm"), tmp_path / "source")
    lm = tasks.CausalLM(backbones.Backbone.from_preset(tmp_path / "source"), sequence_length=8)
    assert lm.backbone.output_embedding is not None
    expected = keras_logits(lm.backbone)
    lm.export_to_transformers(tmp_path / "export")
    model = _hf_load(transformers.AutoModelForCausalLM, tmp_path / "export")
    with torch.no_grad():
        got = model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits.numpy()
    real = MASK.astype(bool)
    assert np.abs(got[real] - expected[real]).max() < 1e-4


@pytest.mark.parametrize("model_type, overrides", [("mistral", {"sliding_window": 3}),
                                                    ("qwen2", {"tie_word_embeddings": True})])
def test_mistral_and_qwen2_layouts_export_as_themselves(model_type, overrides, tmp_path):
    """A LlamaBackbone loaded from Mistral (sliding window) or Qwen2 (q/k/v biases) goes out
    as that model_type, LoRA merged, and AutoModelForCausalLM gives our logits."""
    import torch
    import tasks
    import transformers

    from tests.backbones.llama.test_llama import hf_causal_lm, hf_config

    save_tiny(hf_causal_lm(hf_config(model_type, vocab_size=64, **overrides)), tmp_path / "source")
    lm = tasks.CausalLM(backbones.Backbone.from_preset(tmp_path / "source"), sequence_length=8)
    lm.backbone.enable_lora(2)
    randomize_lora(lm.backbone)
    expected = keras_logits(lm.backbone)
    lm.export_to_transformers(tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["model_type"] == model_type
    model = _hf_load(transformers.AutoModelForCausalLM, tmp_path / "export")
    with torch.no_grad():
        got = model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits.numpy()
    real = MASK.astype(bool)
    assert np.abs(got[real] - expected[real]).max() < 1e-4


def keras_logits(backbone):
    import keras

    return keras.ops.convert_to_numpy(backbone.compute_logits(backbone(_inputs(backbone))))


@pytest.mark.parametrize("model_type", exported_families())
def test_classifier_exports_to_sequence_classification(model_type, tmp_path):
    import keras
    import torch
    import tasks
    import transformers

    save_tiny(tiny_hf_model(model_type), tmp_path / "source")
    backbone = backbones.Backbone.from_preset(tmp_path / "source")
    # An encoder's head (BERT's `classifier`) has a bias; a decoder's (`score`) has none.
    clf = tasks.TextClassifier(backbone, num_classes=3, sequence_length=8, head_bias=backbone.is_encoder)
    rng = np.random.default_rng(0)
    for w in clf.output_dense.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    x = clf.preprocessor(["the movie was great", "bad"])
    expected = keras.ops.convert_to_numpy(clf(x))
    clf.export_to_transformers(tmp_path / "export")
    model = _hf_load(transformers.AutoModelForSequenceClassification, tmp_path / "export")
    kwargs = {"token_type_ids": torch.tensor(x["segment_ids"])} if "segment_ids" in x else {}
    with torch.no_grad():
        got = model(input_ids=torch.tensor(x["token_ids"]), attention_mask=torch.tensor(x["padding_mask"]),
                    **kwargs).logits.numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_what_transformers_cannot_hold_is_refused(tmp_path):
    import tasks

    save_tiny(tiny_hf_model("gpt2"), tmp_path / "source")
    clf = tasks.TextClassifier(backbones.Backbone.from_preset(tmp_path / "source"), num_classes=2, sequence_length=8)
    clf.output_dense.bias.assign(np.ones(2, "float32"))
    with pytest.raises(ConversionError, match="non-zero bias.*head_bias=False"):
        clf.export_to_transformers(tmp_path / "export")
    assert not (tmp_path / "export").exists()
    clf.output_dense.bias.assign(np.zeros(2, "float32"))
    clf.preprocessor.tokenizer.special_tokens["pad"] = SPECIAL["eos"]  # transformers would skip the pooled eos
    with pytest.raises(ConversionError, match="pad token is its eos token"):
        clf.export_to_transformers(tmp_path / "export")
    clf.backbone.quantize("int8")
    with pytest.raises(QuantizationError, match="quantized"):
        clf.backbone.export_to_transformers(tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_exported_tokenizer_adds_the_special_tokens_the_task_was_trained_with(tmp_path):
    """A transformers user's `tokenizer(text)` gives the ids our preprocessor packs: a decoder
    classifier's appended eos (the token it pools), BERT's [CLS]/[SEP], a causal LM prompt's bos."""
    import tasks
    import transformers

    text = "The movie was great!"
    for preset in ("gpt2_tiny_en", "llama_tiny_en", "gemma_tiny_en", "bert_tiny_random_en"):
        clf = tasks.TextClassifier.from_preset(preset, num_classes=2, sequence_length=16, head_bias=False)
        if preset == "gpt2_tiny_en":  # its pad is its eos: give it another pad to export
            clf.preprocessor.tokenizer.special_tokens["pad"] = "!"
            clf.preprocessor.pad_id = clf.preprocessor.tokenizer.special_token_id("pad")
        clf.export_to_transformers(tmp_path / preset / "clf")
        packed = clf.preprocessor([text])
        ours = [int(i) for i, m in zip(packed["token_ids"][0], packed["padding_mask"][0]) if m]
        assert transformers.AutoTokenizer.from_pretrained(tmp_path / preset / "clf")(text)["input_ids"] == ours, preset
        if not clf.backbone.is_encoder:
            lm = tasks.CausalLM.from_preset(preset, sequence_length=16)
            lm.export_to_transformers(tmp_path / preset / "lm")
            theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / preset / "lm")
            assert theirs(text)["input_ids"] == lm.preprocessor.prompts([text])[0], preset


def test_tokenizer_export_gives_our_ids(tmp_path):
    import transformers

    for preset in bundled_presets():  # from the registry: a new family is tested too
        ours = backbones.Backbone.from_preset(preset)
        ours.tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        ours.export_to_transformers(tmp_path / preset)
        theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / preset)
        chat = [{"role": "user", "content": "hi"}]
        assert theirs.apply_chat_template(chat, tokenize=False) == ours.tokenizer.apply_chat_template(chat)
        for text in ("The movie was great!", "naïve café 🙂  spaces"):
            assert theirs(text, add_special_tokens=False)["input_ids"] == ours.tokenizer([text])[0]
        for role in ours.tokenizer.special_tokens:
            assert getattr(theirs, f"{role}_token_id") == ours.tokenizer.special_token_id(role), (preset, role)
