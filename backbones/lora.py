"""LoRA on a backbone: enabling it by target name, and the adapter file.

Keras's own `enable_lora` does the math on each targeted Dense layer (scale
alpha / rank; A `(in, r)`, B `(r, out)`, as PEFT's A and B transposed).
The adapter file is safetensors (no pickle): one tensor per matrix, named
`<layer path>/lora_a` and `<layer path>/lora_b`, and string metadata with
rank, alpha, targets, the backbone class and an architecture fingerprint.
"""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from backbones.errors import LoRAError

FORMAT = "backbone_lab.lora/1"


@dataclasses.dataclass(frozen=True)
class LoRASpec:
    rank: int
    alpha: float
    targets: tuple


def make_spec(backbone, rank, alpha=None, targets=None):
    """Validates a LoRA request against a backbone and returns its spec."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise LoRAError(f"LoRA rank must be a positive integer, got rank={rank!r}.")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0):
        raise LoRAError(f"LoRA alpha must be a positive number, got alpha={alpha!r}.")
    if isinstance(targets, str):
        targets = [targets]
    targets = tuple(targets or backbone.default_lora_targets)
    unknown = [t for t in targets if t not in backbone.lora_target_layers]
    if unknown:
        raise LoRAError(
            f"Unknown LoRA target(s) {unknown} for {type(backbone).__name__}; "
            f"choose from {sorted(backbone.lora_target_layers)}."
        )
    return LoRASpec(rank, float(alpha if alpha is not None else rank), targets)


def layer_paths(layer, prefix=""):
    """Yields (path, layer) for every sublayer, paths made of layer names."""
    for child in layer._flatten_layers(include_self=False, recursive=False):
        path = f"{prefix}{child.name}"
        yield path, child
        yield from layer_paths(child, path + "/")


def target_layers(backbone, targets):
    """(path, layer) of every layer that LoRA on `targets` applies to."""
    names = {n for t in targets for n in backbone.lora_target_layers[t]}
    found = [(p, l) for p, l in layer_paths(backbone) if l.name in names and hasattr(l, "enable_lora")]
    if not found:
        raise LoRAError(
            f"{type(backbone).__name__} has no layer named {sorted(names)}: nothing to "
            "apply LoRA to (does this backbone have attention layers?)."
        )
    return found


def enable(backbone, spec):
    """Freezes every weight, then adds trainable LoRA matrices to the targets."""
    layers = target_layers(backbone, spec.targets)
    backbone.trainable = True
    for layer in backbone._flatten_layers(include_self=False):
        layer.trainable = False
    for _, layer in layers:
        layer.trainable = True  # re-enables its kernel and bias; enable_lora freezes the kernel
        layer.enable_lora(spec.rank, lora_alpha=spec.alpha)
        if getattr(layer, "bias", None) is not None:
            layer.bias.trainable = False  # Keras leaves biases trainable; PEFT does not train them


# Weights that int8 quantization adds (one scale per output channel): an adapter
# trained over a quantized base loads into the unquantized one and back.
_NOT_ARCHITECTURE = ("lora_kernel", "kernel_scale", "embeddings_scale")


def fingerprint(backbone):
    """A hash of the backbone class and the shapes of its (non-LoRA, non-quantization) weights."""
    weights = [w for w in backbone.weights if not w.name.startswith(_NOT_ARCHITECTURE)]
    # Quantizing a layer re-creates its kernel after its bias: each layer's kernel
    # goes first again, so the order (and the hash) is that of the float layer.
    first = {}
    for i, w in enumerate(weights):
        first.setdefault(w.path.rpartition("/")[0], i)
    order = sorted(range(len(weights)), key=lambda i: (
        first[weights[i].path.rpartition("/")[0]], weights[i].name not in ("kernel", "embeddings"), i))
    shapes = [list(weights[i].shape) for i in order]
    payload = json.dumps([type(backbone).__name__, shapes])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def save(backbone, filepath):
    """Writes the adapter file atomically (temp file, then rename)."""
    spec = backbone.lora_spec
    if spec is None:
        raise LoRAError("LoRA is not enabled on this backbone: call enable_lora(rank) first.")
    tensors = {}
    for path, layer in target_layers(backbone, spec.targets):
        tensors[f"{path}/lora_a"] = np.asarray(layer.lora_kernel_a.numpy(), np.float32)
        tensors[f"{path}/lora_b"] = np.asarray(layer.lora_kernel_b.numpy(), np.float32)
    metadata = {
        "format": FORMAT,
        "rank": str(spec.rank),
        "alpha": repr(spec.alpha),
        "targets": json.dumps(list(spec.targets)),
        "backbone_class": type(backbone).__name__,
        "fingerprint": fingerprint(backbone),
    }
    from safetensors.numpy import save_file

    filepath = Path(filepath)
    filepath.parent.mkdir(parents=True, exist_ok=True)
    tmp = filepath.with_name(f".{filepath.name}.partial-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, filepath)
    finally:
        tmp.unlink(missing_ok=True)


def load(backbone, filepath):
    """Restores an adapter file, enabling LoRA with its settings if needed."""
    from safetensors import SafetensorError, safe_open

    filepath = Path(filepath)
    if not filepath.is_file():
        raise LoRAError(f"LoRA file {filepath} does not exist.")
    try:
        with safe_open(str(filepath), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise LoRAError(f"{filepath} is not a LoRA file saved by save_lora_weights ({e}).") from e
    if metadata.get("format") != FORMAT:
        raise LoRAError(f"{filepath} is not a LoRA file saved by save_lora_weights (no {FORMAT} tag).")
    cls_name = type(backbone).__name__
    if metadata["backbone_class"] != cls_name:
        raise LoRAError(
            f"{filepath} holds LoRA weights for a {metadata['backbone_class']}, not a {cls_name}."
        )
    if metadata["fingerprint"] != fingerprint(backbone):
        raise LoRAError(
            f"{filepath} was saved from a {cls_name} of another architecture (layer "
            "count or sizes differ): load it into the backbone preset it was trained on."
        )
    stored = LoRASpec(int(metadata["rank"]), float(metadata["alpha"]), tuple(json.loads(metadata["targets"])))
    if backbone.lora_spec is None:
        backbone.enable_lora(stored.rank, alpha=stored.alpha, targets=list(stored.targets))
    elif backbone.lora_spec != stored:
        raise LoRAError(
            f"{filepath} has LoRA rank={stored.rank}, alpha={stored.alpha}, targets="
            f"{list(stored.targets)}, but this backbone has rank={backbone.lora_spec.rank}, "
            f"alpha={backbone.lora_spec.alpha}, targets={list(backbone.lora_spec.targets)}. "
            "Load it into a backbone without LoRA (it enables the stored settings) or one that matches."
        )
    layers = dict(target_layers(backbone, stored.targets))
    expected = {f"{p}/lora_{m}" for p in layers for m in "ab"}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise LoRAError(f"{filepath} does not fit this backbone: missing {missing[:3]}, unexpected {extra[:3]}.")
    for path, layer in layers.items():
        for m, var in (("a", layer.lora_kernel_a), ("b", layer.lora_kernel_b)):
            value = tensors[f"{path}/lora_{m}"]
            if tuple(value.shape) != tuple(var.shape):
                raise LoRAError(f"{filepath}: {path}/lora_{m} has shape {value.shape}, expected {tuple(var.shape)}.")
            var.assign(value)
