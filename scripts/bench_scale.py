"""LoRA fine-tuning at real sizes: Backbone Lab vs keras-hub vs transformers + PEFT (issue 10, item 8).

    python scripts/bench_scale.py                     # the full run (about 40 minutes on 2 vCPU)
    python scripts/bench_scale.py --quick             # smoke run: GPT-2 base, 2 timed steps (about 4 minutes)
    python scripts/bench_scale.py --sizes gemma_2b --impls ours,peft --steps 3 --json run.json
    python scripts/bench_scale.py --report a.json,b.json    # the merged tables of saved runs, nothing run
    python scripts/bench_scale.py --sizes gemma_smoke --classifier-sizes gemma_smoke --job-sizes gemma_smoke
                                                     # every path at toy widths in ~2 minutes (no lock)

LoRA rank 4 on the attention query and value projections (alpha 4, no LoRA
dropout), batch 4, length 256, at three sizes: GPT-2 base (124M) and GPT-2
medium (355M) in float32, Gemma 2B in bfloat16. Each model is loaded from the
same real-shaped transformers checkpoint (random weights) in a Hugging Face
cache (`scripts/make_scale_checkpoint.py` lays out the missing ones;
`--cache-dir`, default `$HF_HUB_CACHE` or /work/hfcache), offline:

    ours        backbones.Backbone.from_preset(<preset>, dtype=...), enable_lora(4),
                tasks.CausalLM(backbone, sequence_length=256), compile() at its default
                jit_compile, fit on token ids.
    ours_alt    the same with the other jit_compile (XLA on <-> off): issue 10 item 6.
    keras_hub   keras-hub 0.32: <Family>Backbone.from_preset("hf://<repo>", dtype=...) (its own
                transformers converter), enable_lora(4), <Family>CausalLM(backbone,
                preprocessor=None), which compiles itself at construction (its defaults:
                Adam, Keras's sparse cross-entropy, jit_compile "auto" = no XLA on CPU), fit.
                The fixture's tokenizer is not the SentencePiece model keras-hub's Gemma
                preprocessor wants, so every side trains on token ids and none builds one.
    keras_hub_xla  the same, compiled with jit_compile=True (not in the default run).
    peft        transformers AutoModelForCausalLM.from_pretrained(<repo>, dtype=...),
                peft.get_peft_model(LoraConfig(r=4, lora_alpha=4, target_modules=PEFT's
                default for the model)), eager torch AdamW loop, loss = cross-entropy of
                the float32 logits (what transformers' own loss does).
    train_py    the real job, `python train.py backbone=<size> lora.rank=4 task=causal_lm ...`,
                5 steps of 4 x 256, 2 validation batches, end to end in a fresh directory.

With `--classifier-sizes` (default gemma_2b) ours and PEFT also train the
sequence-classification task (our default task: `tasks.TextClassifier`,
2 classes; `AutoModelForSequenceClassification` + `LoraConfig(task_type="SEQ_CLS")`).

PEFT's default targets: GPT-2 fuses q, k and v into one `c_attn` Conv1D, so
PEFT adapts q, k and v together there (fan_in_fan_out); Gemma q_proj and
v_proj. Dropout is each checkpoint's (GPT-2 0.1 on all three sides; Gemma none).

The PEFT children run with OMP_WAIT_POLICY=PASSIVE (`--torch-omp-spin` for torch's default): on a
machine with more runnable threads than cores, torch's spinning OpenMP barriers made a toy-width step
70x slower (2.13 s vs 0.03 s at load ~5), which measures the machine, not PEFT.

Measured per variant, each in its own fresh process (variants interleaved;
`--repeats` rounds), two threads per framework:

    tokens/s       batch * length * (n - 1) / (t_n - t_1), t_i the timestamp at the end of step i
                   (the first step, tracing and compilation, is excluded)
    load           from_preset / from_pretrained of the checkpoint (imports excluded)
    first step     from the end of load to the end of the first training step (LoRA,
                   task build, compile, tracing / XLA compilation, the step itself)
    start->step 1  from process start to the end of the first step (imports and load included)
    peak RSS       the child's maximum resident set (wait4 rusage); a guard kills a child
                   above --max-rss-gb and reports it
    disk written   /proc/<pid>/io write_bytes of the whole process (read before it is reaped),
                   which includes saving the adapter at the end; "saved" is the size of that
                   adapter file or directory (and for train_py the size of the run's directory)

Every child that loads a model holds /tmp/bigmem.lock (flock) while it runs, so
big processes of other users of the machine queue with it; time spent
waiting is printed and not part of any figure.
"""

import time

T0 = time.perf_counter()  # process start for "start -> first step" (the interpreter itself: ~0.05 s)

import argparse  # noqa: E402
import fcntl  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from bench_common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2  # the machine's vCPUs; every framework gets the same
BATCH, LENGTH, RANK = 4, 256, 4
LOCK = "/tmp/bigmem.lock"

SIZES = {  # checkpoint (make_scale_checkpoint name), our preset, dtype, keras-hub classes, PEFT targets
    "gpt2_base": dict(checkpoint="gpt2_base", preset="gpt2_base_en", dtype="float32", family="gpt2",
                      keras_hub=("GPT2Backbone", "GPT2CausalLM"), targets=["c_attn"], steps=6, label="GPT-2 base 124M"),
    "gpt2_medium": dict(checkpoint="gpt2_medium", preset="gpt2_medium_en", dtype="float32", family="gpt2",
                        keras_hub=("GPT2Backbone", "GPT2CausalLM"), targets=["c_attn"], steps=4,
                        label="GPT-2 medium 355M"),
    "gemma_2b": dict(checkpoint="gemma_2b", preset="gemma_2b_en", dtype="bfloat16", family="gemma",
                     keras_hub=("GemmaBackbone", "GemmaCausalLM"), targets=["q_proj", "v_proj"], steps=4,
                     label="Gemma 2B"),
    # Not a benchmark: Gemma 2B's layout at toy widths in its own cache, to check every path in a minute
    # without /tmp/bigmem.lock (`--sizes gemma_smoke --classifier-sizes gemma_smoke --job-sizes gemma_smoke`).
    "gemma_smoke": dict(checkpoint="gemma_2b", preset="gemma_2b_en", dtype="bfloat16", family="gemma",
                        keras_hub=("GemmaBackbone", "GemmaCausalLM"), targets=["q_proj", "v_proj"], steps=2,
                        label="Gemma smoke (toy widths)", lock=False, conf="gemma_2b", cache="bench-scale-smoke-cache",
                        overrides=dict(num_hidden_layers=2, hidden_size=128, intermediate_size=256,
                                       num_attention_heads=2, head_dim=64, vocab_size=4096)),
}
NAMES = {"ours": "Backbone Lab", "ours_alt": "Backbone Lab", "keras_hub": "keras-hub",
         "keras_hub_xla": "keras-hub + XLA", "peft": "transformers + PEFT", "train_py": "train.py job"}


def repo_of(size):
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_scale_checkpoint import CONFIGS

    return CONFIGS[SIZES[size]["checkpoint"]][0]


# --- child processes ----------------------------------------------------------

def token_batches(vocab, rows, seed=0):
    """Random ids in [4, vocab) (clear of the specials), one extra column for next-token labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(4, vocab, (rows, LENGTH + 1), dtype="int32")
    labels = rng.integers(0, 2, (rows,), dtype="int32")
    return ids, labels


def io_write_bytes():
    for line in open("/proc/self/io"):
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def dir_bytes(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def child_keras(spec):
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    size, impl, task = SIZES[spec["size"]], spec["impl"], spec["task"]
    ours = impl.startswith("ours")
    if ours:
        import backbones
        import tasks
    else:
        import keras_hub
    out = {"import_s": time.perf_counter() - T0}

    t = time.perf_counter()
    if ours:
        backbone = backbones.Backbone.from_preset(size["preset"], dtype=size["dtype"])
    else:
        backbone_class, task_class = (getattr(keras_hub.models, n) for n in size["keras_hub"])
        backbone = backbone_class.from_preset("hf://" + spec["repo"], dtype=size["dtype"])
    loaded = time.perf_counter()
    out["load_s"] = loaded - t
    out["params"] = int(backbone.count_params())

    backbone.enable_lora(RANK)
    if ours:
        if task == "causal_lm":
            model = tasks.CausalLM(backbone, sequence_length=LENGTH)
        else:
            model = tasks.TextClassifier(backbone, num_classes=2, sequence_length=LENGTH)
        model.compile()  # our defaults (AdamW, clipnorm 1.0, the task's loss and metrics, our jit default)
        out["jit_default"] = bool(model.jit_compile)
        if impl == "ours_alt":
            model.compile(jit_compile=not out["jit_default"])
    else:
        model = task_class(backbone, preprocessor=None)  # compiles itself with keras-hub's defaults
        out["jit_default"] = bool(model.jit_compile)
        if impl == "keras_hub_xla":
            model.compile(jit_compile=True)
    out["jit_compile"] = bool(model.jit_compile)
    out["trainable"] = int(sum(int(keras.ops.size(w)) for w in model.trainable_weights))

    ids, labels = token_batches(backbone.token_embedding.input_dim, BATCH * (1 + spec["steps"]))
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones_like(ids[:, :-1])}
    y = ids[:, 1:] if task == "causal_lm" else labels
    stamps, losses = [], []

    def on_batch_end(batch, logs):
        losses.append(float(logs["loss"]))  # also waits for the step
        stamps.append(time.perf_counter())

    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=on_batch_end)])

    with tempfile.TemporaryDirectory(prefix="bench-scale-save-", dir=spec["workdir"]) as tmp:
        t = time.perf_counter()
        path = f"{tmp}/adapter.lora.safetensors" if ours else f"{tmp}/adapter.lora.h5"
        backbone.save_lora_weights(path)
        out["save_s"] = time.perf_counter() - t
        out["saved_bytes"] = dir_bytes(tmp)
        os.sync()
    return finish(out, loaded, stamps, losses)


def child_peft(spec):
    import torch
    import transformers
    import peft

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    size, task = SIZES[spec["size"]], spec["task"]
    out = {"import_s": time.perf_counter() - T0}
    torch.manual_seed(0)
    dtype = getattr(torch, size["dtype"])
    t = time.perf_counter()
    if task == "causal_lm":
        model = transformers.AutoModelForCausalLM.from_pretrained(spec["repo"], dtype=dtype)
    else:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(spec["repo"], dtype=dtype, num_labels=2)
    loaded = time.perf_counter()
    out["load_s"] = loaded - t
    out["params"] = sum(p.numel() for p in model.parameters())

    config = peft.LoraConfig(r=RANK, lora_alpha=RANK, lora_dropout=0.0, target_modules=size["targets"],
                             fan_in_fan_out=size["family"] == "gpt2",  # GPT-2's Conv1D stores W as (in, out)
                             task_type="CAUSAL_LM" if task == "causal_lm" else "SEQ_CLS")
    model = peft.get_peft_model(model, config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    out["trainable"] = sum(p.numel() for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.01)
    vocab = model.config.vocab_size
    ids, labels = token_batches(vocab, BATCH * (1 + spec["steps"]))
    ids, labels = torch.from_numpy(ids.astype("int64")), torch.from_numpy(labels.astype("int64"))
    stamps, losses = [], []
    for i in range(1 + spec["steps"]):
        rows = slice(i * BATCH, (i + 1) * BATCH)
        x, mask = ids[rows, :-1], torch.ones_like(ids[rows, :-1])
        logits = model(input_ids=x, attention_mask=mask).logits.float()
        if task == "causal_lm":
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), ids[rows, 1:].reshape(-1))
        else:
            loss = torch.nn.functional.cross_entropy(logits, labels[rows])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        stamps.append(time.perf_counter())
        del logits, loss

    with tempfile.TemporaryDirectory(prefix="bench-scale-save-", dir=spec["workdir"]) as tmp:
        t = time.perf_counter()
        model.save_pretrained(tmp)  # adapter_model.safetensors + adapter_config.json (+ the score head)
        out["save_s"] = time.perf_counter() - t
        out["saved_bytes"] = dir_bytes(tmp)
        os.sync()
    return finish(out, loaded, stamps, losses)


def finish(out, loaded, stamps, losses):
    out["first_step_s"] = stamps[0] - loaded
    out["start_to_first_step_s"] = stamps[0] - T0
    out["step_s"] = [b - a for a, b in zip(stamps, stamps[1:])]
    out["tokens_per_s"] = BATCH * LENGTH * (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    out["losses"] = losses
    out["write_bytes_self"] = io_write_bytes()
    out["load_average"] = os.getloadavg()[0]
    return out


def run_child(spec):
    result = (child_peft if spec["impl"] == "peft" else child_keras)(spec)
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent: lock, spawn, watch ---------------------------------------------

def cache_of(size, args):
    return str(Path(args.workdir) / SIZES[size]["cache"]) if "cache" in SIZES[size] else args.cache_dir


def child_env(size, args):
    return dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT),
                TOKENIZERS_PARALLELISM="false", HF_HUB_CACHE=cache_of(size, args), HF_HUB_OFFLINE="1",
                TRANSFORMERS_VERBOSITY="error")


def rss_bytes(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proc_write_bytes(pid):
    try:
        for line in open(f"/proc/{pid}/io"):
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def watch(cmd, env, cwd, log_path, args, use_lock=True):
    """Runs cmd under the big-memory lock; returns (rc, wall s, peak RSS bytes, write_bytes, killed, waited s)."""
    with open(LOCK if use_lock else os.devnull, "a") as lock:
        waited = time.perf_counter()
        try:
            if use_lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"    waiting for {LOCK} ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        waited = time.perf_counter() - waited
        with open(log_path, "w") as log:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            killed, limit = None, args.max_rss_gb * 2**30
            while True:
                # WNOWAIT: the exited child stays a zombie so its /proc/<pid>/io can still be read
                if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    break
                rss = rss_bytes(proc.pid)
                if rss > limit and not killed:
                    killed = rss
                    os.kill(proc.pid, signal.SIGKILL)
                if time.perf_counter() - start > args.timeout and not killed:
                    killed = -1
                    os.kill(proc.pid, signal.SIGKILL)
                time.sleep(0.2)
            wall = time.perf_counter() - start
            written = proc_write_bytes(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_maxrss * 1024, written, killed, waited


def run_variant(variant, args, logdir):
    size, task, impl = variant
    spec = {"size": size, "task": task, "impl": impl, "steps": args.steps or SIZES[size]["steps"],
            "repo": repo_of(size), "workdir": args.workdir}
    log_path = logdir / f"{size}-{task}-{impl}-{int(time.time())}.log"
    env, use_lock = child_env(size, args), SIZES[size].get("lock", True)
    if impl == "peft" and not args.torch_omp_spin:
        # torch's OpenMP workers spin at every barrier by default; with more runnable threads than the
        # 2 cores (any shared machine) each op then waits for a descheduled spinner. Measured at load ~5,
        # the toy-width Gemma classifier step: 2.13 s with the default, 0.03 s with PASSIVE or 1 thread.
        # Quiet, PASSIVE costs nothing measurable at these step sizes. TensorFlow uses its own pool.
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if impl == "train_py":
        run_dir = Path(tempfile.mkdtemp(prefix=f"bench-scale-job-{size}-", dir=args.workdir))
        cmd = [sys.executable, str(ROOT / "train.py"), *train_py_overrides(size, task, args)]
        rc, wall, peak, written, killed, waited = watch(cmd, env, run_dir, log_path, args, use_lock)
        result = {"saved_bytes": dir_bytes(run_dir), "command": "python train.py " + " ".join(cmd[2:]),
                  "run_files": largest_files(run_dir), **job_throughput(run_dir)}
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    else:
        cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
        rc, wall, peak, written, killed, waited = watch(cmd, env, ROOT, log_path, args, use_lock)
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith("RESULT ")]
        result = json.loads(lines[-1][len("RESULT "):]) if lines else {}
    result.update({"rc": rc, "wall_s": wall, "peak_rss_bytes": peak, "write_bytes": written, "log": str(log_path),
                   "lock_wait_s": waited})
    if killed:
        result["killed"] = "timeout" if killed == -1 else f"RSS {killed / 2**30:.1f} GB > --max-rss-gb"
    if rc != 0 or (impl != "train_py" and "tokens_per_s" not in result):
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-6:])
        result["error"] = result.get("killed") or tail
    return result


def train_py_overrides(size, task, args):
    steps = args.steps + 1 if args.steps else 5  # the 5-step job
    return [f"backbone={SIZES[size].get('conf', size)}", f"lora.rank={RANK}", f"task={task}",
            "data=sentiment_text" if task == "causal_lm" else "data=sentiment",
            f"trainer.batch_size={BATCH}", f"trainer.sequence_length={LENGTH}", "trainer.epochs=1",
            f"trainer.max_steps={steps}", f"data.max_train_samples={BATCH * steps}",
            f"data.max_validation_samples={2 * BATCH}", "trainer.log_every_n_steps=1"]


def job_throughput(run_dir):
    """The job's own steady tokens/s from its sqlite store: StepLogger's per-step `tokens_per_second`
    (log_every_n_steps=1), the first step left out, total tokens over total time."""
    import sqlite3

    try:
        with sqlite3.connect(Path(run_dir) / "mlflow.db") as db:
            rows = db.execute("SELECT value FROM metrics WHERE key = 'tokens_per_second' ORDER BY step").fetchall()
    except sqlite3.Error:
        return {}
    rates = [r[0] for r in rows[1:]]
    return {"tokens_per_s": len(rates) / sum(1 / r for r in rates), "step_tokens_per_s": rates} if rates else {}


def largest_files(run_dir, n=4):
    files = sorted((p for p in Path(run_dir).rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)[:n]
    return [(str(p.relative_to(run_dir)), p.stat().st_size) for p in files]


def ensure_checkpoints(sizes, args):
    """Lays out the missing checkpoints; never touches one that is there (its revision may differ)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_scale_checkpoint import make_checkpoint

    for size in sizes:
        cache_dir = cache_of(size, args)
        repo_dir = Path(cache_dir) / ("models--" + repo_of(size).replace("/", "--"))
        if not (repo_dir / "refs" / "main").exists():
            print(f"making the {size} checkpoint in {cache_dir} ...", flush=True)
            make_checkpoint(SIZES[size]["checkpoint"], cache_dir, config_overrides=SIZES[size].get("overrides"))


# --- report --------------------------------------------------------------------

def gb(x):
    return f"{x / 2**30:.2f}" if x else "-"


def mb(x):
    return f"{x / 2**20:.1f}" if x is not None else "-"


def sec(x):
    return f"{x:.1f}" if x is not None else "-"


def variant_name(impl, r):
    name = NAMES[impl]
    if impl.startswith("ours") or impl.startswith("keras_hub"):
        xla = "XLA" if r.get("jit_compile") else "no XLA"
        default = ", default" if r.get("jit_compile") == r.get("jit_default") else ""
        name += f" ({xla}{default})"
    return name


def fmt_table(results, variants):
    out = ["| size | task | implementation | tokens/s | step (s) | load (s) | first step (s) | start->step 1 (s) | "
           "peak RSS (GB) | disk written (MB) | saved (MB) | wall (s) | loss first->last |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for v in variants:
        for r in results.get(v, []):
            size, task, impl = v
            if "error" in r:
                out.append(f"| {size} | {task} | {NAMES[impl]} | failed: {r['error'].splitlines()[-1][:120]} "
                           f"| | | | | {gb(r['peak_rss_bytes'])} | | | {sec(r['wall_s'])} | |")
                continue
            tps = r.get("tokens_per_s")
            steps = r.get("step_s") or []
            losses = r.get("losses") or []
            loss = f"{losses[0]:.2f} -> {losses[-1]:.2f}" if losses else "-"
            out.append(
                f"| {size} | {task} | {variant_name(impl, r)} | {'**%.0f**' % tps if tps else '-'} | "
                f"{'%.2f' % (sum(steps) / len(steps)) if steps else '-'} | {sec(r.get('load_s'))} | {sec(r.get('first_step_s'))} | "
                f"{sec(r.get('start_to_first_step_s'))} | {gb(r['peak_rss_bytes'])} | {mb(r['write_bytes'])} | "
                f"{mb(r.get('saved_bytes'))} | {sec(r['wall_s'])} | {loss} |")
    return "\n".join(out)


def best(results, v):
    """The run of a variant (median tokens/s over repeats), or None."""
    runs = [r for r in results.get(v, []) if "error" not in r]
    if not runs:
        return None
    runs.sort(key=lambda r: r.get("tokens_per_s") or 0)
    return runs[len(runs) // 2]


def fmt_growth(results, sizes):
    """Per implementation, causal LM: how each figure grows from the smallest size."""
    out = ["| implementation | figure | " + " | ".join(SIZES[s]["label"] for s in sizes) + " |",
           "|---|---|" + "---:|" * len(sizes)]
    for impl in ("ours", "ours_alt", "keras_hub", "keras_hub_xla", "peft"):
        runs = [best(results, (s, "causal_lm", impl)) for s in sizes]
        if not any(runs):
            continue
        name = NAMES[impl] + (" (other jit)" if impl == "ours_alt" else "")
        rows = {
            "weights (GB)": lambda r: gb(r["params"] * (2 if r.get("dtype") == "bfloat16" else 4)) if r else "-",
            "peak RSS (GB)": lambda r: gb(r["peak_rss_bytes"]) if r else "-",
            "peak RSS / weights": lambda r: f"{r['peak_rss_bytes'] / (r['params'] * (2 if r.get('dtype') == 'bfloat16' else 4)):.1f}x" if r else "-",
            "tokens/s": lambda r: f"{r['tokens_per_s']:.0f}" if r and r.get("tokens_per_s") else "-",
            "load (s)": lambda r: sec(r.get("load_s")) if r else "-",
            "first step (s)": lambda r: sec(r.get("first_step_s")) if r else "-",
            "disk written (MB)": lambda r: mb(r["write_bytes"]) if r else "-",
        }
        for figure, fn in rows.items():
            out.append(f"| {name} | {figure} | " + " | ".join(fn(r) for r in runs) + " |")
    return "\n".join(out)


def fmt_targets(results, sizes):
    """Issue 10's targets, from the causal LM (like with like) and, for PEFT, the classifier too."""
    out = ["| size | task | target | measured | met |", "|---|---|---|---|---|"]

    def line(size, task, target, value, ok):
        out.append(f"| {size} | {task} | {target} | {value} | {'yes' if ok else 'no'} |")

    for size in sizes:
        for task, impl in ((t, i) for t in ("causal_lm", "classifier") for i in ("ours", "ours_alt")):
            ours = best(results, (size, task, impl))
            if ours is None:
                continue
            task = f"{task}, ours {'XLA' if ours.get('jit_compile') else 'no XLA'}"
            kh, pf = (best(results, (size, task.split(",")[0], i)) for i in ("keras_hub", "peft"))
            theirs = [r for r in (kh, pf) if r]
            if theirs:
                low = min(r["peak_rss_bytes"] for r in theirs)
                ratio = ours["peak_rss_bytes"] / low
                line(size, task, "peak RSS <= 0.8x the lower of keras-hub / PEFT",
                     f"{ratio:.2f}x ({gb(ours['peak_rss_bytes'])} vs {gb(low)} GB)", ratio <= 0.8)
            for other, goal, label in ((kh, 1.2, "keras-hub"), (pf, 1.5, "PEFT")):
                if other and ours.get("tokens_per_s") and other.get("tokens_per_s"):
                    ratio = ours["tokens_per_s"] / other["tokens_per_s"]
                    line(size, task, f"tokens/s >= {goal}x {label}",
                         f"{ratio:.2f}x ({ours['tokens_per_s']:.0f} vs {other['tokens_per_s']:.0f})", ratio >= goal)
            if kh:
                line(size, task, "load <= keras-hub", f"{ours['load_s']:.1f} vs {kh['load_s']:.1f} s",
                     ours["load_s"] <= kh["load_s"])
            alt = best(results, (size, task.split(",")[0], "ours_alt"))
            if impl == "ours" and alt and alt.get("tokens_per_s") and ours.get("tokens_per_s"):
                on, off = (ours, alt) if ours.get("jit_compile") else (alt, ours)
                out.append(f"| {size} | {task} | item 6: XLA / no XLA (ours) | tokens/s {on['tokens_per_s'] / off['tokens_per_s']:.2f}x, "
                           f"peak RSS {on['peak_rss_bytes'] / off['peak_rss_bytes']:.2f}x, first step "
                           f"{on['first_step_s']:.0f} vs {off['first_step_s']:.0f} s | default: "
                           f"{'XLA' if ours.get('jit_compile') else 'no XLA'} |")
        job = best(results, (size, "causal_lm", "train_py")) or next(iter(results.get((size, "causal_lm", "train_py"), [])), None)
        pf = best(results, (size, "causal_lm", "peft"))
        if job and "error" not in job and pf:
            line(size, "causal_lm", "train.py job wall <= PEFT load + same steps (its process wall)",
                 f"{job['wall_s']:.0f} vs {pf['wall_s']:.0f} s", job["wall_s"] <= pf["wall_s"])
            ours = best(results, (size, "causal_lm", "ours")) or best(results, (size, "causal_lm", "ours_alt"))
            if ours and job.get("write_bytes") is not None:
                line(size, "causal_lm", "train.py job writes <= 2x the adapter + logs",
                     f"{mb(job['write_bytes'])} MB written, {mb(job['saved_bytes'])} MB left in the run dir, "
                     f"adapter {mb(ours['saved_bytes'])} MB", job["saved_bytes"] <= 2 * ours["saved_bytes"] + 2**20)
    return "\n".join(out)


def plan(args):
    sizes = args.sizes.split(",")
    impls = args.impls.split(",")
    variants = []
    for size in sizes:
        variants += [(size, "causal_lm", i) for i in impls if i != "train_py"]
        if size in args.classifier_sizes.split(","):
            variants += [(size, "classifier", i) for i in impls if i in ("ours", "ours_alt", "peft")]
        if "train_py" in impls and size in args.job_sizes.split(","):
            variants.append((size, "causal_lm", "train_py"))
    return sizes, variants


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="gpt2_base,gpt2_medium,gemma_2b")
    parser.add_argument("--impls", default="ours,ours_alt,keras_hub,peft,train_py",
                        help="comma-separated: ours, ours_alt (ours with the other jit_compile), keras_hub, "
                             "keras_hub_xla, peft, train_py")
    parser.add_argument("--steps", type=int, default=0,
                        help="timed steps after the first (default per size: 6, 4, 4)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds")
    parser.add_argument("--classifier-sizes", default="gemma_2b", help="sizes that also run the classifier task")
    parser.add_argument("--job-sizes", default="gemma_2b", help="sizes that run the train.py job")
    parser.add_argument("--cache-dir", default=os.environ.get("HF_HUB_CACHE", "/work/hfcache"))
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where saves and job runs are written")
    parser.add_argument("--max-rss-gb", type=float, default=20.0, help="kill a child above this resident set")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per child")
    parser.add_argument("--torch-omp-spin", action="store_true",
                        help="leave torch's OpenMP at its default active waiting (default: OMP_WAIT_POLICY=PASSIVE)")
    parser.add_argument("--keep", action="store_true", help="keep the train.py job's run directory")
    parser.add_argument("--quick", action="store_true", help="GPT-2 base, ours / keras-hub / PEFT, 2 timed steps")
    parser.add_argument("--json", help="write every raw measurement here (after each child)")
    parser.add_argument("--report", help="comma-separated --json files of earlier runs: print their merged report, run nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(json.loads(args.child))
    if args.report:
        return print_report(*load_reports(args.report.split(",")))
    if args.quick:
        args.sizes, args.steps = "gpt2_base", args.steps or 2
        args.impls = "ours,keras_hub,peft"

    started, load_before = time.time(), os.getloadavg()
    header = machine(commit=True)
    print(f"# python {' '.join(sys.argv)}\n# {header}\n# load average before: "
          f"{' '.join(f'{x:.2f}' for x in load_before)}", flush=True)
    sizes, variants = plan(args)
    ensure_checkpoints(sizes, args)
    logdir = Path(tempfile.mkdtemp(prefix="bench-scale-logs-", dir=args.workdir))
    print(f"# child logs: {logdir}", flush=True)
    results = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            r = run_variant(v, args, logdir)
            r["dtype"] = SIZES[v[0]]["dtype"]
            results[v].append(r)
            tps = r.get("tokens_per_s")
            print(f"  {v[0]:11} {v[1]:10} {variant_name(v[2], r):32} "
                  f"{'%6.0f tok/s' % tps if tps else '     - tok/s'}  load {sec(r.get('load_s')):>5} s  "
                  f"first step {sec(r.get('first_step_s')):>5} s  RSS {gb(r['peak_rss_bytes'])} GB  "
                  f"written {mb(r['write_bytes'])} MB  wall {r['wall_s']:.0f} s"
                  + (f"  FAILED: {r['error'].splitlines()[-1][:200]}" if "error" in r else ""), flush=True)
            if args.json:  # after every child: a stopped run keeps what it measured
                Path(args.json).write_text(json.dumps({"argv": sys.argv, "machine": header, "load_before": load_before,
                                                       "runs": {"/".join(k): v for k, v in results.items()}}, indent=1))
    print_report(sizes, variants, results, load_before, started)


def load_reports(paths):
    results, sizes = {}, []
    for path in paths:
        data = json.loads(Path(path).read_text())
        print(f"# {path}: python {' '.join(data['argv'])}\n# {data['machine']}")
        for key, runs in data["runs"].items():
            v = tuple(key.split("/"))
            results.setdefault(v, []).extend(runs)
            sizes += [v[0]] if v[0] not in sizes else []
    sizes = [s for s in SIZES if s in sizes]
    variants = sorted(results, key=lambda v: (list(SIZES).index(v[0]), v[1] != "causal_lm", v[2] == "train_py"))
    return sizes, variants, results, None, None


def print_report(sizes, variants, results, load_before, started):
    report = [f"batch {BATCH}, length {LENGTH}, LoRA rank {RANK} on q/v (GPT-2 in PEFT: c_attn = q, k, v)", "",
              fmt_table(results, variants), "", "How it grows with size (causal LM):", "",
              fmt_growth(results, sizes), "", "Targets (issue 10):", "", fmt_targets(results, sizes), "",
              f"load average of each child at its end: " + ", ".join(
                  f"{v[0]}/{v[1]}/{v[2]} {r['load_average']:.1f}" for v in variants for r in results[v] if "load_average" in r)]
    if started:
        report.append(f"load average: {' '.join(f'{x:.2f}' for x in load_before)} before, "
                      f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after; wall time {(time.time() - started) / 60:.1f} min")
    for v in variants:
        for r in results[v]:
            if v[2] == "train_py":
                report.append(f"train.py job ({v[0]}): `{r.get('command')}`; largest files left: {r.get('run_files')}")
    print("\n" + "\n".join(report))


if __name__ == "__main__":
    main()
