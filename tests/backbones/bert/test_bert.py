import json

import numpy as np
import pytest

import backbones
from backbones.bert import BertBackbone
from backbones.bert.convert_hf import BertConverter
from backbones.errors import ConversionError
from tests.helpers import check_tiny_preset_rebuilds, run_backbone_test

SMALL = dict(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
             max_sequence_length=24)
INPUTS = {"token_ids": np.array([[2, 9, 4, 3, 7, 3], [2, 8, 3, 0, 0, 0]], "int32"),
          "segment_ids": np.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], "int32")}


def test_backbone_contract(tmp_path):
    run_backbone_test(BertBackbone, SMALL, INPUTS, (2, 6, 16), tmp_path,
                      lora_targets=["key", "attention_output", "ffn"])
    out = BertBackbone(**SMALL)(INPUTS)
    assert out["pooled_output"].shape == (2, 16)
    assert np.abs(out["pooled_output"].numpy()).max() <= 1.0  # tanh
    assert BertBackbone.is_encoder


def test_padding_does_not_change_real_tokens():
    model = BertBackbone(**SMALL, dropout=0.0)
    short = {k: v[1:, :3] for k, v in INPUTS.items()}
    a, b = model(INPUTS), model(short)
    np.testing.assert_allclose(a["sequence_output"].numpy()[1, :3], b["sequence_output"].numpy()[0], atol=1e-5)
    np.testing.assert_allclose(a["pooled_output"].numpy()[1], b["pooled_output"].numpy()[0], atol=1e-5)


IDS = np.array([[2, 17, 42, 7, 98, 3, 11, 3], [2, 5, 6, 3, 0, 0, 0, 0]])
SEGMENTS = np.array([[0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0]])
MASK = np.array([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 0]])


def tiny_hf_bert(cls_name="BertModel", **overrides):
    import torch
    import transformers

    torch.manual_seed(0)
    config = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=16, type_vocab_size=3,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  initializer_range=0.2)  # large enough weights that tanh-GELU would fail parity
    model = getattr(transformers, cls_name)(transformers.BertConfig(**{**config, **overrides})).eval()
    with torch.no_grad():  # LayerNorms start at (1, 0) and biases at 0: perturb all so each one counts
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def hf_outputs(model):
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(IDS), token_type_ids=torch.tensor(SEGMENTS),
                    attention_mask=torch.tensor(MASK))
    return out.last_hidden_state.numpy(), None if out.pooler_output is None else out.pooler_output.numpy()


def ours(directory):
    out = backbones.Backbone.from_preset(directory)({"token_ids": IDS, "segment_ids": SEGMENTS, "padding_mask": MASK})
    return out["sequence_output"].numpy(), out["pooled_output"].numpy()


@pytest.mark.parametrize("shape", [{}, dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                                            intermediate_size=64, layer_norm_eps=1e-5)])
def test_parity_with_transformers(tmp_path, shape):
    hf = tiny_hf_bert(**shape)
    hf.save_pretrained(tmp_path)
    expected, expected_pooled = hf_outputs(hf)
    got, pooled = ours(tmp_path)
    real = MASK == 1
    error, pooled_error = np.abs(got[real] - expected[real]).max(), np.abs(pooled - expected_pooled).max()
    print(f"BERT parity {shape or 'default'}: max abs error hidden {error:.2e}, pooled {pooled_error:.2e}")
    assert error < 1e-4 and pooled_error < 1e-4


def test_masked_lm_checkpoint_loads(tmp_path):
    """BertForMaskedLM: tensors prefixed `bert.`, `cls.*` ignored, no pooler."""
    hf = tiny_hf_bert("BertForMaskedLM")
    hf.save_pretrained(tmp_path)
    expected, _ = hf_outputs(hf.bert)
    got, _ = ours(tmp_path)
    assert np.abs(got[MASK == 1] - expected[MASK == 1]).max() < 1e-4


def test_converter_errors(tmp_path):
    tiny_hf_bert().save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "num_hidden_layers": 1}))  # layer 1 is left over
    with pytest.raises(ConversionError, match="unexpected tensor"):
        backbones.Backbone.from_preset(tmp_path)
    with pytest.raises(ConversionError, match="hidden_act"):
        BertConverter.convert_config({**config, "hidden_act": "relu"})
    with pytest.raises(ConversionError, match="position_embedding_type"):
        BertConverter.convert_config({**config, "position_embedding_type": "relative_key"})


TEXTS = ["The movie was GREAT!", "Naïve café, Ünïcödé? Résumé...", "don't stop-believing [MASK] now",
         "中文 and 日本 chars", "  spaces\tand\nnewlines  ", "unknownword xyzzy ☃", ""]
EXTRA = ["é", "##é", "ï", "##ï", "ü", "##ü", "ö", "##ö", "中", "文", "日", "本",
         "re", "##sum", "cafe", "café", "naive"]


@pytest.mark.parametrize("lowercase", [True, False])
def test_tokenizer_from_vocab_txt_matches_transformers(tmp_path, lowercase):
    """A transformers-style directory with only vocab.txt: our WordPiece encodes like
    BertTokenizer (tokenizers-backed) and BertTokenizerLegacy (pure Python)."""
    import transformers
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tiny = backbones.Tokenizer.from_preset("bert_tiny_random_en").tokenizer
    vocab = sorted(tiny.get_vocab(), key=tiny.token_to_id) + EXTRA
    cased = [t.upper() for t in vocab[5:] if not t.startswith("##")]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab + cased) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}))
    tokenizer = BertConverter.convert_tokenizer(tmp_path)
    assert tokenizer.special_tokens == {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]",
                                        "mask": "[MASK]"}
    fast = transformers.BertTokenizer.from_pretrained(tmp_path)
    legacy = BertTokenizerLegacy(str(tmp_path / "vocab.txt"), do_lower_case=lowercase)
    expected = [fast.encode(t, add_special_tokens=False) for t in TEXTS]
    assert tokenizer(TEXTS) == expected
    assert expected == [legacy.encode(t, add_special_tokens=False) for t in TEXTS]
    assert [tokenizer.tokenizer.encode(t).ids for t in TEXTS] == [fast.encode(t) for t in TEXTS]


def test_hf_directory_gets_tokenizer_and_roles(tmp_path):
    """tokenizer.json with a tokenizer_config.json that names no roles (like
    google-bert/bert-base-uncased): the converter's BERT defaults fill them in."""
    hf = tiny_hf_bert(vocab_size=backbones.Tokenizer.from_preset("bert_tiny_random_en").vocabulary_size)
    hf.save_pretrained(tmp_path)
    backbones.Tokenizer.from_preset("bert_tiny_random_en").tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    model = backbones.Backbone.from_preset(tmp_path)
    assert model.tokenizer.special_token_id("cls") == 2 and model.tokenizer.special_token_id("sep") == 3


def test_tiny_preset_is_reproducible(tmp_path):
    """scripts/make_tiny_presets.py rebuilds the bundled preset bit for bit."""
    bundled = check_tiny_preset_rebuilds("bert", "bert_tiny_random_en", tmp_path)
    ids = bundled.tokenizer(["The movie was GREAT, 10/10!"])[0]  # lowercased; no [UNK] in ASCII text
    assert ids == bundled.tokenizer(["the movie was great, 10/10!"])[0]
    assert bundled.tokenizer.special_token_id("unk") not in ids


def test_builtin_presets_listed():
    names = {"bert_tiny_en_uncased", "bert_small_en_uncased", "bert_medium_en_uncased", "bert_base_en_uncased",
             "bert_base_en", "bert_large_en_uncased", "bert_large_en", "bert_base_multi", "bert_tiny_random_en"}
    assert names == set(BertBackbone.presets)
    assert BertBackbone.presets["bert_base_en_uncased"]["handle"] == "hf://google-bert/bert-base-uncased"
