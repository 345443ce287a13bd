"""The bundled `bert_tiny_random_en` preset (random weights), made by scripts/make_tiny_presets.py."""

from pathlib import Path

import keras

from backbones.bert.backbone import BertBackbone
from backbones.bert.tokenizer import SPECIAL_TOKENS, train_wordpiece
from backbones.tokenizer import Tokenizer


def make_tiny_preset(out_dir, corpus):
    """Writes `out_dir/bert_tiny_random_en`: 2 layers, hidden 64, a 512-token WordPiece trained on `corpus`."""
    tokenizer = Tokenizer(train_wordpiece(corpus, vocab_size=512), SPECIAL_TOKENS)
    keras.utils.set_random_seed(0)
    backbone = BertBackbone(vocabulary_size=tokenizer.vocabulary_size, num_layers=2, num_heads=2,
                            hidden_dim=64, intermediate_dim=256, max_sequence_length=512)
    backbone.tokenizer = tokenizer
    backbone.save_to_preset(Path(out_dir) / "bert_tiny_random_en", metadata={
        "description": "RANDOM weights (seed 0), not pretrained: for offline demos and tests. "
                       "Made by scripts/make_tiny_presets.py.",
    })
