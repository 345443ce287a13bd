"""Makes the tiny bundled presets (random weights) deterministically.

    python scripts/make_tiny_presets.py            # rewrites backbones/<family>/<name>/
    python scripts/make_tiny_presets.py --out DIR  # writes DIR/<name>/ instead

The weights are random (seeded): these presets exist so that demos, tests and
the default experiment run offline on a fresh machine. The tokenizer is a
byte-level BPE trained on a small synthetic English corpus (below), so any
text still encodes (byte fallback).
"""

import argparse
import random
from pathlib import Path

import keras

WORDS = """the a an this that movie film story plot actor acting scene music
ending book food service place staff room price was is were felt looked seemed
really very quite rather truly so too not never always great good fine excellent
wonderful lovely brilliant superb amazing delightful bad poor awful terrible
boring dull weak bland horrible disappointing slow fast loud quiet long short
and but or because while with without for of in on at to from by about i we you
they he she it my our your their love hate like enjoyed liked disliked recommend
avoid again time day night people friends family everyone nobody something
nothing all some many few more most less best worst better worse""".split()


def corpus(n=4000, seed=0):
    """Deterministic pseudo-English sentences for training the tiny tokenizer."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))).capitalize() + "."
            for _ in range(n)]


def make_gpt2_tiny(out_dir):
    from backbones.gpt2 import GPT2Backbone
    from backbones.gpt2.tokenizer import END_OF_TEXT, train_byte_level_bpe
    from backbones.tokenizer import Tokenizer

    tokenizer = Tokenizer(train_byte_level_bpe(corpus(), vocab_size=512),
                          {"bos": END_OF_TEXT, "eos": END_OF_TEXT})
    keras.utils.set_random_seed(0)
    backbone = GPT2Backbone(vocabulary_size=tokenizer.vocabulary_size, num_layers=2, num_heads=2,
                            hidden_dim=64, intermediate_dim=256, max_sequence_length=256)
    backbone.tokenizer = tokenizer
    backbone.save_to_preset(Path(out_dir) / "gpt2_tiny_en", metadata={
        "description": "RANDOM weights (seed 0), not pretrained: for offline demos and tests. "
                       "Made by scripts/make_tiny_presets.py.",
    })


MAKERS = {"backbones/gpt2": make_gpt2_tiny}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write all presets into this directory instead of the package")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    for family_dir, make in MAKERS.items():
        make(args.out or root / family_dir)


if __name__ == "__main__":
    main()
