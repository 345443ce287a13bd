"""LoRA step time and peak RSS, factorised `x W + s (x A) B` against Keras's
merged `x (W + s A B)`, on a Gemma-2B-shaped backbone with fewer layers.

    python scripts/bench_lora_forward.py --layers 2 --targets query value      # both variants, A B A B
    flock /tmp/bigmem.lock python scripts/bench_lora_forward.py --layers 4 --targets query value ffn

Each run is its own process (peak RSS is per process): a bf16 LoRA rank-4
classifier, batch 8, length 48, AdamW with global-norm clipping, no XLA,
`--steps` steps; step time is the median after the first (traced) step.
The checkpoint (real gemma-2b widths, random bf16 weights) is written once
into `--cache-dir` by scripts/make_scale_checkpoint.py.
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

from bench_common import fit_probe

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

    if args.variant == "merged":  # Keras 3.15's own float call: x (W + s A B)
        from backbones.common import dense

        dense.Dense.call = keras.layers.Dense.call
    t = time.perf_counter()
    backbone = backbones.Backbone.from_preset(args.snapshot, dtype="bfloat16")
    load_s = time.perf_counter() - t
    backbone.enable_lora(4, targets=args.targets)
    clf = tasks.TextClassifier(backbone, num_classes=2, sequence_length=48, dropout=0.0)
    cfg = OmegaConf.create(dict(name="adamw", learning_rate=2e-4, weight_decay=0.01, schedule="constant",
                                warmup_ratio=0.0, clipnorm=1.0))
    clf.compile(optimizer=build_optimizer(cfg, args.steps), jit_compile=False)
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(3, 30000, (8 * args.steps, 48)).astype("int32"),
         "padding_mask": np.ones((8 * args.steps, 48), "int32")}
    y = rng.integers(0, 2, 8 * args.steps)
    probe = fit_probe()
    with probe:
        history = clf.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[probe])
    steps = probe.step_times()
    print(json.dumps({
        "variant": args.variant, "layers": args.layers, "targets": args.targets, "load_s": round(load_s, 1),
        "first_step_s": round(steps[0], 2), "step_s": round(statistics.median(steps[1:]), 3),
        "tokens_per_s": round(8 * 48 / statistics.median(steps[1:]), 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "rss_before_fit_gb": round(probe.rss_before_gb, 2), "fit_peak_rss_gb": round(probe.peak_rss_gb, 2),
        "loss": round(float(history.history["loss"][-1]), 4),
    }))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--targets", nargs="+", default=["query", "value"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="A, B pairs (interleaved)")
    parser.add_argument("--cache-dir", default="/tmp/bench_lora_hf")
    parser.add_argument("--variant", choices=["merged", "factorised"], help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        return run_one(args)
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_scale_checkpoint import make_checkpoint

    snapshot = make_checkpoint("gemma_2b", args.cache_dir, config_overrides={"num_hidden_layers": args.layers})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for _ in range(args.rounds):
        for variant in ("merged", "factorised"):
            cmd = [sys.executable, __file__, "--variant", variant, "--snapshot", str(snapshot), "--layers",
                   str(args.layers), "--steps", str(args.steps), "--targets", *args.targets]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
            print(lines[-1] if lines else out.stderr[-2000:], flush=True)


if __name__ == "__main__":
    main()
