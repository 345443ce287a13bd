"""A SentencePiece-style BPE (Llama, Gemma), built with `tokenizers`.

Spaces become "▁" and one "▁" is prepended (so decoding, which strips it,
gives the text back exactly), pieces never cross words, and characters outside the vocabulary fall back to byte
tokens `<0x00>`..`<0xFF>`, as in Llama's and Gemma's tokenizer.json.
"""

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def train_sentencepiece_bpe(texts, vocab_size, special_tokens, unk_token="<unk>"):
    """A byte-fallback BPE trained on `texts` (deterministic for the same input).

    Ids: `special_tokens` first (in order), then the 256 byte tokens, then
    the trained pieces, like Llama 2's layout.

    Example:
    >>> tok = train_sentencepiece_bpe(["hello world"] * 10, 300, ["<unk>", "<s>", "</s>"])
    >>> tok.decode(tok.encode("  hello wörld").ids)
    '  hello wörld'
    """
    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Splits before each "▁" (which then starts its piece); adds no "▁" itself.
    pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer_model = tokenizers.Tokenizer(models.BPE(unk_token=unk_token))
    trainer_model.normalizer, trainer_model.pre_tokenizer = normalizer, pre_tokenizer
    reserved = len(special_tokens) + len(BYTE_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - reserved, special_tokens=[], show_progress=False)
    trainer_model.train_from_iterator(texts, trainer=trainer)
    trained = trainer_model.model
    pieces = sorted(trainer_model.get_vocab().items(), key=lambda item: item[1])
    vocab = {token: i for i, token in enumerate(special_tokens + BYTE_TOKENS)}
    for piece, _ in pieces:
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) for m in _merges(trained)]
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token=unk_token, byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tokenizer.add_special_tokens(list(special_tokens))
    return tokenizer


def _merges(model):
    import json

    merges = json.loads(tokenizers.Tokenizer(model).to_str())["model"]["merges"]
    return [m.split(" ") if isinstance(m, str) else m for m in merges]
