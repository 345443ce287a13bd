"""The headline command at real shapes: `train.py backbone=gemma_2b lora.rank=4` from
a Hugging Face cache laid out by scripts/make_scale_checkpoint.py, offline.

The mid-size case (Gemma 2B's widths, one block, a 16k vocabulary: 143M
parameters in bfloat16) runs in the normal suite; the real 2B shape is marked
slow (`python -m pytest -m slow tests/lab/test_scale.py`, ~9 GB of RAM, minutes;
run it under `flock /tmp/bigmem.lock` on a shared machine).
"""

import os
import resource
import sys
from pathlib import Path

import pytest

from tests.lab.test_train import client, runs, train

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_scale_checkpoint  # noqa: E402

MID_SIZE = {"num_hidden_layers": 1, "vocab_size": 16000}


def _run_headline(tmp_path, cache, monkeypatch, *overrides):
    """train.py in a child process that reads the cache offline; returns the run, its files and the
    child's peak RSS (None when an earlier child of this test process peaked higher)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    train(tmp_path, "backbone=gemma_2b", "lora.rank=4", *overrides)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    (run,) = runs(tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    return run, files, (peak if peak > before * 1024 else None)


def _check_lora_run(run, files, tmp_path):
    assert run.info.status == "FINISHED"
    assert run.data.params["backbone.dtype"] == "bfloat16"
    history = client(tmp_path).get_metric_history(run.info.run_id, "step_loss")
    assert history and all(h.value == h.value and abs(h.value) < 1e3 for h in history)  # finite
    model = [p for p in files if p.parent.name == "model"]
    assert {p.name for p in model} >= {"adapter.lora.safetensors", "base.json", "task.json"}
    model_bytes = sum(p.stat().st_size for p in model)
    # Nothing the size of the base anywhere: the run wrote its adapter, head and logs.
    logs = sum(p.stat().st_size for p in files if p.name == "mlflow.db" or p.suffix in (".yaml", ".log", ".txt", ".json"))
    assert sum(p.stat().st_size for p in files) <= 2 * model_bytes + logs
    return model_bytes


def test_mid_size_bf16_checkpoint_trains_lora_through_train_py(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    make_scale_checkpoint.make_checkpoint("gemma_2b", cache, config_overrides=MID_SIZE)
    work = tmp_path / "run"
    work.mkdir()
    run, files, _ = _run_headline(work, cache, monkeypatch, "debug=fast", "trainer.batch_size=4", "trainer.sequence_length=32",
                                  "data.max_train_samples=16", "data.max_validation_samples=8", "trainer.max_steps=3")
    model_bytes = _check_lora_run(run, files, work)
    assert model_bytes < 5e6
    assert float(run.data.params["params.total"]) > 1.4e8


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["debug=fast", "default"])
def test_gemma_2b_headline_runs_in_bounded_memory_and_disk(tmp_path, monkeypatch, mode):
    """`python train.py backbone=gemma_2b lora.rank=4 [debug=fast]` on the real 2B shape: FINISHED,
    peak RSS well under the old 14.2 GB, a few MB written (the adapter, not the 5 GB base)."""
    cache = Path(os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub")
    if not (cache / "models--google--gemma-2b").is_dir():
        cache = tmp_path / "hub"  # 5 GB, ~40 s to write
        make_scale_checkpoint.make_checkpoint("gemma_2b", cache)
    work = tmp_path / "run"
    work.mkdir()
    run, files, peak = _run_headline(work, cache, monkeypatch, *([] if mode == "default" else [mode]))
    model_bytes = _check_lora_run(run, files, work)
    assert model_bytes < 20e6
    if peak is not None:  # the largest child so far: this one when it set a new high
        assert peak < 11e9, f"peak RSS {peak / 1e9:.1f} GB"
