"""GPT-2's byte-level BPE, built with `tokenizers`."""

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"


def _byte_level(model):
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def byte_level_bpe(vocab_file, merges_file):
    """GPT-2's tokenizer from its `vocab.json` and `merges.txt`."""
    return _byte_level(models.BPE.from_file(vocab_file, merges_file))


def train_byte_level_bpe(texts, vocab_size):
    """A byte-level BPE trained on `texts` (deterministic for the same input).

    Example:
    >>> tok = train_byte_level_bpe(["hello world"] * 10, vocab_size=300)
    >>> tok.decode(tok.encode("hello").ids)
    'hello'
    """
    tokenizer = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer
