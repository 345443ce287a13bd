"""LoRA adapters in PEFT's format: `adapter_config.json` + `adapter_model.safetensors`.

PEFT's tensors are `base_model.model.<module>.lora_A.weight` `(r, in)` and
`lora_B.weight` `(out, r)`, for the transformers module `<module>` (with the
`model.` / `transformer.` prefix of the model PEFT wrapped); its scale is
`lora_alpha / r` (`/ sqrt(r)` with `use_rslora`), per module when
`rank_pattern` / `alpha_pattern` say so. Ours, on a 2-D Dense kernel: A
`(in, r)`, B `(r, out)`, scale alpha / rank: the same matrices transposed,
on the modules the family's weight table names (`backbones/weight_table.py`).

GPT-2's `c_attn` is one Conv1D for query, key and value. A PEFT adapter on
it, `dW = s A^T B^T` with B `(3 out, r)`, is exactly three adapters that
share A: B's row blocks, each with a copy of A, on our query, key and value.
Written back, three adapters with the same A fuse into rank r again; others
(the default: query and value only, each with its own A) are written as one
adapter of rank `n r` on `c_attn`: A stacks the n A's, B places each B in
its own column block and row block (zeros elsewhere), alpha is `n alpha`:
`[A1; A2]^T [[B1, 0]; [0, 0]; [0, B2]]^T` is the same update, exactly.
"""

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np

from backbones import lora, preset_io
from backbones.errors import LoRAError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_ROOT = "base_model.model."


def is_peft_directory(path):
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()


def _modules(backbone):
    """(converter, {module name: table entry}) of every projection PEFT can adapt."""
    from backbones.formats.transformers import exporter_for

    _, converter = exporter_for(backbone)
    modules = {e.name[: -len(".weight")]: e for e in converter.weight_table(backbone)
               if e.layout.kind and e.name.endswith(".weight")}
    return converter, modules


def _head_prefix(backbone, converter):
    # PEFT keys carry the module path of the transformers model the adapter is
    # for: `*ForCausalLM` for decoders (what PEFT users wrap), the bare model for encoders.
    head = "causal_lm" if "causal_lm" in converter.architectures else "base"
    return head, converter.architectures[head][1]


def save(backbone, directory):
    """Writes `backbone`'s LoRA as a PEFT adapter directory, atomically."""
    spec = backbone.lora_spec
    if spec is None:
        raise LoRAError("LoRA is not enabled on this backbone: call enable_lora(rank) first.")
    converter, modules = _modules(backbone)
    head, prefix = _head_prefix(backbone, converter)
    targets = [layer for _, layer in lora.target_layers(backbone, spec.targets)]
    adapted = {id(layer) for layer in targets}
    in_table = {id(x) for entry in modules.values() for x in entry.layers}
    unwritable = [layer.path for layer in targets if id(layer) not in in_table]
    if unwritable:  # never an adapter silently missing some of what was trained
        raise LoRAError(
            f"LoRA layers {unwritable[:3]} have no transformers module in the {type(backbone).__name__} "
            "weight table, so PEFT's format cannot hold them. Save with format='backbone_lab'.")
    tensors, ranks, kinds = {}, {}, set()
    for module, entry in modules.items():
        layers = [(i, layer) for i, layer in enumerate(entry.layers) if id(layer) in adapted]
        if not layers:
            continue
        a = [np.asarray(layer.lora_kernel_a.numpy(), np.float32).T for _, layer in layers]  # (r, in)
        b = [np.asarray(layer.lora_kernel_b.numpy(), np.float32).T for _, layer in layers]  # (out, r)
        if len(entry.layers) == 1:
            big_a, big_b = a[0], b[0]
        elif len(layers) == len(entry.layers) and all(np.array_equal(a[0], x) for x in a[1:]):
            big_a, big_b = a[0], np.concatenate(b, axis=0)  # one shared A: the fused rank-r adapter
        else:
            big_a, big_b = _block_adapter(entry, layers, a, b)
        key = f"{_ROOT}{prefix}{module}"
        tensors[f"{key}.lora_A.weight"] = np.ascontiguousarray(big_a)
        tensors[f"{key}.lora_B.weight"] = np.ascontiguousarray(big_b)
        ranks[module] = big_a.shape[0]
        kinds.add(entry.layout.kind)
    # Every module's scale is alpha / rank; a module of rank n*r keeps it with alpha n*alpha.
    rank = Counter(ranks.values()).most_common(1)[0][0]
    alpha = spec.alpha * rank / spec.rank
    # Modules of another rank (GPT-2's stacked c_attn) by PEFT's pattern keys, which
    # match a module name ending in them like target_modules do.
    patterns = {key: r for r in set(ranks.values()) - {rank}
                for key in _target_modules({m for m, x in ranks.items() if x == r}, set(modules))}
    config = {
        "peft_type": "LORA", "r": rank, "lora_alpha": _number(alpha),
        "target_modules": _target_modules(set(ranks), set(modules)),
        "rank_pattern": patterns,
        "alpha_pattern": {key: _number(spec.alpha * r / spec.rank) for key, r in patterns.items()},
        "use_rslora": False, "use_dora": False, "bias": "none", "lora_dropout": 0.0,
        # PEFT's flag for Conv1D weights stored (in, out): GPT-2's.
        "fan_in_fan_out": kinds == {"conv1d"}, "modules_to_save": None,
        "task_type": "CAUSAL_LM" if head == "causal_lm" else None, "inference_mode": True,
        "init_lora_weights": True, "base_model_name_or_path": None,
    }
    from safetensors.numpy import save_file

    with preset_io.atomic_directory(directory) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        preset_io.write_json(tmp / CONFIG_FILE, config)


def _block_adapter(entry, layers, a, b):
    """One adapter of rank n*r on a fused module from n separate ones (see the module docstring)."""
    rank = a[0].shape[0]
    outs = [layer.kernel.shape[1] for layer in entry.layers]
    starts = np.cumsum([0, *outs])
    big_b = np.zeros((starts[-1], rank * len(layers)), np.float32)
    for j, ((i, _), bj) in enumerate(zip(layers, b)):
        big_b[starts[i]:starts[i + 1], j * rank:(j + 1) * rank] = bj
    return np.concatenate(a, axis=0), big_b


def _number(x):
    return int(x) if float(x).is_integer() else float(x)


def _suffixes(name, k):
    return ".".join(name.split(".")[-k:])


def _matches(target, name):
    return name == target or name.endswith("." + target)


def _target_modules(chosen, every):
    """The shortest module-name suffixes (PEFT's list form: a module matches a
    name it equals or ends with after a dot) that select exactly `chosen`:
    `["q_proj", "v_proj"]`, or for BERT's ffn `0.output.dense`-style names,
    since `output.dense` also ends `attention.output.dense`."""
    depth = max(len(n.split(".")) for n in every)
    for k in range(1, depth + 1):
        names = sorted({_suffixes(n, k) for n in chosen})
        if {n for n in every if any(_matches(t, n) for t in names)} == chosen:
            return names
    return sorted(chosen)


# -- loading ------------------------------------------------------------------
_REFUSED = {
    "use_dora": ("DoRA (use_dora=true) rescales each weight column by a learned magnitude; "
                 "our LoRA layers have no such vector"),
    "lora_bias": "trained LoRA biases (lora_bias=true) have no place in our LoRA layers",
    "layer_replication": "layer_replication changes the architecture (repeated layers)",
    "target_parameters": "target_parameters adapts raw parameters (e.g. MoE experts), not projections",
    "use_qalora": "QA-LoRA (use_qalora=true) is not plain LoRA",
    # LoRA variants whose tensors look like LoRA's but whose update is not `s B A x`
    # everywhere: loaded as plain LoRA they would give other outputs, silently.
    "alora_invocation_tokens": ("activated LoRA applies the adapter only from its invocation tokens on; "
                                "our LoRA applies it to every token"),
    "use_bdlora": "BD-LoRA's block-diagonal A or B factors are not stored as plain LoRA matrices",
    "arrow_config": "Arrow routes each token among several adapters",
    "kasa_config": "KaSA inserts learned singular values between A and B and truncates the base weight",
    "monteclora_config": "MonteCLoRA samples its adapters (variational Monte Carlo)",
    "trainable_token_indices": "trained token embeddings have no place in our LoRA layers",
}


def _refuse(path, key, why):
    raise LoRAError(f"{path}/{CONFIG_FILE}: {key} is not supported: {why}. Re-train the adapter without it.")


def read(directory):
    """(config, tensors) of a PEFT adapter directory, after refusing what we cannot represent."""
    from safetensors import SafetensorError, safe_open

    directory = Path(directory)
    config = preset_io.read_json(directory / CONFIG_FILE, what="PEFT adapter")
    if config.get("peft_type", "LORA") != "LORA":
        _refuse(directory, f"peft_type={config['peft_type']!r}", "only LoRA adapters load here")
    for key, why in _REFUSED.items():
        if config.get(key):
            _refuse(directory, f"{key}={config[key]!r}", why)
    if config.get("bias", "none") != "none":
        _refuse(directory, f"bias={config['bias']!r}", "PEFT trained the base model's biases, which our "
                "LoRA leaves frozen (only the LoRA matrices train)")
    if config.get("modules_to_save"):
        _refuse(directory, f"modules_to_save={config['modules_to_save']!r}",
                "those modules (e.g. a classification head) were trained in full and saved with the "
                "adapter; a backbone has no place for them")
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise LoRAError(f"{path} is missing: a PEFT adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE} "
                        "(pickled adapter_model.bin files are never loaded).")
    try:
        with safe_open(str(path), framework="numpy") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise LoRAError(f"{path} is not a valid safetensors file ({e}).") from e
    return config, tensors


def load(backbone, directory):
    """Loads a PEFT LoRA adapter into `backbone` (enabling LoRA with its settings when off)."""
    directory = Path(directory)
    config, tensors = read(directory)
    converter, modules = _modules(backbone)
    prefixes = sorted({p for _, p in converter.architectures.values()}, key=len, reverse=True)
    found = {}  # module -> {"A": ..., "B": ...}
    for key, value in tensors.items():
        match = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])\.weight", key)
        module = match and next((match[1][len(p):] for p in prefixes
                                 if match[1].startswith(p) and match[1][len(p):] in modules), None)
        if module is None:
            raise LoRAError(
                f"{directory}/{WEIGHTS_FILE} has tensor {key!r}, which is not a LoRA matrix of a "
                f"{type(backbone).__name__} projection (we load lora_A / lora_B of "
                f"{_target_modules(set(modules), set(modules))[:6]}...). Was it made for another model?")
        found.setdefault(module, {})[match[2]] = np.asarray(value, np.float32)
    if not found:
        raise LoRAError(f"{directory}/{WEIGHTS_FILE} holds no LoRA matrices.")
    per_layer = {}  # id(layer) -> (layer, a (in, r), b (r, out), scale)
    for module, pair in sorted(found.items()):
        if set(pair) != {"A", "B"}:
            raise LoRAError(f"{directory}/{WEIGHTS_FILE}: module {module!r} has lora_{set('AB') - set(pair)} missing.")
        entry, a, b = modules[module], pair["A"], pair["B"]
        rank = a.shape[0]
        outs = [layer.kernel.shape[1] for layer in entry.layers]
        if b.shape != (sum(outs), rank) or a.shape[1] != entry.layers[0].kernel.shape[0]:
            raise LoRAError(
                f"{directory}/{WEIGHTS_FILE}: {module!r} has lora_A {a.shape} and lora_B {b.shape}, "
                f"but this backbone's {module} is ({entry.layers[0].kernel.shape[0]} -> {sum(outs)}).")
        scale = _scale(config, module, rank)
        # A fused module (GPT-2's c_attn): B's row blocks, each with a copy of A.
        for layer, b_part in zip(entry.layers, np.split(b, np.cumsum(outs)[:-1], axis=0)):
            per_layer[id(layer)] = (layer, a.T, b_part.T, scale)
    rank = max(a.shape[1] for _, a, _, _ in per_layer.values())
    scale = Counter(s for *_, s in per_layer.values()).most_common(1)[0][0]
    targets = _our_targets(backbone, [layer for layer, *_ in per_layer.values()])
    covered = {id(layer) for _, layer in lora.target_layers(backbone, targets)} if targets else set()
    stray = sorted(m for m, e in modules.items() if m in found and any(id(l) not in covered for l in e.layers))
    if stray:
        raise LoRAError(
            f"{directory}/{WEIGHTS_FILE} adapts {stray[:3]}, which is no LoRA target of "
            f"{type(backbone).__name__} (targets: {sorted(backbone.lora_target_layers)}).")
    spec = lora.LoRASpec(rank, float(scale * rank), targets)
    if backbone.lora_spec is None:
        backbone.enable_lora(spec.rank, alpha=spec.alpha, targets=list(spec.targets))
    elif (backbone.lora_spec.rank, set(backbone.lora_spec.targets)) != (spec.rank, set(spec.targets)) or not (
            math.isclose(backbone.lora_spec.alpha, spec.alpha, rel_tol=1e-6)):
        raise LoRAError(
            f"{directory} is a LoRA adapter of rank={spec.rank}, alpha={spec.alpha:g}, targets="
            f"{list(spec.targets)}, but this backbone has rank={backbone.lora_spec.rank}, alpha="
            f"{backbone.lora_spec.alpha:g}, targets={list(backbone.lora_spec.targets)}. Load it into a "
            "backbone without LoRA (it enables the adapter's settings) or one that matches.")
    ours = backbone.lora_spec.alpha / backbone.lora_spec.rank
    for _, layer in lora.target_layers(backbone, backbone.lora_spec.targets):
        a_var, b_var = layer.lora_kernel_a, layer.lora_kernel_b
        a_new, b_new = np.zeros(a_var.shape, np.float32), np.zeros(b_var.shape, np.float32)
        if id(layer) in per_layer:  # else a target's layer PEFT did not adapt: B = 0, no change
            _, a, b, s = per_layer[id(layer)]
            r = a.shape[1]
            # Modules of lower rank are zero-padded; another scale folds into B (exact up to rounding).
            a_new[:, :r] = a
            b_new[:r] = b if s == ours else b * np.float32(s / ours)
        a_var.assign(a_new)
        b_var.assign(b_new)


def _scale(config, module, rank):
    def pattern(name, default):
        for key, value in (config.get(name) or {}).items():
            if re.match(rf"(.*\.)?({key})$", module):
                return value
        return default

    alpha = pattern("alpha_pattern", config.get("lora_alpha", 8))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _our_targets(backbone, layers):
    """Our target names covering `layers` (a target covers several layers: `ffn`)."""
    names = {layer.name for layer in layers}
    targets = [t for t, covered in backbone.lora_target_layers.items() if names & set(covered)]
    return tuple(targets)
