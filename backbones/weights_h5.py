"""Loading a preset's Keras 3 weights (`model.weights.h5`, or the sharded
`model.weights.json` + `.h5` shards) straight into a backbone's variables.

Why not `model.load_weights` after building with zeros: for a 110M-parameter
GPT-2 (440 MB) on 2 vCPU that path goes over the bytes four times, each into
fresh, page-faulting memory: zero-fill the new variables, read the file, a
numpy copy (TensorFlow copies every ndarray it converts), a copy into the
variable. Keras's generic walk adds ~0.3 s more (a throwaway instance of
every layer class to find the attributes to skip, every attribute of every
layer visited). Here:

- the large weights (those built with `normal_initializer`: kernels and
  embeddings, >99.9% of the bytes) are created from their stored arrays while
  the model is built. Each is read once into a page-aligned buffer, handed
  to `keras.ops.convert_to_tensor` through `__array__` so TensorFlow wraps it
  instead of copying it, and the new variable adopts that buffer: one pass
  over the bytes instead of four;
- the rest (biases, norm scales, ~0.1% of the bytes) are built as usual and
  assigned.

Measured (110M GPT-2 preset, interleaved fresh processes, 5 rounds, medians of
process CPU time, which the shared machine's load disturbs less than wall
time): cold from_preset 1.72 s (Keras load_weights) -> 1.64 s (this loader,
assigning every weight after a zero build) -> 1.49 s (large weights created
from their arrays, TensorFlow's copy kept) -> 1.29 s (its copy avoided).
See BENCHMARKS.md for wall-clock figures against keras-hub.

How a stored array finds its variable: the file addresses a variable as
`<h5 group>/vars/<index>`, and each `vars` group records its layer's name, so
the chain of names of a group's ancestors is the layer's path
(`transformer_layer_0/self_attention/query`), the same path Keras gives the
variables the layer builds, and `index` is the variable's position among that
layer's own variables (Keras's save order, which `model.weights` follows).
"""

import contextlib
from collections import defaultdict
from pathlib import Path

import keras

from backbones.errors import PresetFormatError
from backbones.preset_io import read_json
from backbones.variables import ArrayView, aligned_empty
from backbones.weight_reader import WeightReader

try:  # Keras's own guards against external links, virtual datasets and size bombs.
    from keras.src.saving.saving_lib import safe_get_h5_dataset
except ImportError:  # pragma: no cover - older or newer Keras layouts
    def safe_get_h5_dataset(group, name):
        dataset = group[name]
        if dataset.external or dataset.is_virtual:
            raise PresetFormatError(f"{group.file.filename}: external or virtual dataset {dataset.name} refused.")
        return dataset

try:  # The path of the layer whose variable is being created (backend-independent).
    from keras.src.backend.common.name_scope import current_path
except ImportError:  # pragma: no cover - then every weight is built with zeros and assigned
    current_path = None


def weight_files(weights_path):
    """The h5 files of a Keras 3 weights path: `model.weights.h5` itself, or
    the shards listed in a sharded `model.weights.json`; a listed shard that
    is missing is a `PresetFormatError` naming it."""
    path = Path(weights_path)
    if path.suffix != ".json":
        return [path]
    weight_map = read_json(path).get("weight_map", {})
    names = sorted({n for v in weight_map.values() for n in ([v] if isinstance(v, str) else v)})
    for name in names:
        if not (path.parent / name).is_file():
            raise PresetFormatError(
                f"{path.parent / name} is listed in {path.name} but missing: the preset is "
                "incomplete. Download or save it again."
            )
    return [path.parent / n for n in names]


def read_array(dataset):
    """A stored variable as a NumPy array: Keras's h5 safety checks, one read
    into a page-aligned buffer, bfloat16 (stored by Keras as 2-byte opaque) restored."""
    import h5py
    import ml_dtypes

    # Checked from its own group: from the file root, Keras's check walks
    # every group again (~1 ms per weight).
    dataset = safe_get_h5_dataset(dataset.parent, dataset.name.rpartition("/")[2])
    value = aligned_empty(dataset.shape, dataset.dtype)
    if value.size:
        dataset.id.read(h5py.h5s.ALL, h5py.h5s.ALL, value)
    if dataset.attrs.get("dtype") == "bfloat16":
        value = value.view(ml_dtypes.bfloat16)
    return value


class StoredWeights(WeightReader, contextlib.AbstractContextManager):
    """The weights of a preset file, a `WeightReader` keyed by `layer path/index`.

    Use it as a context (it keeps the h5 files open), hand it to
    `backbones.initializers.weights_to_be_loaded(stored)` while building (the
    initializers then ask `initial_value`), then call `load_into(model)`.

    Args:
        weights_path: str or Path. `model.weights.h5` or `model.weights.json`.
    """

    def __init__(self, weights_path):
        import h5py

        self.path = Path(weights_path)
        super().__init__(self.path)
        files = weight_files(self.path)
        self._files = {}
        layer_names, found = {}, {}
        try:
            for file in files:
                h5 = self._files[file] = h5py.File(file, "r")

                def visit(name, obj, file=file):
                    parent, _, leaf = name.rpartition("/")
                    if isinstance(obj, h5py.Group) and leaf == "vars" and "name" in obj.attrs:
                        layer_names[parent] = str(obj.attrs["name"])
                    elif isinstance(obj, h5py.Dataset) and parent.endswith("vars"):
                        found[name] = (file, obj)

                h5.visititems(visit)
        except BaseException:
            self.close()
            raise
        self.datasets = {}  # key -> (file, dataset name, shape)
        self._datasets = {}  # key -> h5py.Dataset
        self._by_layer = defaultdict(dict)  # layer path -> {shape: [keys]}
        for name, (file, dataset) in found.items():
            shape = tuple(dataset.shape)
            group, index = name.rsplit("/vars/", 1)
            parts = group.split("/")
            # Ancestors with a `vars` group are layers; the root one is the model.
            layers = [layer_names[p] for p in ("/".join(parts[:i + 1]) for i in range(len(parts)))
                      if p in layer_names]
            key = "/".join(layers + [index])
            self.datasets[key] = (file, name, shape)
            self._datasets[key] = dataset
            self._by_layer["/".join(layers)].setdefault(shape, []).append(key)
        self._requests = defaultdict(int)

    def close(self):
        """Closes the files; afterwards `initial_value` serves nothing (the
        layers' initializers keep a reference to this object)."""
        for h5 in self._files.values():
            h5.close()
        self._files, self._datasets, self._by_layer = {}, {}, {}

    def __exit__(self, *exc):
        self.close()

    def keys(self):
        return set(self.datasets)

    def __contains__(self, key):
        return key in self.datasets

    def _read(self, key):
        return read_array(self._datasets[key])

    def initial_value(self, shape, dtype):
        """The stored value of the variable being created, or None.

        Called by an initializer inside Keras's variable creation, where the
        current name scope is the layer's path. Served only when the layer
        stores exactly one array of that shape; a key asked for twice (a
        variable built and dropped) is assigned again by `load_into`.
        """
        if current_path is None or not self._files:
            return None
        keys = self._by_layer.get(current_path(), {}).get(tuple(shape), [])
        if len(keys) != 1:
            return None
        self._requests[keys[0]] += 1
        value = self.get(keys[0])
        if keras.backend.backend() == "tensorflow" and keras.backend.standardize_dtype(value.dtype) == dtype:
            # TensorFlow copies an ndarray before wrapping it (and copies again
            # when it is not 64-byte aligned); any other object exposing
            # `__array__` it wraps in place. The array is ours and dropped
            # here, so the variable adopts the buffer the file was read into:
            # one pass over the bytes (the read) instead of four.
            value = ArrayView(value)
        return keras.ops.convert_to_tensor(value, dtype=dtype)

    def load_into(self, model):
        """Checks that the file and the model's weights match one to one, then
        assigns every weight not already created from its stored array.

        Raises `PresetFormatError` naming each missing, unexpected or
        mis-shaped weight (variable path and file) before assigning anything.
        """
        variables, counts = {}, defaultdict(int)
        for variable in model.weights:
            layer = variable.path.rpartition("/")[0]
            variables["/".join(filter(None, (layer, str(counts[layer]))))] = variable
            counts[layer] += 1
        problems = [f"{v.path} (shape {tuple(v.shape)}) is not in the file"
                    for key, v in variables.items() if key not in self.datasets]
        problems += [f"{self.datasets[k][1]} in {self.datasets[k][0].name} matches no weight of the model"
                     for k in self.datasets if k not in variables]
        problems += [
            f"{v.path} has shape {tuple(v.shape)} but {self.datasets[k][1]} in "
            f"{self.datasets[k][0].name} has shape {self.datasets[k][2]}"
            for k, v in variables.items() if k in self.datasets and self.datasets[k][2] != tuple(v.shape)
        ]
        if problems:
            raise PresetFormatError(
                f"{self.path} does not match the {type(model).__name__} built from its config.json:\n  "
                + "\n  ".join(problems) + "\nRe-save the preset (save_to_preset), or fix its config.json."
            )
        for key, variable in variables.items():
            if self._requests[key] != 1:
                self.put(variable, key)  # also creates a variable built unallocated
