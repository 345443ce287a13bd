"""BERT's WordPiece tokenizer, built with `tokenizers`."""

import string

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

# Role -> token, in the id order of a trained vocabulary ([PAD] = 0 as in BERT).
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def _bert_wordpiece(model, lowercase=True, strip_accents=None, tokenize_chinese_chars=True):
    """BERT's pipeline around a WordPiece model. `strip_accents=None` follows
    `lowercase`, as in the original BERT."""
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
        strip_accents=strip_accents, lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _add_special_tokens(tokenizer, special_tokens):
    """Marks the special tokens (kept whole in text, never normalised or split,
    as in transformers) and adds the `[CLS] x [SEP]` post-processor, so the saved
    tokenizer.json behaves like transformers' one. Our `Tokenizer` encodes with
    `add_special_tokens=False`: packing adds them."""
    tokenizer.add_special_tokens([t for t in special_tokens.values() if tokenizer.token_to_id(t) is not None])
    cls, sep = special_tokens["cls"], special_tokens["sep"]
    if tokenizer.token_to_id(cls) is not None and tokenizer.token_to_id(sep) is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(t, tokenizer.token_to_id(t)) for t in (cls, sep)])
    return tokenizer


def read_vocab(vocab_file):
    """`vocab.txt` as {token: line index}; like transformers, only the newline is stripped."""
    with open(vocab_file, encoding="utf-8") as f:
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


def wordpiece_from_vocab(vocab_file, special_tokens=None, lowercase=True, strip_accents=None,
                         tokenize_chinese_chars=True):
    """BERT's tokenizer from its `vocab.txt`.

    Args:
        vocab_file: str. One token per line; the line number is the id.
        special_tokens: dict. Role -> token; default BERT's `SPECIAL_TOKENS`.
        lowercase: bool. Lowercase the text (uncased models).
        strip_accents: bool or None. Strip accents; None follows `lowercase`.
        tokenize_chinese_chars: bool. Put spaces around CJK characters.
    """
    special_tokens = {**SPECIAL_TOKENS, **(special_tokens or {})}
    model = models.WordPiece(read_vocab(vocab_file), unk_token=special_tokens["unk"], max_input_chars_per_word=100)
    return _add_special_tokens(_bert_wordpiece(model, lowercase, strip_accents, tokenize_chinese_chars), special_tokens)


def train_wordpiece(texts, vocab_size):
    """A lowercasing WordPiece trained on `texts`, identical for identical input.

    Every ASCII letter, digit and punctuation mark is in the vocabulary (letters
    and digits also as `##` continuations) even if `texts` lacks it, so ASCII
    text outside the corpus never maps to [UNK]. The vocabulary stops short of
    `vocab_size` once every word of `texts` is a single token.

    Example:
    >>> tok = train_wordpiece(["Hello world, hello there."] * 10, vocab_size=150)
    >>> tok.decode(tok.encode("Hello world 2024", add_special_tokens=False).ids)
    'hello world 2024'
    """
    texts = list(texts)
    tokenizer = _bert_wordpiece(models.WordPiece(unk_token=SPECIAL_TOKENS["unk"]))
    # The trainer numbers `##c` continuation pieces in hash-map order, which
    # changes from process to process, and its merges break ties by id: giving
    # it those pieces up front, sorted, fixes every id and every merge.
    normalize, pre_tokenize = tokenizer.normalizer.normalize_str, tokenizer.pre_tokenizer.pre_tokenize_str
    words = (word for text in texts for word, _ in pre_tokenize(normalize(text)))
    continuations = sorted({c for w in words for c in w[1:]} | set(string.ascii_lowercase + string.digits))
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS.values()) + ["##" + c for c in continuations],
        initial_alphabet=list(string.ascii_lowercase + string.digits + string.punctuation))
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # Rebuilt from the vocabulary so that only the five BERT tokens are special.
    model = models.WordPiece(tokenizer.get_vocab(), unk_token=SPECIAL_TOKENS["unk"])
    return _add_special_tokens(_bert_wordpiece(model), SPECIAL_TOKENS)
