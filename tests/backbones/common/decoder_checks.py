"""Checks shared by the rotary decoder families (Llama, Gemma)."""

from pathlib import Path

import numpy as np

import backbones
from tests.helpers import hidden

IDS = np.array([[5, 17, 42, 7, 98, 3, 11, 0], [1, 2, 3, 4, 5, 0, 0, 0]])
MASK = np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0]])


def perturb(hf_model, scale=0.1):
    """Non-trivial 1-D weights: transformers starts biases at 0 and norms at 1 (or 0 for
    Gemma's 1 + w), which would hide a swapped or missing tensor."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for p in hf_model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * scale)
    return hf_model.eval()


def run_causal_lm_parity_test(hf_lm, tmp_path, ids=IDS, mask=MASK, atol=1e-4):
    """Saves a transformers `*ForCausalLM`, loads it with `Backbone.from_preset`, and
    compares final hidden states and logits (`compute_logits`) on real tokens.
    Returns `(backbone, hidden_error, logits_error)`."""
    import torch

    directory = Path(tmp_path) / "hf_causal_lm"
    hf_lm.save_pretrained(directory)
    with torch.no_grad():
        kwargs = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        expected_hidden = hf_lm.model(**kwargs).last_hidden_state.numpy()
        expected_logits = hf_lm(**kwargs).logits.numpy()
    backbone = backbones.Backbone.from_preset(directory)
    states = backbone({"token_ids": ids, "padding_mask": mask})
    real = mask.astype(bool)
    hidden_error = float(np.abs(hidden(states)[real] - expected_hidden[real]).max())
    logits_error = float(np.abs(hidden(backbone.compute_logits(states))[real] - expected_logits[real]).max())
    assert hidden_error < atol and logits_error < atol, (hidden_error, logits_error)
    return backbone, hidden_error, logits_error


def run_cache_test(backbone, ids=IDS, mask=MASK, prefill=3, atol=1e-5):
    """`call_with_cache` on a prefix, then token by token, gives the full pass's hidden states."""
    full = hidden(backbone({"token_ids": ids, "padding_mask": mask}))
    cache = backbone.init_cache(ids.shape[0], ids.shape[1])
    out, cache = backbone.call_with_cache(ids[:, :prefill], mask, cache, 0)
    steps = [hidden(out)]
    for i in range(prefill, ids.shape[1]):
        out, cache = backbone.call_with_cache(ids[:, i:i + 1], mask, cache, i)
        steps.append(hidden(out))
    real = mask.astype(bool)
    np.testing.assert_allclose(np.concatenate(steps, axis=1)[real], full[real], atol=atol)


def run_sharded_checkpoint_test(hf_lm, tmp_path):
    """A transformers checkpoint saved sharded converts to the same outputs as
    saved in one file; returns both backbones `(one, sharded)`."""
    hf_lm.save_pretrained(Path(tmp_path) / "one")
    hf_lm.save_pretrained(Path(tmp_path) / "sharded", max_shard_size="20KB")
    assert (Path(tmp_path) / "sharded" / "model.safetensors.index.json").exists()
    assert len(list((Path(tmp_path) / "sharded").glob("*.safetensors"))) > 1
    inputs = {"token_ids": IDS, "padding_mask": MASK}
    one, sharded = (backbones.Backbone.from_preset(Path(tmp_path) / d) for d in ("one", "sharded"))
    np.testing.assert_array_equal(hidden(one(inputs)), hidden(sharded(inputs)))
    return one, sharded
