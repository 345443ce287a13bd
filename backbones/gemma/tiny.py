"""The bundled `gemma_tiny_en` preset (random weights), made by scripts/make_tiny_presets.py."""

from pathlib import Path

import keras

from backbones.common.tokenizer import train_sentencepiece_bpe
from backbones.gemma.backbone import GemmaBackbone
from backbones.tokenizer import Tokenizer

# Gemma's own ids: <pad> 0, <eos> 1, <bos> 2, <unk> 3.
SPECIAL_TOKENS = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"}


def make_tiny_preset(out_dir, corpus):
    """Writes `out_dir/gemma_tiny_en`: 2 layers, hidden 64, 4 query heads sharing
    1 key-value head, head_dim 32, a 512-token BPE trained on `corpus`."""
    bpe = train_sentencepiece_bpe(corpus, vocab_size=512, special_tokens=list(SPECIAL_TOKENS.values()))
    tokenizer = Tokenizer(bpe, SPECIAL_TOKENS)
    keras.utils.set_random_seed(0)
    backbone = GemmaBackbone(vocabulary_size=tokenizer.vocabulary_size, num_layers=2, num_query_heads=4,
                             num_key_value_heads=1, hidden_dim=64, intermediate_dim=128, head_dim=32,
                             max_sequence_length=256)
    backbone.tokenizer = tokenizer
    backbone.save_to_preset(Path(out_dir) / "gemma_tiny_en", metadata={
        "description": "RANDOM weights (seed 0), not pretrained: for offline demos and tests. "
                       "Made by scripts/make_tiny_presets.py.",
    })
