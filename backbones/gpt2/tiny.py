"""The bundled `gpt2_tiny_en` preset (random weights), made by scripts/make_tiny_presets.py."""

from pathlib import Path

import keras

from backbones.gpt2.backbone import GPT2Backbone
from backbones.gpt2.tokenizer import END_OF_TEXT, train_byte_level_bpe
from backbones.tokenizer import Tokenizer


def make_tiny_preset(out_dir, corpus):
    """Writes `out_dir/gpt2_tiny_en`: 2 layers, hidden 64, a 512-token BPE trained on `corpus`."""
    tokenizer = Tokenizer(train_byte_level_bpe(corpus, vocab_size=512), {"bos": END_OF_TEXT, "eos": END_OF_TEXT})
    keras.utils.set_random_seed(0)
    backbone = GPT2Backbone(vocabulary_size=tokenizer.vocabulary_size, num_layers=2, num_heads=2,
                            hidden_dim=64, intermediate_dim=256, max_sequence_length=256)
    backbone.tokenizer = tokenizer
    backbone.save_to_preset(Path(out_dir) / "gpt2_tiny_en", metadata={
        "description": "RANDOM weights (seed 0), not pretrained: for offline demos and tests. "
                       "Made by scripts/make_tiny_presets.py.",
    })
