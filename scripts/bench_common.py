"""What every benchmark script measures the same way: the machine line, RSS, step timestamps.

    from bench_common import fit_probe, machine, rss_gb   # scripts/ is on sys.path when a script runs

    probe = fit_probe()                   # a Keras callback: step timestamps + RSS sampled every 5 ms
    with probe:
        history = task.fit(x, y, batch_size=8, epochs=1, callbacks=[probe])
    probe.step_times()                    # seconds per step, the first (traced) one included
    probe.peak_rss_gb                     # the peak RSS seen during fit
"""

import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_gb():
    """This process's resident set now, in GB (VmRSS)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1e6


def machine(commit=False):
    """One line naming the CPU (and its AVX-512 / AMX flags), memory and library versions.

    With `commit=True` a first line names the checkout's commit (and whether it has uncommitted changes).
    """
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    model += " (" + (", ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags) or "no AVX-512") + ")"
    versions = subprocess.run(
        [sys.executable, "-c", "import keras, keras_hub, peft, tensorflow, torch, transformers; print("
         "f'TensorFlow {tensorflow.__version__}, Keras {keras.__version__}, keras-hub {keras_hub.__version__}, "
         "torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True).stdout.strip()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    line = f"{model}, {os.cpu_count()} vCPU, {memory:.0f} GB; Python {platform.python_version()}, {versions}"
    if not commit:
        return line
    head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return f"commit {head}{' (+ uncommitted changes)' if dirty else ''}\n# {line}"


def fit_probe():
    """A new Keras callback and context manager: step end timestamps, and RSS sampled during `fit`.

    The load's peak hides training's in ru_maxrss, hence the sampling thread. The class is made on
    first use, so that importing this module (the parent of the benchmark children) does not import Keras.
    """
    import keras

    class _FitProbe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.start, self.stamps, self.peak_rss_gb = None, [], 0.0
            self.rss_before_gb = rss_gb()
            self._done = threading.Event()

        def __enter__(self):
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
            self.start = time.perf_counter()
            return self

        def __exit__(self, *exc):
            self._done.set()
            self._thread.join()

        def _sample(self):
            while not self._done.wait(0.005):
                self.peak_rss_gb = max(self.peak_rss_gb, rss_gb())

        def on_train_batch_end(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

        def step_times(self):
            return [b - a for a, b in zip([self.start] + self.stamps[:-1], self.stamps)]

    return _FitProbe()
