import json
import subprocess
import sys

import numpy as np
import pytest

import backbones
from backbones.errors import ConversionError
from backbones.gpt2 import GPT2Backbone
from tests.helpers import check_tiny_preset_rebuilds, make_hf_cache, run_backbone_test, run_hf_parity_test

SMALL = dict(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
             max_sequence_length=24)
INPUTS = {"token_ids": np.array([[3, 9, 4, 1, 7, 2], [5, 8, 6, 0, 0, 0]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], "int32")}


def test_backbone_contract(tmp_path):
    run_backbone_test(GPT2Backbone, SMALL, INPUTS, (2, 6, 16), tmp_path,
                      lora_targets=["key", "attention_output", "ffn"])


def tiny_hf_gpt2(**overrides):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=99, n_positions=32, n_embd=32, n_layer=3, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **overrides)
    return transformers.GPT2Model(config).eval()


IDS = np.array([[5, 17, 42, 7, 98, 3, 11, 0], [1, 2, 3, 4, 5, 0, 0, 0]])
MASK = np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0]])


def test_parity_with_transformers_directory(tmp_path):
    error = run_hf_parity_test(tiny_hf_gpt2(), IDS, MASK, tmp_path)
    print(f"GPT-2 parity max abs error: {error:.2e}")


def test_parity_with_transformers_lm_head_checkpoint(tmp_path):
    """GPT2LMHeadModel checkpoints prefix tensors with `transformer.` and tie lm_head."""
    import torch
    import transformers

    lm = transformers.GPT2LMHeadModel(tiny_hf_gpt2().config).eval()
    lm.save_pretrained(tmp_path / "lm")
    with torch.no_grad():
        expected = lm.transformer(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state.numpy()
    got = backbones.Backbone.from_preset(tmp_path / "lm")({"token_ids": IDS, "padding_mask": MASK}).numpy()
    assert np.abs(got[MASK == 1] - expected[MASK == 1]).max() < 1e-4


def test_hf_handle_offline_from_prepared_cache(tmp_path):
    """hf:// through huggingface_hub's cache with HF_HUB_OFFLINE=1, in a fresh process."""
    import torch

    model = tiny_hf_gpt2()
    model.save_pretrained(tmp_path / "files")
    make_hf_cache(tmp_path / "hub", "someone/tiny-gpt2", tmp_path / "files")
    with torch.no_grad():
        expected = model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state.numpy()
    np.save(tmp_path / "ids.npy", IDS)
    np.save(tmp_path / "mask.npy", MASK)
    script = (
        "import numpy as np, backbones, sys; d = sys.argv[1];"
        "m = backbones.Backbone.from_preset('hf://someone/tiny-gpt2');"
        "np.save(d + '/out.npy', m({'token_ids': np.load(d + '/ids.npy'), 'padding_mask': np.load(d + '/mask.npy')}).numpy())"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env, timeout=300)
    got = np.load(tmp_path / "out.npy")
    assert np.abs(got[MASK == 1] - expected[MASK == 1]).max() < 1e-4


def test_converter_rejects_mismatched_checkpoint(tmp_path):
    import json

    tiny_hf_gpt2().save_pretrained(tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    config = json.loads(config_path.read_text())
    config["n_layer"] = 2  # the checkpoint has 3 blocks: h.2.* is left over
    config_path.write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="unexpected tensor"):
        backbones.Backbone.from_preset(tmp_path / "ckpt")
    config["n_layer"], config["n_embd"] = 3, 16  # every shape is wrong
    config_path.write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="shape"):
        backbones.Backbone.from_preset(tmp_path / "ckpt")


def test_tiny_preset_is_reproducible(tmp_path):
    """scripts/make_tiny_presets.py rebuilds the bundled preset bit for bit."""
    check_tiny_preset_rebuilds("gpt2", "gpt2_tiny_en", tmp_path)


def test_tokenizer_matches_transformers_gpt2_byte_level_bpe(tmp_path):
    """Our GPT-2 tokenizer from vocab.json + merges.txt encodes like transformers'."""
    import transformers

    from backbones.gpt2.convert_hf import GPT2Converter

    bundled = backbones.Tokenizer.from_preset("gpt2_tiny_en")
    vocab = bundled.tokenizer.get_vocab()
    merges = json.loads(bundled.tokenizer.to_str())["model"]["merges"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(
        m if isinstance(m, str) else " ".join(m) for m in merges) + "\n")
    ours = GPT2Converter.convert_tokenizer(tmp_path)
    theirs = transformers.GPT2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    texts = ["The movie was great!", "  spaces  and\nnewlines", "naïve café ünïcödé 🙂", ""]
    assert ours(texts) == [theirs.encode(t) for t in texts]
    assert ours.detokenize(ours(texts)) == texts


def test_builtin_presets_listed():
    assert {"gpt2_base_en", "gpt2_medium_en", "gpt2_large_en", "gpt2_extra_large_en", "gpt2_tiny_en"} <= set(GPT2Backbone.presets)
    assert GPT2Backbone.presets["gpt2_base_en"]["handle"] == "hf://openai-community/gpt2"


def test_tied_logits_gradient_is_matmuls():
    """The LM head's gradient holds no (batch, length, vocabulary, hidden) tensor:
    TensorFlow's gradient of an ellipsis einsum made one (10 GB, 30 s per step at
    batch 8 x 128, V=8192, d=256)."""
    import tensorflow as tf

    model = GPT2Backbone(**SMALL)
    embeddings = model.token_embedding.embeddings
    hidden = tf.random.normal((2, 6, SMALL["hidden_dim"]))

    @tf.function
    def gradient(hidden):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model.compute_logits(hidden) ** 2)
        return tape.gradient(loss, [embeddings])

    graph = gradient.get_concrete_function(hidden).graph
    largest = max(out.shape.num_elements() for op in graph.get_operations() for out in op.outputs
                  if out.shape.is_fully_defined())
    assert largest <= max(2 * 6, SMALL["hidden_dim"]) * SMALL["vocabulary_size"]
