"""Padding waste and training throughput with and without packing (issue 14), on skewed lengths.

    python scripts/bench_packing.py                      # gpt2_tiny_en, 1024 texts, length 128 (a few minutes)
    python scripts/bench_packing.py --preset llama_tiny_en --rounds 3

The texts are random words from the tiny vocabulary with log-normal word
counts (median 12, a long tail up to the sequence length), the shape of most
instruction data: many short answers, a few long ones. Both variants train
`tasks.CausalLM` on the same texts, batch 16, with the default compile (XLA for
float32): unpacked (one text per row) and packed (`packing=True`, best-fit
decreasing). Timed: whole passes over the same examples by `train_on_batch`,
interleaved A B A B over `--rounds` rounds after a warm-up pass each, median
per variant. Reported:

    waste       padded slots / all slots of the training rows
    tokens/s    trained (real) tokens per second: both variants train the same tokens
    epoch s     seconds for one pass over all the examples

On a shared machine absolute figures drift; the ratio within one interleaved
run is the figure to read.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def skewed_texts(count, seed, max_words):
    words = [f"w{i}" for i in range(200)]
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(12), 0.9, size=count).astype(int), 1, max_words)
    return [" ".join(rng.choice(words, size=n)) for n in lengths]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="gpt2_tiny_en")
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages

    import keras

    import backbones
    import tasks

    texts = skewed_texts(args.texts, 0, args.sequence_length)
    variants = {}
    for packed in (False, True):
        keras.utils.set_random_seed(0)
        lm = tasks.CausalLM(backbones.Backbone.from_preset(args.preset), sequence_length=args.sequence_length,
                            packing=packed)
        lm.compile()
        if packed:
            (x, y, w), stats = lm.preprocessor.packed_causal_lm(texts)
        else:
            x, y, w = lm.preprocessor.causal_lm(texts)
        batches = [({k: v[i:i + args.batch_size] for k, v in x.items()}, y[i:i + args.batch_size],
                    w[i:i + args.batch_size]) for i in range(0, len(y) - args.batch_size + 1, args.batch_size)]
        tokens = int(sum(b[2].sum() for b in batches))
        variants["packed" if packed else "unpacked"] = dict(lm=lm, batches=batches, tokens=tokens, times=[])

    def one_pass(v):
        start = time.perf_counter()
        for bx, by, bw in v["batches"]:
            v["lm"].train_on_batch(bx, by, sample_weight=bw)
        return time.perf_counter() - start

    for v in variants.values():
        one_pass(v)  # warm-up: tracing and XLA compilation
    for _ in range(args.rounds):
        for v in variants.values():
            v["times"].append(one_pass(v))

    print(f"{args.preset}, {args.texts} texts, sequence_length {args.sequence_length}, batch {args.batch_size}, "
          f"best-fit decreasing: {stats.examples} examples -> {stats.rows} rows")
    print(f"| variant | rows | waste | trained tokens | epoch s (median of {args.rounds}) | tokens/s |")
    print("|---|---|---|---|---|---|")
    for name, v in variants.items():
        rows = len(v["batches"]) * args.batch_size
        waste = 1 - v["tokens"] / (rows * args.sequence_length)
        epoch = statistics.median(v["times"])
        v["rate"] = v["tokens"] / epoch
        print(f"| {name} | {rows} | {waste:.1%} | {v['tokens']} | {epoch:.2f} | {v['rate']:.0f} |")
    ratio = variants["packed"]["rate"] / variants["unpacked"]["rate"]
    print(f"packed / unpacked tokens/s: {ratio:.2f}x; per round: "
          + ", ".join(f"{u / p:.2f}" for u, p in zip(variants["unpacked"]["times"], variants["packed"]["times"])))


if __name__ == "__main__":
    main()
