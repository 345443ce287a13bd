"""Training throughput, memory and load times: Backbone Lab vs keras-hub vs transformers + PEFT.

    python scripts/bench.py                    # the full run (about 15 minutes on 2 vCPU)
    python scripts/bench.py --quick            # a smoke run (GPT-2 only, one round: about 3 minutes)
    python scripts/bench.py --json run.json    # also keep every raw measurement

Each implementation builds the same decoder from a config (random weights,
dropout 0) and trains it for a fixed number of steps with the causal LM loss
(cross-entropy of every next token, logits through the tied token embedding)
and AdamW in float32, on the same batch: Backbone Lab (`GPT2Backbone` +
`compute_logits`, with `tasks.CausalLM`'s own loss `tasks.losses.SparseCrossEntropy`),
keras-hub (`GPT2CausalLM` without preprocessor, with Keras's
`SparseCategoricalCrossentropy`, its documented loss), both driven by the
same Keras `train_on_batch` and AdamW, and transformers
(`GPT2LMHeadModel`, eager PyTorch). Keras runs with XLA (`jit_compile=True`,
our trainer's default); keras-hub also runs at Keras's own default, which on a
CPU-only machine is no XLA. Every measurement runs in its own process; the
variants are interleaved (A B C A B C ...) and repeated, and what is reported
is the median over repeats: absolute figures on a shared machine drift,
ratios within one interleaved run much less.

    tokens/s     batch * length / median time of the timed steps (after warm-up)
    MFU          achieved model FLOP/s / fp32 matmul peak. The peak is measured
                 in its own process in every round of the same run: the best of
                 tf.matmul (oneDNN), an XLA-compiled matmul and torch.matmul of
                 two 4096 x 4096 matrices.
    first step   seconds from the start of model building to the end of the
                 first train step (tracing and XLA compilation included;
                 imports excluded and reported apart)
    peak RSS     resource.getrusage maximum resident set of the process
                 (imports included: each process imports only its framework)

Model FLOPs per token (nanoGPT's estimate): 6 * N + 12 * layers * length * width
for full fine-tuning, N the matmul weights (projections, MLP, LM head). With
LoRA the frozen weights get no gradient, so the work is 4 * N + 12 * layers *
length * width (forward 2N, input gradients 2N), and LoRA's MFU is against that.

LoRA is rank 4, alpha 4, on the query and value projections for Backbone Lab
and keras-hub; transformers' GPT-2 fuses q, k, v into one `c_attn`, so PEFT
adapts q, k and v together there (`target_modules=["c_attn"]`); for Llama all
three adapt q_proj and v_proj.

The second part times loading a ~110M-parameter GPT-2 preset (12 layers,
width 768, vocabulary 32000): our `Backbone.from_preset` of a preset saved by
`save_to_preset`, keras-hub's `Backbone.from_preset` of its own preset of the
same config, and our conversion of a transformers `save_pretrained` checkpoint.
Cold is the first call in a fresh process (imports done before the clock
starts and reported apart), warm the second call in the same process.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import machine

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2  # the machine's vCPUs; every framework gets the same

# The training shape of the reference figures in the benchmarks issue.
SHAPE = dict(vocabulary_size=8192, num_layers=4, num_heads=4, hidden_dim=256, intermediate_dim=1024,
             sequence_length=128, batch_size=8, max_sequence_length=1024)
# The preset of "about 100M parameters" (GPT-2 base with a 32k vocabulary).
PRESET_SHAPE = dict(vocabulary_size=32000, num_layers=12, num_heads=12, hidden_dim=768,
                    intermediate_dim=3072, max_sequence_length=1024)
LORA_RANK = 4
NAMES = {"ours": "Backbone Lab", "keras_hub": "keras-hub", "keras_hub_default": "keras-hub, Keras default (no XLA)",
         "transformers": "transformers"}


# --- model FLOPs -------------------------------------------------------------

def matmul_params(family, s):
    """Weights that take part in a matmul per token: projections, MLP, LM head."""
    d, f = s["hidden_dim"], s["intermediate_dim"]
    mlp = (3 if family == "llama" else 2) * d * f  # SwiGLU has gate, up and down
    return s["num_layers"] * (4 * d * d + mlp) + s["vocabulary_size"] * d


def flops_per_token(family, mode, s):
    attention = 12 * s["num_layers"] * s["sequence_length"] * s["hidden_dim"]
    return (6 if mode == "full" else 4) * matmul_params(family, s) + attention


# --- child processes ----------------------------------------------------------

def set_tf_threads():
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def child_peak(spec):
    """fp32 matmul of two 4096x4096 matrices: tf.matmul (oneDNN), XLA, torch; median of 8."""
    set_tf_threads()
    import tensorflow as tf
    import torch

    torch.set_num_threads(THREADS)
    n, flops = 4096, 2 * 4096**3
    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    out = {}
    for name, jit in (("tf_matmul", False), ("xla_matmul", True)):
        matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)[0]), jit_compile=jit)
        out[name] = flops / timed(lambda: matmul(a, b).numpy(), 8) / 1e9
    ta, tb = torch.randn(n, n), torch.randn(n, n)
    out["torch_matmul"] = flops / timed(lambda: ta @ tb, 8) / 1e9
    out["gflops"] = max(out.values())
    return out


def batches(s, count=4, seed=0):
    """A few fixed random batches: token ids, all-ones padding mask, next-token labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ids = rng.integers(0, s["vocabulary_size"], (s["batch_size"], s["sequence_length"] + 1), dtype="int32")
        out.append((ids[:, :-1], np.ones_like(ids[:, :-1]), ids[:, 1:]))
    return out


def build_keras(impl, family, mode, dtype, s, jit_compile):
    import keras

    kw = dict(vocabulary_size=s["vocabulary_size"], num_layers=s["num_layers"],
              hidden_dim=s["hidden_dim"], intermediate_dim=s["intermediate_dim"], dtype=dtype)
    if impl == "ours":
        import backbones

        if family == "gpt2":
            backbone = backbones.GPT2Backbone(num_heads=s["num_heads"], dropout=0.0,
                                              max_sequence_length=s["max_sequence_length"], **kw)
        else:
            backbone = backbones.LlamaBackbone(num_query_heads=s["num_heads"], num_key_value_heads=s["num_heads"],
                                               tie_word_embeddings=True, **kw)
        if mode == "lora":
            backbone.enable_lora(LORA_RANK)
        inputs = {k: keras.Input((None,), dtype="int32", name=k) for k in ("token_ids", "padding_mask")}
        logits = backbone.compute_logits(backbone(inputs))  # what tasks.CausalLM's head calls
        model = keras.Model(inputs, keras.ops.cast(logits, "float32") if dtype != "float32" else logits)
        compile_kwargs = {}
    else:
        import keras_hub

        if family == "gpt2":
            backbone = keras_hub.models.GPT2Backbone(num_heads=s["num_heads"], dropout=0.0,
                                                     max_sequence_length=s["max_sequence_length"], **kw)
            model = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
        else:
            backbone = keras_hub.models.LlamaBackbone(num_query_heads=s["num_heads"], num_key_value_heads=s["num_heads"],
                                                      tie_word_embeddings=True, dropout=0.0, **kw)
            model = keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)
        if mode == "lora":
            backbone.enable_lora(LORA_RANK)
        compile_kwargs = {"weighted_metrics": []}
    optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.01, epsilon=1e-8)
    if impl == "ours":  # each framework's own causal LM loss: ours is `tasks.CausalLM`'s default
        from tasks.losses import SparseCrossEntropy

        loss = SparseCrossEntropy()
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=jit_compile, **compile_kwargs)
    return model, backbone


def child_train_keras(spec):
    t = time.perf_counter()
    set_tf_threads()
    import keras
    import tensorflow as tf

    if spec["impl"] == "ours":
        import backbones  # noqa: F401
    else:
        import keras_hub  # noqa: F401
    import_s = time.perf_counter() - t
    s = spec["shape"]
    data = [({"token_ids": tf.constant(x), "padding_mask": tf.constant(m)}, tf.constant(y)) for x, m, y in batches(s)]
    start = time.perf_counter()
    impl = "keras_hub" if spec["impl"] == "keras_hub_default" else spec["impl"]
    jit = "auto" if spec["impl"] == "keras_hub_default" else spec["jit_compile"]
    model, backbone = build_keras(impl, spec["family"], spec["mode"], spec["dtype"], s, jit)
    if impl == "ours":  # what our `Task.fit` does before its first step (one trace instead of two)
        from tasks.task import build_training_state

        build_training_state(model, tf.data.Dataset.from_tensors(data[0]))
    losses = [float(model.train_on_batch(*data[0]))]
    first_step = time.perf_counter() - start
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        t = time.perf_counter()
        losses.append(float(model.train_on_batch(*data[(i + 1) % len(data)])))
        times.append(time.perf_counter() - t)
    return {"step_times": times[spec["warmup"]:], "first_step_s": first_step, "import_s": import_s,
            "losses": losses, "jit_compile": bool(model.jit_compile),
            "trainable": sum(int(keras.ops.size(w)) for w in model.trainable_weights),
            "params": backbone.count_params()}


def child_train_torch(spec):
    t = time.perf_counter()
    import torch
    import transformers

    # transformers imports model classes lazily: load them before the clock,
    # as `import backbones` / `import keras_hub` do for theirs.
    models = {"gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel),
              "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM)}
    if spec["mode"] == "lora":
        import peft
    import_s = time.perf_counter() - t
    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    s, family = spec["shape"], spec["family"]
    data = [tuple(torch.from_numpy(a.astype("int64")) for a in b) for b in batches(s)]
    torch.manual_seed(0)
    start = time.perf_counter()
    if family == "gpt2":
        config_class, model_class = models["gpt2"]
        config = config_class(
            vocab_size=s["vocabulary_size"], n_positions=s["max_sequence_length"], n_embd=s["hidden_dim"],
            n_layer=s["num_layers"], n_head=s["num_heads"], n_inner=s["intermediate_dim"],
            activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = model_class(config)
        targets = ["c_attn"]
    else:
        config_class, model_class = models["llama"]
        config = config_class(
            vocab_size=s["vocabulary_size"], hidden_size=s["hidden_dim"], intermediate_size=s["intermediate_dim"],
            num_hidden_layers=s["num_layers"], num_attention_heads=s["num_heads"],
            num_key_value_heads=s["num_heads"], tie_word_embeddings=True, attention_dropout=0.0)
        model = model_class(config)
        targets = ["q_proj", "v_proj"]
    params = sum(p.numel() for p in model.parameters())
    if spec["mode"] == "lora":
        lora = peft.LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, lora_dropout=0.0, target_modules=targets,
                               fan_in_fan_out=family == "gpt2")  # GPT-2's Conv1D stores W as (in, out)
        model = peft.get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01, eps=1e-8)
    vocab = s["vocabulary_size"]

    def step(x, m, y):
        logits = model(input_ids=x, attention_mask=m).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    losses = [step(*data[0])]
    first_step = time.perf_counter() - start
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        t = time.perf_counter()
        losses.append(step(*data[(i + 1) % len(data)]))
        times.append(time.perf_counter() - t)
    return {"step_times": times[spec["warmup"]:], "first_step_s": first_step, "import_s": import_s,
            "losses": losses, "trainable": sum(p.numel() for p in trainable), "params": params}


def preset_config(impl):
    s = PRESET_SHAPE
    if impl == "transformers":
        return dict(vocab_size=s["vocabulary_size"], n_positions=s["max_sequence_length"], n_embd=s["hidden_dim"],
                    n_layer=s["num_layers"], n_head=s["num_heads"], n_inner=s["intermediate_dim"])
    return dict(s, dropout=0.0)


def child_make_preset(spec):
    """Saves the ~110M-parameter preset of one implementation into spec["dir"]."""
    impl, directory = spec["impl"], spec["dir"]
    if impl == "transformers":
        import transformers

        model = transformers.GPT2Model(transformers.GPT2Config(**preset_config(impl)))
        model.save_pretrained(directory)  # safetensors
        return {"params": sum(p.numel() for p in model.parameters())}
    set_tf_threads()
    if impl == "ours":
        import backbones

        model = backbones.GPT2Backbone(**preset_config(impl))
    else:
        import keras_hub

        model = keras_hub.models.GPT2Backbone(**preset_config(impl))
    model.save_to_preset(directory)
    return {"params": model.count_params()}


def child_load_preset(spec):
    """Times from_preset of spec["dir"]: first call (cold) and second call (warm)."""
    t = time.perf_counter()
    set_tf_threads()
    if spec["impl"] == "keras_hub":
        import keras_hub

        load = keras_hub.models.Backbone.from_preset
    else:
        import backbones

        load = backbones.Backbone.from_preset
    import_s = time.perf_counter() - t
    times = []
    for _ in range(2):
        t = time.perf_counter()
        model = load(spec["dir"])
        times.append(time.perf_counter() - t)
        params = model.count_params()
        del model
    return {"import_s": import_s, "cold_s": times[0], "warm_s": times[1], "params": params}


def run_child(spec):
    kind = spec["kind"]
    if kind == "peak":
        result = child_peak(spec)
    elif kind == "train":
        result = (child_train_torch if spec["impl"] == "transformers" else child_train_keras)(spec)
    elif kind == "make_preset":
        result = child_make_preset(spec)
    else:
        result = child_load_preset(spec)
    result["peak_rss_mb"] = peak_rss_mb()
    result["load_average"] = os.getloadavg()[0]
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent: schedule, collect, report ------------------------------------

def spawn(spec, timeout=900):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT),
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = "\n".join((proc.stderr or "").splitlines()[-15:])
        raise RuntimeError(f"child {spec} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len("RESULT "):])


def llama_available():
    """Llama joins when our LlamaBackbone exists and its tests pass."""
    if not (ROOT / "backbones" / "llama").is_dir() or not (ROOT / "tests" / "backbones" / "llama").is_dir():
        return False
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/backbones/llama"],
                          cwd=ROOT, capture_output=True, text=True)
    return proc.returncode == 0


def median(values):
    return statistics.median(values) if values else float("nan")


def summarise(runs, peaks, s):
    """Per variant: medians over repeats of tokens/s, MFU, first step, import, peak RSS."""
    tokens = s["batch_size"] * s["sequence_length"]
    peak = median(peaks)
    rows = {}
    for key, results in runs.items():
        family, impl, mode, dtype = key
        tps = [tokens / statistics.median(r["step_times"]) for r in results]
        rows[key] = {
            "tokens_per_s": median(tps), "tokens_per_s_all": tps,
            "mfu": median(tps) * flops_per_token(family, mode, s) / (peak * 1e9),
            "first_step_s": median([r["first_step_s"] for r in results]),
            "import_s": median([r["import_s"] for r in results]),
            "peak_rss_mb": median([r["peak_rss_mb"] for r in results]),
            "loss_first_last": (results[0]["losses"][0], results[0]["losses"][-1]),
            "trainable": results[0]["trainable"], "params": results[0]["params"],
        }
    return rows


def fmt_table(rows, dtype="float32"):
    keys = [k for k in rows if k[3] == dtype]
    out = ["| model | mode | implementation | tokens/s (runs) | MFU | first step (s) | import (s) | peak RSS (MB) | trainable |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    ratios = ["| model | mode | ours / theirs | tokens/s | first step | peak RSS |", "|---|---|---|---:|---:|---:|"]
    for family, impl, mode, _ in keys:
        r = rows[(family, impl, mode, dtype)]
        name = NAMES[impl] + (" + PEFT" if impl == "transformers" and mode == "lora" else "")
        runs = ", ".join(f"{x:.0f}" for x in r["tokens_per_s_all"])
        out.append(f"| {family} | {mode} | {name} | **{r['tokens_per_s']:.0f}** ({runs}) | {r['mfu']:.0%} | "
                   f"{r['first_step_s']:.1f} | {r['import_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['trainable']:,} |")
        ours = rows.get((family, "ours", mode, dtype))
        if impl != "ours" and ours is not None:
            ratios.append(f"| {family} | {mode} | ours / {name} | **{ours['tokens_per_s'] / r['tokens_per_s']:.2f}x** | "
                          f"{ours['first_step_s'] / r['first_step_s']:.2f}x | {ours['peak_rss_mb'] / r['peak_rss_mb']:.2f}x |")
    return "\n".join(out) + "\n\n" + "\n".join(ratios)


def fmt_targets(rows, loads):
    """The issue's targets, each with the figures it was judged on (fp32, GPT-2)."""
    out = ["| target | measured | met |", "|---|---|---|"]

    def line(target, value, ok):
        out.append(f"| {target} | {value} | {'yes' if ok else 'no'} |")

    for family in sorted({k[0] for k in rows}):
        for mode in ("full", "lora"):
            ours = rows.get((family, "ours", mode, "float32"))
            if ours is None:
                continue
            for impl, goal in (("keras_hub", 1.2), ("keras_hub_default", 1.2), ("transformers", 1.5)):
                theirs = rows.get((family, impl, mode, "float32"))
                if theirs is not None:
                    ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
                    line(f"{family} {mode}: tokens/s >= {goal}x {NAMES[impl]}", f"{ratio:.2f}x", ratio >= goal)
            if mode == "full":
                line(f"{family} full: MFU >= 80%", f"{ours['mfu']:.0%}", ours["mfu"] >= 0.8)
            theirs = rows.get((family, "keras_hub", mode, "float32"))
            if theirs is not None:
                line(f"{family} {mode}: first step <= keras-hub (XLA)",
                     f"{ours['first_step_s']:.1f} s vs {theirs['first_step_s']:.1f} s",
                     ours["first_step_s"] <= theirs["first_step_s"])
                line(f"{family} {mode}: peak RSS <= keras-hub (XLA)",
                     f"{ours['peak_rss_mb']:.0f} MB vs {theirs['peak_rss_mb']:.0f} MB",
                     ours["peak_rss_mb"] <= theirs["peak_rss_mb"])
    if loads:
        for when in ("cold", "warm"):
            ratio = loads["ours"][f"{when}_s"] / loads["keras_hub"][f"{when}_s"]
            line(f"from_preset 110M ({when}) <= 0.5x keras-hub", f"{ratio:.2f}x", ratio <= 0.5)
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="GPT-2 only, one round, few steps: a smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--impls", default="ours,keras_hub,keras_hub_default,transformers",
                        help="comma-separated; keras_hub_default is keras-hub at Keras's default jit_compile")
    parser.add_argument("--modes", default="full,lora")
    parser.add_argument("--families", default="auto", help="gpt2, llama or auto (llama if its tests pass)")
    parser.add_argument("--no-jit", action="store_true", help="ours and keras-hub without XLA")
    parser.add_argument("--bf16", action="store_true", help="also run ours in mixed_bfloat16 (reported apart)")
    parser.add_argument("--no-presets", action="store_true", help="skip the from_preset timings")
    parser.add_argument("--no-train", action="store_true", help="only the from_preset timings")
    parser.add_argument("--json", help="write every raw measurement here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(json.loads(args.child))
    if args.quick:
        args.repeats, args.warmup, args.steps = 1, 2, 5
        args.families = "gpt2" if args.families == "auto" else args.families

    started, load_before = time.time(), os.getloadavg()
    print(f"# python {' '.join(sys.argv)}\n# {machine()}\n# load average before: "
          f"{' '.join(f'{x:.2f}' for x in load_before)}", flush=True)
    families = (["gpt2", "llama"] if llama_available() else ["gpt2"]) if args.families == "auto" \
        else args.families.split(",")
    impls, modes = args.impls.split(","), args.modes.split(",")
    variants = [(f, i, m, "float32") for f in families for m in modes for i in impls
                if not (i == "keras_hub_default" and f != "gpt2")]  # one family shows Keras's default
    if args.bf16:
        variants += [(f, "ours", m, "mixed_bfloat16") for f in families for m in modes]
    s = dict(SHAPE, jit_compile=not args.no_jit)

    runs, peaks, peak_detail = {v: [] for v in variants}, [], []
    for repeat in range(0 if args.no_train else args.repeats):
        peak = spawn({"kind": "peak"})
        peaks.append(peak["gflops"])
        peak_detail.append(peak)
        print(f"round {repeat + 1}: fp32 matmul GFLOP/s tf.matmul {peak['tf_matmul']:.0f}, XLA {peak['xla_matmul']:.0f}, "
              f"torch {peak['torch_matmul']:.0f}", flush=True)
        for family, impl, mode, dtype in variants:
            spec = {"kind": "train", "family": family, "impl": impl, "mode": mode, "dtype": dtype,
                    "shape": s, "jit_compile": s["jit_compile"], "warmup": args.warmup, "steps": args.steps}
            r = spawn(spec)
            runs[(family, impl, mode, dtype)].append(r)
            tps = s["batch_size"] * s["sequence_length"] / statistics.median(r["step_times"])
            print(f"  {family:5} {impl:17} {mode:4} {dtype:14} {tps:6.0f} tokens/s  first step {r['first_step_s']:4.1f} s  "
                  f"RSS {r['peak_rss_mb']:5.0f} MB  loss {r['losses'][0]:.2f} -> {r['losses'][-1]:.2f}  "
                  f"load {r['load_average']:.1f}", flush=True)

    report = []
    rows = summarise(runs, peaks, s) if peaks else {}
    if rows:
        report += [f"fp32 matmul peak (median of {len(peaks)} rounds, best of tf.matmul / XLA / torch): "
                   f"{median(peaks):.0f} GFLOP/s (tf.matmul {median([p['tf_matmul'] for p in peak_detail]):.0f}, "
                   f"XLA {median([p['xla_matmul'] for p in peak_detail]):.0f}, "
                   f"torch {median([p['torch_matmul'] for p in peak_detail]):.0f})", "", fmt_table(rows)]
        if args.bf16:
            report += ["", "mixed_bfloat16 (Backbone Lab only; not part of the fp32 ratios):", "",
                       fmt_table(rows, dtype="mixed_bfloat16").split("\n\n")[0]]
    loads = {}
    if not args.no_presets:
        loads = bench_presets(1 if args.quick else args.repeats)
        report += ["", fmt_loads(loads)]
    report += ["", fmt_targets(rows, loads), "",
               f"load average: {' '.join(f'{x:.2f}' for x in load_before)} before, "
               f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after; wall time {(time.time() - started) / 60:.1f} min"]
    print("\n" + "\n".join(report))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "argv": sys.argv, "shape": s, "peaks": peak_detail, "loads": loads,
            "runs": {"/".join(k): v for k, v in runs.items()},
            "summary": {"/".join(k): v for k, v in rows.items()}}, indent=1))


def bench_presets(repeats):
    """Saves the three ~110M presets once, then times loading them, interleaved."""
    results = {"ours": [], "keras_hub": [], "convert": []}
    with tempfile.TemporaryDirectory(prefix="bench-presets-") as tmp:
        dirs = {"ours": f"{tmp}/ours", "keras_hub": f"{tmp}/keras_hub", "convert": f"{tmp}/transformers"}
        for key, impl in (("ours", "ours"), ("keras_hub", "keras_hub"), ("convert", "transformers")):
            spawn({"kind": "make_preset", "impl": impl, "dir": dirs[key]})
        for _ in range(repeats):
            for key in results:
                impl = "keras_hub" if key == "keras_hub" else "ours"
                results[key].append(spawn({"kind": "load_preset", "impl": impl, "dir": dirs[key]}))
    return {k: {"cold_s": median([r["cold_s"] for r in v]), "warm_s": median([r["warm_s"] for r in v]),
                "import_s": median([r["import_s"] for r in v]), "peak_rss_mb": median([r["peak_rss_mb"] for r in v]),
                "params": v[0]["params"], "all": v} for k, v in results.items()}


def fmt_loads(loads):
    names = {"ours": "Backbone Lab from_preset (our preset)", "keras_hub": "keras-hub from_preset (its preset)",
             "convert": "Backbone Lab from_preset (transformers checkpoint, converted)"}
    out = ["| load (~110M GPT-2) | params | cold (s) (runs) | warm (s) | import (s) | peak RSS (MB) |",
           "|---|---:|---:|---:|---:|---:|"]
    for key, r in loads.items():
        runs = ", ".join(f"{x['cold_s']:.2f}" for x in r["all"])
        out.append(f"| {names[key]} | {r['params'] / 1e6:.1f}M | **{r['cold_s']:.2f}** ({runs}) | {r['warm_s']:.2f} | "
                   f"{r['import_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    out.append(f"| ratio ours / keras-hub | | **{loads['ours']['cold_s'] / loads['keras_hub']['cold_s']:.2f}x** | "
               f"**{loads['ours']['warm_s'] / loads['keras_hub']['warm_s']:.2f}x** | "
               f"{loads['ours']['import_s'] / loads['keras_hub']['import_s']:.2f}x | "
               f"{loads['ours']['peak_rss_mb'] / loads['keras_hub']['peak_rss_mb']:.2f}x |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
