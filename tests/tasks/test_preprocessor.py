import time
import warnings

import numpy as np
import pytest

import backbones
import tasks
from tests.tasks.fakes import word_tokenizer


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    return backbones.Tokenizer.from_preset("gpt2_tiny_en")


def test_decoder_classifier_packing_appends_eos_and_right_pads(gpt2_tokenizer):
    pre = tasks.Preprocessor(gpt2_tokenizer, sequence_length=10)
    ids = gpt2_tokenizer(["the movie was great"])[0]
    eos = gpt2_tokenizer.special_token_id("eos")
    x = pre(["the movie was great"])
    n = len(ids) + 1
    assert x["token_ids"][0, :n].tolist() == ids + [eos]
    assert x["padding_mask"][0].tolist() == [1] * n + [0] * (10 - n)
    assert x["token_ids"].dtype == np.int32 and set(x) == {"token_ids", "padding_mask"}
    # No pad token in GPT-2's tokenizer: padded positions get id 0 (masked anyway).
    assert pre.pad_id == 0 and (x["token_ids"][0, n:] == 0).all()


def test_causal_lm_packing_shifts_and_masks(gpt2_tokenizer):
    pre = tasks.Preprocessor(gpt2_tokenizer, sequence_length=8)
    ids = gpt2_tokenizer(["the movie"])[0]
    bos, eos = gpt2_tokenizer.special_token_id("bos"), gpt2_tokenizer.special_token_id("eos")
    x, y, weight = pre.causal_lm(["the movie"])
    packed = [bos] + ids + [eos]
    n = len(packed) - 1
    assert x["token_ids"][0, :n].tolist() == packed[:-1]
    assert y[0, :n].tolist() == packed[1:]
    assert weight[0].tolist() == [1.0] * n + [0.0] * (8 - n)
    # The eos is a real input token too (its target is padding, weight 0).
    assert x["padding_mask"][0].tolist() == [1] * (n + 1) + [0] * (7 - n)


def test_empty_strings_pack_to_special_tokens_only(gpt2_tokenizer):
    """Documented behaviour: an empty string is allowed and packs to its special tokens."""
    pre = tasks.Preprocessor(gpt2_tokenizer, sequence_length=6)
    eos = gpt2_tokenizer.special_token_id("eos")
    x = pre(["", "the"])
    assert x["padding_mask"][0].tolist() == [1, 0, 0, 0, 0, 0]
    assert x["token_ids"][0, 0] == eos
    x, y, weight = pre.causal_lm([""])  # [BOS] [EOS]: one target, the eos
    assert weight[0].tolist() == [1.0, 0, 0, 0, 0, 0] and y[0, 0] == eos
    enc = tasks.Preprocessor(word_tokenizer(), sequence_length=4, is_encoder=True)
    assert enc([""])["token_ids"][0].tolist() == [2, 3, 0, 0]  # [CLS] [SEP] [PAD] [PAD]


def test_encoder_packing_cls_sep_segments_and_pad_token():
    pre = tasks.Preprocessor(word_tokenizer(), sequence_length=6, is_encoder=True)
    x = pre(["good film", "bad"])
    assert x["token_ids"].tolist() == [[2, 4, 6, 3, 0, 0], [2, 5, 3, 0, 0, 0]]
    assert x["padding_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]]
    assert x["segment_ids"].tolist() == [[0] * 6] * 2
    assert pre.feature_names == ("token_ids", "padding_mask", "segment_ids")


def test_truncation_keeps_special_tokens_and_warns_once_with_count(gpt2_tokenizer):
    pre = tasks.Preprocessor(gpt2_tokenizer, sequence_length=5)
    long = "the movie was really very quite great and the food was awful"
    eos = gpt2_tokenizer.special_token_id("eos")
    with pytest.warns(tasks.TruncationWarning, match="2 of 3 texts were longer than sequence_length=5"):
        x = pre([long, "the", long])
    assert x["token_ids"][0].tolist() == gpt2_tokenizer([long])[0][:4] + [eos]
    assert x["padding_mask"][0].tolist() == [1] * 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second truncation does not warn again
        x, y, weight = pre.causal_lm([long])
    assert pre.truncated_count == 3
    # A truncated LM text keeps its start and loses its eos: it does not end there.
    assert x["token_ids"][0, 0] == gpt2_tokenizer.special_token_id("bos") and eos not in y[0].tolist()


def test_accepts_numpy_bytes_and_rejects_non_strings(gpt2_tokenizer):
    pre = tasks.Preprocessor(gpt2_tokenizer, sequence_length=8)
    a = pre(np.array(["the movie", "great"]))
    b = pre([b"the movie", "great"])
    np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
    with pytest.raises(tasks.TaskInputError, match=r"index 1 is None"):
        pre(["fine", None])


def test_bad_arguments(gpt2_tokenizer):
    with pytest.raises(tasks.MissingTokenizerError, match="tokenizer=None"):
        tasks.Preprocessor(None)
    with pytest.raises(tasks.TaskConfigError, match="sequence_length"):
        tasks.Preprocessor(gpt2_tokenizer, sequence_length=0)
    with pytest.raises(tasks.TaskConfigError, match="cls and sep"):
        tasks.Preprocessor(backbones.Tokenizer(gpt2_tokenizer.tokenizer, {}), is_encoder=True)


class CountingEncoder:
    """Wraps a tokenizers.Tokenizer, counting batch calls; single encodes fail."""

    def __init__(self, inner):
        self.inner, self.batch_calls = inner, 0

    def encode_batch(self, texts, **kwargs):
        self.batch_calls += 1
        return self.inner.encode_batch(texts, **kwargs)

    def encode(self, *args, **kwargs):
        raise AssertionError("texts must be encoded in batches, not one at a time")

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_tokenizes_in_rust_batches_not_one_string_at_a_time(gpt2_tokenizer):
    tok = backbones.Tokenizer(CountingEncoder(gpt2_tokenizer.tokenizer), gpt2_tokenizer.special_tokens)
    pre = tasks.Preprocessor(tok, sequence_length=16)
    texts = ["the movie was great and the food was awful"] * 20_000
    start = time.perf_counter()
    x = pre(texts)
    seconds = time.perf_counter() - start
    assert tok.tokenizer.batch_calls == 3  # ceil(20000 / ENCODE_CHUNK)
    assert x["token_ids"].shape == (20_000, 16)
    print(f"tokenized and packed 20,000 texts in {seconds:.2f} s")
