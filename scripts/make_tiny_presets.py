"""Makes the tiny bundled presets (random weights) deterministically.

    python scripts/make_tiny_presets.py                 # rewrites backbones/<family>/<name>/
    python scripts/make_tiny_presets.py --out DIR       # writes DIR/<name>/ instead
    python scripts/make_tiny_presets.py --family gpt2   # one family only

Each family with a `tiny.py` module (`make_tiny_preset(out_dir, corpus)`)
gets its preset made. The weights are random (seeded): these presets exist
so that demos, tests and the default experiment run offline on a fresh
machine. Tokenizers are trained on the small synthetic corpus below.
"""

import argparse
import importlib
import pkgutil
import random
from pathlib import Path

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
    """Deterministic pseudo-English sentences for training the tiny tokenizers."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))).capitalize() + "."
            for _ in range(n)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write all presets into this directory instead of the package")
    parser.add_argument("--family", action="append", help="only this family (repeatable)")
    args = parser.parse_args()
    import backbones

    for info in pkgutil.iter_modules(backbones.__path__):
        if not info.ispkg or (args.family and info.name not in args.family):
            continue
        try:
            module = importlib.import_module(f"backbones.{info.name}.tiny")
        except ModuleNotFoundError:
            continue
        out = args.out or Path(backbones.__file__).parent / info.name
        module.make_tiny_preset(out, corpus())
        print(f"made the tiny {info.name} preset in {out}")


if __name__ == "__main__":
    main()
