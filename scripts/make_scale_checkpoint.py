"""Lays out a real-shaped transformers checkpoint in a Hugging Face cache, offline.

    python scripts/make_scale_checkpoint.py gemma_2b            # google/gemma-2b's shape, bf16
    python scripts/make_scale_checkpoint.py llama3_8b --cache-dir /tmp/hf
    HF_HUB_OFFLINE=1 python train.py backbone=gemma_2b lora.rank=4

Each model is the repository's real public `config.json` with RANDOM weights
(normal, std 0.02; norm weights at their neutral value, biases zero), written
as safetensors shards with an index the way the Hub holds them, plus a
tokenizer whose special tokens sit at the model's real ids (a small trained
BPE padded with unreachable filler pieces up to the first special id). The
cache layout is huggingface_hub's (`models--owner--repo/refs/main`,
`snapshots/<revision>/`), so `hf://owner/repo` and the built-in preset names
resolve to it with `HF_HUB_OFFLINE=1`. Use it to try real sizes without a
download; the numbers it produces are not a pretrained model's.

The cache directory defaults to huggingface_hub's (`HF_HUB_CACHE`, else
`~/.cache/huggingface/hub`). Writing is streamed tensor by tensor, so making
the 16 GB Llama-3-8B shape needs well under 1 GB of memory.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

# Public config.json files of the repositories, as published (the keys our
# converters and transformers read; nothing invented).
CONFIGS = {
    "gemma_2b": ("google/gemma-2b", {
        "architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu",
        "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 16384,
        "max_position_embeddings": 8192, "model_type": "gemma", "num_attention_heads": 8,
        "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
        "transformers_version": "4.38.0.dev0", "use_cache": True, "vocab_size": 256000,
    }),
    "llama3_8b": ("meta-llama/Meta-Llama-3-8B", {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
        "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 8192,
        "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
        "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
        "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0.dev0", "use_cache": True, "vocab_size": 128256,
    }),
    "gpt2_base": ("openai-community/gpt2", {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
        "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "vocab_size": 50257,
    }),
    "gpt2_medium": ("openai-community/gpt2-medium", {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 1024, "n_head": 16,
        "n_layer": 24, "n_positions": 1024, "resid_pdrop": 0.1, "vocab_size": 50257,
    }),
}

# Special tokens at the models' real ids (role -> (token, id)).
SPECIAL_TOKENS = {
    "gemma": {"pad": ("<pad>", 0), "eos": ("<eos>", 1), "bos": ("<bos>", 2), "unk": ("<unk>", 3)},
    "llama": {"bos": ("<|begin_of_text|>", 128000), "eos": ("<|end_of_text|>", 128001)},
    "gpt2": {"bos": ("<|endoftext|>", 50256), "eos": ("<|endoftext|>", 50256)},
}

SHARD_BYTES = 4_900_000_000  # the Hub's usual ~5 GB shards (Gemma 2B: 2 shards, Llama 3 8B: 4)


def tensor_shapes(cfg):
    """`{name: shape}` of a `*ForCausalLM` / `GPT2LMHeadModel` checkpoint of `cfg`, in the Hub's order."""
    if cfg["model_type"] == "gpt2":
        d, n = cfg["n_embd"], cfg["n_layer"]
        shapes = {"transformer.wte.weight": (cfg["vocab_size"], d), "transformer.wpe.weight": (cfg["n_positions"], d)}
        for i in range(n):
            p = f"transformer.h.{i}."
            shapes.update({
                p + "ln_1.weight": (d,), p + "ln_1.bias": (d,),
                p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
                p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
                p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
                p + "mlp.c_fc.weight": (d, 4 * d), p + "mlp.c_fc.bias": (4 * d,),
                p + "mlp.c_proj.weight": (4 * d, d), p + "mlp.c_proj.bias": (d,),
            })
        shapes.update({"transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)})
        return shapes
    d, f = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or d // heads
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (heads * head_dim, d),
            p + "self_attn.k_proj.weight": (kv * head_dim, d),
            p + "self_attn.v_proj.weight": (kv * head_dim, d),
            p + "self_attn.o_proj.weight": (d, heads * head_dim),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
        })
    shapes["model.norm.weight"] = (d,)
    if not cfg.get("tie_word_embeddings", cfg["model_type"] == "gemma"):
        shapes["lm_head.weight"] = (cfg["vocab_size"], d)
    return shapes


def _random_tensor(name, shape, model_type, rng, dtype):
    """Normal(0, 0.02) weights; norms at their neutral value (Gemma stores the
    w of 1 + w, so 0; others 1); biases 0."""
    if name.endswith("bias"):
        return np.zeros(shape, dtype)
    if "norm" in name or ".ln_" in name:
        return np.full(shape, 0.0 if model_type == "gemma" else 1.0, dtype)
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    chunk = 1 << 24  # 16M values at a time: float32 scratch stays at 64 MB
    for start in range(0, flat.size, chunk):
        values = rng.standard_normal(min(chunk, flat.size - start), dtype=np.float32)
        values *= 0.02
        flat[start:start + len(values)] = values.astype(dtype)
    return out


def _safetensors_dtype(dtype):
    return {"bfloat16": "BF16", "float32": "F32", "float16": "F16"}[np.dtype(dtype).name]


def write_safetensors(directory, shapes, model_type, dtype, seed, shard_bytes=SHARD_BYTES):
    """Streams random tensors into `model[-0000k-of-0000n].safetensors` shards (+ index when sharded)."""
    itemsize = np.dtype(dtype).itemsize
    shards, current, size = [], [], 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * itemsize
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    shards.append(current)
    rng = np.random.default_rng(seed)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    weight_map, total = {}, 0
    for file, tensors in zip(names, shards):
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name in tensors:
            nbytes = int(np.prod(shapes[name])) * itemsize
            header[name] = {"dtype": _safetensors_dtype(dtype), "shape": list(shapes[name]),
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = file
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
        with open(directory / file, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name in tensors:
                f.write(_random_tensor(name, shapes[name], model_type, rng, dtype).tobytes())
        total += offset
    if len(shards) > 1:
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return names


def write_tokenizer(directory, model_type, vocab_size):
    """tokenizer.json + tokenizer_config.json with the model's special tokens at their real ids."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    specials = SPECIAL_TOKENS[model_type]
    corpus = [f"the model number {i} reads a sentence about fine-tuning, data and tokens." for i in range(200)]
    first_special = min(i for _, i in specials.values())
    trainer_model = tokenizers.Tokenizer(models.BPE())
    trainer_model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer_model.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600 if first_special > 600 else 300, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    state = json.loads(trainer_model.to_str())
    vocab = state["model"]["vocab"]
    if first_special < 16:  # Gemma: specials first (in the model's vocabulary too), the trained pieces after them
        vocab = {t: i + len(specials) for t, i in vocab.items()}
        vocab.update({t: i for t, i in specials.values()})
    else:  # fill unreachable pieces up to the first special id, as the real vocabularies are that large
        vocab.update({f"<filler_{i}>": i for i in range(len(vocab), first_special)})
    state["model"]["vocab"] = vocab
    state["added_tokens"] = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t, i in sorted(set(specials.values()), key=lambda item: item[1])]
    state["decoder"] = json.loads(tokenizers.Tokenizer(models.BPE()).to_str())["decoder"]
    tokenizer = tokenizers.Tokenizer.from_str(json.dumps(state))
    tokenizer.decoder = decoders.ByteLevel()
    assert max(tokenizer.get_vocab().values()) < vocab_size
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {f"{role}_token": token for role, (token, _) in specials.items()}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def make_checkpoint(name, cache_dir=None, seed=0, dtype=None, config_overrides=None):
    """Writes checkpoint `name` (a key of CONFIGS) into the HF cache `cache_dir`; returns its snapshot directory.

    Args:
        name: str. `gemma_2b`, `llama3_8b`, `gpt2_base` or `gpt2_medium`.
        cache_dir: str or Path. A Hugging Face hub cache (default: huggingface_hub's).
        seed: int. Seed of the random weights.
        dtype: str. Weights dtype; default the config's `torch_dtype` (float32 for GPT-2).
        config_overrides: dict. Keys to change in config.json (e.g. fewer layers, for tests).
    """
    import ml_dtypes

    repo, cfg = CONFIGS[name]
    cfg = {**cfg, **(config_overrides or {})}
    dtype = dtype or cfg.get("torch_dtype", "float32")
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    if cache_dir is None:
        from huggingface_hub import constants

        cache_dir = constants.HF_HUB_CACHE
    # A stable fake revision per (config, seed, dtype): the same call gives the same snapshot.
    revision = hashlib.sha1(json.dumps([cfg, seed, dtype], sort_keys=True).encode()).hexdigest()
    repo_dir = Path(cache_dir) / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    partial = snapshot.with_name(revision + ".partial")
    if not (snapshot / "config.json").exists():
        partial.mkdir(parents=True, exist_ok=True)
        (partial / "config.json").write_text(json.dumps(cfg, indent=2))
        write_safetensors(partial, tensor_shapes(cfg), cfg["model_type"], np_dtype, seed)
        write_tokenizer(partial, cfg["model_type"], cfg["vocab_size"])
        os.replace(partial, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(CONFIGS))
    parser.add_argument("--cache-dir", help="Hugging Face hub cache (default: huggingface_hub's, HF_HUB_CACHE)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    snapshot = make_checkpoint(args.name, args.cache_dir, args.seed, args.dtype)
    size = sum(p.stat().st_size for p in snapshot.iterdir())
    print(f"{CONFIGS[args.name][0]}: {size / 1e9:.2f} GB in {snapshot}")
    print(f"Offline: HF_HUB_OFFLINE=1{'' if args.cache_dir is None else f' HF_HUB_CACHE={args.cache_dir}'} "
          f"python train.py backbone={args.name} lora.rank=4")


if __name__ == "__main__":
    sys.exit(main())
