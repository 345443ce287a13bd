"""The scale fixture: a real-shaped checkpoint in a Hugging Face cache, loaded
offline through the built-in preset name, with bounded memory."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_scale_checkpoint  # noqa: E402

# Gemma 2B's widths with 2 layers and a 32k vocabulary: 286M parameters, 0.57 GB in bf16.
SMALL_GEMMA = {"num_hidden_layers": 2, "vocab_size": 32000}
SMALL_GEMMA_PARAMS = 2048 * 32000 + 2 * (2048 * 2048 * 2 + 2 * 2048 * 256 + 3 * 2048 * 16384 + 2 * 2048) + 2048


def test_checkpoint_has_the_real_layout_and_loads_offline(tmp_path, monkeypatch):
    snapshot = make_scale_checkpoint.make_checkpoint("gemma_2b", tmp_path, config_overrides=SMALL_GEMMA)
    repo = tmp_path / "models--google--gemma-2b"
    assert (repo / "refs" / "main").read_text() == snapshot.name
    config = json.loads((snapshot / "config.json").read_text())
    assert config["hidden_size"] == 2048 and config["intermediate_size"] == 16384 and config["head_dim"] == 256
    # Same call, same snapshot (a stable revision, nothing rewritten).
    assert make_scale_checkpoint.make_checkpoint("gemma_2b", tmp_path, config_overrides=SMALL_GEMMA) == snapshot

    from huggingface_hub import constants as hf_constants  # read once at import: patch, not setenv

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    import backbones

    model = backbones.Backbone.from_preset("hf://google/gemma-2b")
    assert type(model).__name__ == "GemmaBackbone" and model.dtype_policy.name == "float32"
    assert model.count_params() == SMALL_GEMMA_PARAMS
    tokenizer = model.tokenizer
    assert [tokenizer.special_token_id(r) for r in ("pad", "eos", "bos", "unk")] == [0, 1, 2, 3]
    ids = tokenizer(["the model reads a sentence"])
    assert tokenizer.detokenize(ids) == ["the model reads a sentence"]


# Peak memory of loading, measured in a fresh process: the weights must be
# held once (built unallocated, each variable created from its tensor), not
# zeros + the checkpoint + float32 conversion copies as before (2.7x).
LOAD = textwrap.dedent("""
    import resource, sys
    import backbones
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = backbones.Backbone.from_preset(sys.argv[1], dtype="bfloat16")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    weights = sum(int(v.numpy().nbytes) for v in model.weights)
    print(after - before, weights)
""")


def test_loading_a_bf16_checkpoint_holds_the_weights_once(tmp_path):
    snapshot = make_scale_checkpoint.make_checkpoint("gemma_2b", tmp_path, config_overrides=SMALL_GEMMA)
    out = subprocess.run([sys.executable, "-c", LOAD, str(snapshot)], capture_output=True, text=True,
                         cwd=ROOT, timeout=600, check=True).stdout.split()
    growth, weights = int(out[-2]), int(out[-1])
    assert weights == 2 * SMALL_GEMMA_PARAMS
    # One copy of the weights plus one layer's tensors in flight (the largest, 64 MB).
    assert growth < weights + 160e6, f"loading grew the peak RSS by {growth / 1e6:.0f} MB for {weights / 1e6:.0f} MB of weights"
