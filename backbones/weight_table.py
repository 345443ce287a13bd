"""One table per family from transformers tensor names to our weights, read
both ways: loading a checkpoint (`load`) and exporting one (`export`), and
the PEFT adapter reader/writer finds its modules in it.

An entry is one transformers tensor: its name (without the `model.` /
`transformer.` / `bert.` prefix of a task checkpoint), the weights it holds
(`(layer, attribute)` pairs: read at export time, so a LoRA layer's `kernel`
gives the merged `W + s A B`) and a `Layout` with the transform each way.
Family tables live in each `backbones/<family>/convert_hf.py`.
"""

import dataclasses

import numpy as np

from backbones.hf_checkpoint import assign


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one transformers tensor maps to our arrays, and back.

    `to_ours(tensor)` gives one array per weight of the entry (views where
    possible: `variables.fill` adopts or copies them), `to_hf(arrays)` the
    tensor. `kind` says what the tensor is to a PEFT adapter: `"linear"`
    (torch Linear, `(out, in)`), `"conv1d"` (GPT-2's Conv1D, `(in, out)`),
    or None (not a projection LoRA can adapt).
    """

    to_ours: object
    to_hf: object
    kind: str = None


SAME = Layout(lambda t: (t,), lambda a: a[0])
LINEAR = Layout(lambda t: (t.T,), lambda a: a[0].T, "linear")  # torch (out, in) <-> Keras kernel (in, out)
CONV1D = Layout(SAME.to_ours, SAME.to_hf, "conv1d")  # GPT-2's Conv1D: (in, out), like our kernels


def fused(n, kind="conv1d"):
    """`n` weights concatenated along the tensor's last axis (GPT-2's `c_attn`:
    query, key and value kernels or biases side by side)."""
    return Layout(lambda t: tuple(np.split(t, n, axis=-1)), lambda a: np.concatenate(a, axis=-1), kind)


FUSED3_KERNEL = fused(3)
FUSED3_BIAS = fused(3, kind=None)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One transformers tensor: `name`, our `(layer, attribute)` weights, their `layout`.

    `aliases`: older names read when `name` is absent (BERT's LayerNorm `gamma`);
    `optional`: absent from some checkpoints (BERT's pooler), the family decides.
    `prefixed`: False for tensors outside the base model (`lm_head.weight`).
    """

    name: str
    refs: tuple
    layout: Layout = SAME
    aliases: tuple = ()
    optional: bool = False
    prefixed: bool = True

    @property
    def layers(self):
        return tuple(layer for layer, _ in self.refs)

    def full_name(self, prefix):
        return prefix + self.name if self.prefixed else self.name


def dense(name, layer, transpose=True):
    """Entries of a Dense layer: `<name>.weight` (transposed torch Linear, or
    a Conv1D kept as is) and `<name>.bias` when the layer has one."""
    entries = [Entry(f"{name}.weight", ((layer, "kernel"),), LINEAR if transpose else CONV1D)]
    if layer.use_bias:
        entries.append(Entry(f"{name}.bias", ((layer, "bias"),)))
    return entries


def norm(name, layer, scale="gamma", shift="beta", aliases=False):
    """Entries of a LayerNorm (`weight` / `bias`) or, with `shift=None`, an RMS norm."""
    old = lambda suffix: (f"{name}.{suffix}",) if aliases else ()  # noqa: E731
    entries = [Entry(f"{name}.weight", ((layer, scale),), aliases=old("gamma"))]
    if shift:
        entries.append(Entry(f"{name}.bias", ((layer, shift),), aliases=old("beta")))
    return entries


def load(table, reader, prefix):
    """Fills every weight of `table` from `reader` (an `HFCheckpoint`).

    Each tensor is read into its own buffer and handed to `assign` as views
    (a transpose, a split), which `variables.fill` adopts or copies once:
    one tensor in flight at a time, as before the table existed.
    """
    for entry in table:
        name = entry.full_name(prefix)
        if name not in reader:
            found = [prefix + a for a in entry.aliases if prefix + a in reader]
            if found:
                name = found[0]
            elif entry.optional:
                continue
        value = reader.get(name)  # a missing tensor raises ConversionError naming it
        for (layer, attr), array in zip(entry.refs, entry.layout.to_ours(value)):
            assign(getattr(layer, attr), array, name)
        del value


def export(entry):
    """The tensor of `entry` as a NumPy array, from the current (merged) weights."""
    import keras

    dtype = entry.refs[0][0].variable_dtype
    arrays = [keras.ops.convert_to_numpy(keras.ops.cast(getattr(layer, attr), dtype)) for layer, attr in entry.refs]
    return np.ascontiguousarray(entry.layout.to_hf(arrays))


def shapes(entry):
    """(shape, dtype name) of `entry`'s tensor, without computing it."""
    import keras

    # Zero-stride views: the probe allocates nothing but a fused concatenation.
    probe = entry.layout.to_hf([np.broadcast_to(np.zeros((), np.uint8), tuple(getattr(layer, attr).shape))
                                for layer, attr in entry.refs])
    return tuple(probe.shape), keras.backend.standardize_dtype(entry.refs[0][0].variable_dtype)
