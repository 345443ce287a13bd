"""Memory and step time of an int8 frozen base under LoRA against bfloat16,
on a real-shaped transformers checkpoint (any size, any family).

    python scripts/bench_int8.py SNAPSHOT_DIR                       # bf16, int8: A B A B
    python scripts/bench_int8.py SNAPSHOT_DIR --task causal_lm --variants bf16 int8 int8_keras
    flock /tmp/bigmem.lock python scripts/bench_int8.py SNAPSHOT_DIR --rounds 1

SNAPSHOT_DIR is a checkpoint directory written by scripts/make_scale_checkpoint.py
(`make_checkpoint("gemma_2b", DIR, config_overrides={"num_hidden_layers": 4})`).
Each variant runs in its own process (peak RSS is per process): LoRA rank 4 on
query/value, batch 8, length 48, AdamW with global-norm clipping, no XLA,
`--steps` steps. Variants:

- `bf16`: `Backbone.from_preset(dir, dtype="bfloat16")`.
- `int8`: the same with `quantize="int8"` (each layer quantized as its weights
  are filled).
- `int8_after`: loaded in bf16, then `backbone.quantize("int8")`.
- `int8_keras`: `int8_after` with Keras 3.15's own int8 calls (the dequantized
  kernels not tied to the layer inputs), for comparison.

Reported: load time and the load's peak RSS (`load_peak_rss_gb`, ru_maxrss
right after loading), RSS before training, the peak RSS sampled during
`fit` (every 5 ms), the median step time after the first (traced) step, and
the last loss.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_common import fit_probe, rss_gb

ROOT = Path(__file__).resolve().parents[1]


def run_one(args):
    """One training run in this process; prints a JSON line."""
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np
    from omegaconf import OmegaConf

    import backbones
    import tasks
    from lab.training import build_optimizer

    if args.variant == "int8_keras":  # Keras's own int8 call, and the tied logits as they were
        from keras import ops

        from backbones.common import dense, logits

        dense.Dense._int8_call = keras.layers.Dense._int8_call
        logits.int8_tied_logits = lambda h, e, s: (
            ops.matmul(h, ops.transpose(ops.cast(e, h.dtype))) * ops.cast(1.0 / s, h.dtype))
    rss0 = rss_gb()
    t = time.perf_counter()
    kwargs = {"quantize": "int8"} if args.variant == "int8" else {}
    backbone = backbones.Backbone.from_preset(args.snapshot, dtype="bfloat16", **kwargs)
    if args.variant in ("int8_after", "int8_keras"):
        backbone.quantize("int8")
    load_s = time.perf_counter() - t
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    backbone.enable_lora(4)
    if args.task == "causal_lm":
        task = tasks.CausalLM(backbone, sequence_length=48)
    else:
        task = tasks.TextClassifier(backbone, num_classes=2, sequence_length=48, dropout=0.0)
    cfg = OmegaConf.create(dict(name="adamw", learning_rate=1e-3, weight_decay=0.01, schedule="constant",
                                warmup_ratio=0.0, clipnorm=1.0))
    task.compile(optimizer=build_optimizer(cfg, args.steps), jit_compile=False)
    rng = np.random.default_rng(0)
    vocab = backbone.token_embedding.input_dim
    x = {"token_ids": rng.integers(3, min(vocab, 30000), (8 * args.steps, 48)).astype("int32"),
         "padding_mask": np.ones((8 * args.steps, 48), "int32")}
    y = rng.integers(0, 2, 8 * args.steps)
    if args.task == "causal_lm":  # raw text, packed to 48 tokens by the task
        words = "the a film story good bad long short day night river stone light dark sound".split()
        x = [" ".join(rng.choice(words, 80)) for _ in range(8 * args.steps)]
    probe = fit_probe()
    with probe:
        if args.task == "causal_lm":
            history = task.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[probe])
        else:
            history = task.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[probe])
    steps = probe.step_times()
    print(json.dumps({
        "variant": args.variant, "task": args.task, "load_s": round(load_s, 1),
        "rss_at_start_gb": round(rss0, 2), "load_peak_rss_gb": round(load_peak, 2),
        "rss_before_fit_gb": round(probe.rss_before_gb, 2), "fit_peak_rss_gb": round(probe.peak_rss_gb, 2),
        "first_step_s": round(steps[0], 2), "step_s": round(statistics.median(steps[1:]), 3),
        "tokens_per_s": round(8 * 48 / statistics.median(steps[1:]), 1),
        "losses": [round(float(v), 4) for v in history.history["loss"]],
    }))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot", help="a transformers checkpoint directory")
    parser.add_argument("--variants", nargs="+", default=["bf16", "int8"],
                        choices=["bf16", "int8", "int8_after", "int8_keras"])
    parser.add_argument("--task", choices=["classifier", "causal_lm"], default="classifier")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all variants")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        return run_one(args)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for _ in range(args.rounds):
        for variant in args.variants:
            cmd = [sys.executable, __file__, args.snapshot, "--variant", variant, "--task", args.task,
                   "--steps", str(args.steps)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            print(lines[-1] if lines else out.stderr[-3000:], flush=True)


if __name__ == "__main__":
    main()
