"""SentencePiece model files -> our Tokenizer, pinned against `sentencepiece` itself."""

import io
import json

import numpy as np
import pytest

import backbones
from backbones.common.sentencepiece import parse_model_proto, tokenizer_from_spm
from backbones.errors import PresetFormatError

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Hello world! Hello there, hello again.",
          "Numbers like 12345 and 3.14 appear in text 2026.", "naïve café résumé über straße",
          "Tokenizers split words into pieces; pieces into bytes.", "日本語のテキストも少し。",
          "  indented   line  ", "emoji 🙂 rarely appear"] * 30
TEXTS = ["", " ", "   ", "hello", " hello", "hello ", "  hello  world  ", "Hello world!", "a  b   c",
         "naïve café", "12345 67890", "3.14159", "🙂🚀 emoji", "日本語", "unknown: ЖЩЮ ñ ß", "\ttab\nnewline",
         "The quick brown fox jumps over the lazy dog.", "x", "hellohellohello", "▁already", "<mask> token",
         "a<mask>b", "end <mask>", "ÅÆØ 한국어 ✓", "ｆｕｌｌｗｉｄｔｈ ①"]
MODELS = {
    # Llama 2's settings: identity normalization, spaces kept, byte fallback.
    "bpe_llama2": dict(model_type="bpe", vocab_size=400, byte_fallback=True, normalization_rule_name="identity",
                       remove_extra_whitespaces=False),
    # Gemma's: no dummy prefix, user-defined pieces, its own special ids.
    "bpe_gemma": dict(model_type="bpe", vocab_size=400, byte_fallback=True, normalization_rule_name="identity",
                      remove_extra_whitespaces=False, add_dummy_prefix=False,
                      user_defined_symbols=["<mask>", "\t", "▁▁"], pad_id=0, eos_id=1, bos_id=2, unk_id=3),
    # sentencepiece's defaults: NFKC character map, extra spaces removed; no byte fallback (unknowns).
    "bpe_nfkc_unk": dict(model_type="bpe", vocab_size=150, user_defined_symbols=["<mask>"]),
    "unigram_nfkc_unk": dict(model_type="unigram", vocab_size=150),
    "unigram_bytes": dict(model_type="unigram", vocab_size=400, byte_fallback=True, user_defined_symbols=["<mask>"]),
}


def train(**options):
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=buffer, minloglevel=2,
                                   hard_vocab_limit=False, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("name", MODELS)
def test_matches_sentencepiece(name, tmp_path):
    import sentencepiece as spm

    data = train(**MODELS[name])
    (tmp_path / "tokenizer.model").write_bytes(data)
    reference = spm.SentencePieceProcessor(model_proto=data)
    ours = tokenizer_from_spm(tmp_path / "tokenizer.model")
    assert ours.vocabulary_size == reference.get_piece_size()
    for i in range(reference.get_piece_size()):
        assert ours.token_to_id(reference.id_to_piece(i)) == i
    ids = ours(TEXTS)
    for text, got in zip(TEXTS, ids):
        assert got == reference.encode(text), text
    unk = reference.unk_id()
    for text, got in zip(TEXTS, ids):  # sentencepiece decodes an unknown piece as " ⁇ ", we drop it
        if unk not in got:
            assert ours.detokenize([got]) == [reference.decode(got)], text
    expected = {r: reference.id_to_piece(getattr(reference, f"{r}_id")())
                for r in ("bos", "eos", "unk", "pad") if getattr(reference, f"{r}_id")() >= 0}
    assert ours.special_tokens == expected
    # The built tokenizer survives our preset format (tokenizer.json).
    ours.save_to_preset(tmp_path)
    reloaded = backbones.Tokenizer.from_directory(tmp_path)
    assert reloaded(TEXTS) == ids and reloaded.special_tokens == ours.special_tokens


def test_proto_fields():
    model = parse_model_proto(train(**MODELS["bpe_gemma"]))
    assert (model.model_type, model.byte_fallback, model.add_dummy_prefix, model.remove_extra_whitespaces) == \
        (2, True, False, False)
    assert (model.pad_id, model.eos_id, model.bos_id, model.unk_id) == (0, 1, 2, 3)
    assert [p.type for p in model.pieces[:8]] == [3, 3, 3, 2, 4, 4, 4, 6]  # control, unknown, user, byte
    default = parse_model_proto(train(**MODELS["unigram_nfkc_unk"]))
    assert (default.model_type, default.pad_id, default.normalizer_name) == (1, -1, "nmt_nfkc")
    assert default.precompiled_charsmap and default.add_dummy_prefix and default.remove_extra_whitespaces


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage", b'{"model": {}}', b"\x0a\xff\xff\xff"])
def test_not_a_sentencepiece_file(content, tmp_path):
    path = tmp_path / "vocabulary.spm"
    path.write_bytes(content)
    with pytest.raises(PresetFormatError, match="vocabulary.spm"):
        tokenizer_from_spm(path)


def test_llama_checkpoint_with_only_tokenizer_model(tmp_path):
    from tests.backbones.llama.test_llama import hf_causal_lm, hf_config

    data = train(**MODELS["bpe_llama2"])
    directory = tmp_path / "ckpt"
    hf_causal_lm(hf_config(vocab_size=len(parse_model_proto(data).pieces))).save_pretrained(directory)
    (directory / "tokenizer.model").write_bytes(data)
    (directory / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<unk>"}))
    for name in ("tokenizer.json",):
        assert not (directory / name).exists()
    backbone = backbones.Backbone.from_preset(directory)
    tokenizer = backbone.tokenizer
    assert tokenizer.special_tokens == {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "<unk>"}
    ids = tokenizer(["Hello world! naïve 🙂"])[0]
    assert tokenizer.detokenize([ids]) == ["Hello world! naïve 🙂"]
    out = backbone({"token_ids": np.array([ids]), "padding_mask": np.ones((1, len(ids)), "int32")})
    assert out.shape[:2] == (1, len(ids))

    (directory / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(PresetFormatError, match="tokenizer.model"):
        backbones.Backbone.from_preset(directory)


@pytest.mark.parametrize("name", MODELS)
def test_matches_transformers(name, tmp_path, monkeypatch):
    """transformers' own conversion of the same tokenizer.model (AutoTokenizer) agrees."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import transformers

    (tmp_path / "tokenizer.model").write_bytes(train(**MODELS[name]))
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = tokenizer_from_spm(tmp_path / "tokenizer.model")
    assert ours(TEXTS) == [reference(t, add_special_tokens=False).input_ids for t in TEXTS]


def test_gemma_and_mistral_checkpoints_read_tokenizer_model(tmp_path):
    from backbones.formats.transformers import checkpoint_tokenizer
    from backbones.registry import HF_CONVERTERS

    (tmp_path / "tokenizer.model").write_bytes(train(**MODELS["bpe_gemma"]))
    gemma = checkpoint_tokenizer(HF_CONVERTERS["gemma"], tmp_path)
    assert gemma.special_tokens == {"pad": "<pad>", "eos": "</s>", "bos": "<s>", "unk": "<unk>"}
    assert [gemma.special_token_id(r) for r in ("pad", "eos", "bos", "unk")] == [0, 1, 2, 3]
    assert checkpoint_tokenizer(HF_CONVERTERS["mistral"], tmp_path)(TEXTS) == gemma(TEXTS)
    (tmp_path / "missing").mkdir()
    assert checkpoint_tokenizer(HF_CONVERTERS["gemma"], tmp_path / "missing") is None
