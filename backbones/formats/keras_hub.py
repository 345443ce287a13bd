"""keras-hub presets (`registered_name: "keras_hub>..."`), converted on load.

Kaggle handles `kaggle://keras/<model>/keras/<variant>` hold keras-hub
presets: the same directory layout as ours, but weights laid out for
keras-hub's classes and a `tokenizer.json` that is a Keras serialized config
(its vocabulary sits in `assets/tokenizer/`). Each family registers a
converter by keras-hub class name (`registry.register_keras_hub_converter`),
like the transformers converters by `model_type`.

Layout facts of Keras 3's `model.weights.h5`, read from saved files: one
dataset per variable at `layers/<layer>/<attribute>/.../vars/<i>`, where a
top-level layer is named by its snake-cased class with a counter in model
order (`transformer_decoder`, `transformer_decoder_1`), a sublayer by the
attribute holding it (`_self_attention_layer/query_dense`), and `<i>` is the
variable's creation order (kernel 0, bias 1; gamma 0, beta 1). bfloat16
variables carry `attrs["dtype"] = "bfloat16"`. Sharded weights are
`model.weights.json` (`weight_map`: group -> shard file(s)) plus the shards,
each laid out the same way. Nothing is unpickled and keras-hub is never imported.
"""

import contextlib
from pathlib import Path

import numpy as np

from backbones import formats, preset_io, registry
from backbones.errors import ConversionError, PresetFormatError
from backbones.formats.base import PresetReader, built_to_be_filled
from backbones.weight_reader import WeightReader
from backbones.weights_h5 import read_array, weight_files


def converter_for(class_name, directory):
    """The registered converter of keras-hub class `class_name`, or a clear error."""
    converter = registry.KERAS_HUB_CONVERTERS.get(class_name)
    if converter is None:
        raise PresetFormatError(
            f"{directory}/config.json is a keras-hub preset of class {class_name!r}, which we "
            f"cannot convert. Supported keras-hub classes: {sorted(registry.KERAS_HUB_CONVERTERS)}. "
            "Load the model from its Hugging Face checkpoint (hf://owner/repo) if it has one."
        )
    return converter


def _base_kwargs(config):
    """Name, trainable and dtype policy name from a keras-hub backbone config."""
    kwargs = {k: config[k] for k in ("name", "trainable") if k in config}
    dtype = config.get("dtype")
    if isinstance(dtype, dict):  # a serialized DTypePolicy
        dtype = dtype.get("config", {}).get("name")
    if dtype:
        kwargs["dtype"] = dtype
    return kwargs


@registry.register_format(formats.KERAS_HUB)
class KerasHubPreset(PresetReader):
    """A keras-hub preset directory (see `backbones.formats.base.PresetReader`).

    The converter registered for `config["class_name"]` maps the config to
    constructor arguments and every stored variable to one of ours; variables
    left over are an error. A converter may also read architecture facts from
    the weights (`config_from_weights(reader) -> kwargs`, e.g. whether Llama
    is tied), so the weights are opened, when present, even for
    `load_weights=False`.
    """

    name = formats.KERAS_HUB

    def __init__(self, directory, config):
        super().__init__(Path(directory), config)
        self.converter = converter_for(config.get("class_name"), directory)
        self._weights = None

    def weights(self):
        """The preset's `KerasHubWeights`, opened once (closed with the reader)."""
        if self._weights is None:
            self._weights = KerasHubWeights(self.directory)
        return self._weights

    def close(self):
        if self._weights is not None:
            self._weights.close()
            self._weights = None

    def backbone_class(self):
        return registry.BACKBONE_CLASSES[self.converter.backbone_class]

    def backbone_kwargs(self, load_weights=True):
        hub_config = self.config.get("config", {})
        kwargs = {**_base_kwargs(hub_config), **self.converter.convert_config(hub_config)}
        from_weights = getattr(self.converter, "config_from_weights", None)
        if from_weights and (load_weights or preset_io.weights_files(self.directory)):
            kwargs.update(from_weights(self.weights()))
        return kwargs

    def build(self, target, kwargs):
        reader = self.weights()
        # Built unallocated; each variable is then created from its stored array.
        with built_to_be_filled(lambda: target(**kwargs)) as backbone:
            self.converter.convert_weights(backbone, reader, self.config.get("config", {}))
        reader.check_all_used()
        return backbone

    def tokenizer(self):
        """The converted tokenizer, or None when the preset has no tokenizer.json
        or the family's converter has no `convert_tokenizer` yet (the backbone
        then loads without a tokenizer)."""
        if not (self.directory / "tokenizer.json").exists() or not hasattr(self.converter, "convert_tokenizer"):
            return None
        return self.converter.convert_tokenizer(self.directory)


def tokenizer_config(directory):
    """`(class_name, config)` of a keras-hub preset's `tokenizer.json`.

    Example:
    >>> import tempfile, json
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "tokenizer.json").write_text(json.dumps({"class_name": "GPT2Tokenizer", "config": {"add_prefix_space": False}}))
    >>> tokenizer_config(d)
    ('GPT2Tokenizer', {'add_prefix_space': False})
    """
    config = preset_io.read_json(Path(directory) / "tokenizer.json", what="keras-hub preset")
    return config.get("class_name"), config.get("config", {})


def tokenizer_asset(directory, name):
    """Path of a tokenizer asset (`assets/tokenizer/<name>`), or a clear error if missing."""
    path = Path(directory) / "assets" / "tokenizer" / name
    if not path.is_file():
        raise PresetFormatError(
            f"{path} is missing: the keras-hub preset's tokenizer.json needs it. "
            "Download or save the preset again (with its assets/ folder)."
        )
    return path


def var(layer, index=0):
    """The key of variable `index` of `layer` (a path below `layers/`) in a
    keras-hub weights file.

    Example:
    >>> var("transformer_decoder_1/_self_attention_layer/query_dense", 0)
    'layers/transformer_decoder_1/_self_attention_layer/query_dense/vars/0'
    """
    return f"layers/{layer}/vars/{index}"


class KerasHubWeights(WeightReader, contextlib.AbstractContextManager):
    """The variables of a keras-hub preset's `model.weights.h5` (or shards),
    a `WeightReader` keyed by `var(layer, index)`; `put_layer` and
    `put_attention` put whole layers laid out as keras-hub lays them out.

    Example:
    >>> import tempfile, h5py, numpy as np
    >>> d = Path(tempfile.mkdtemp())
    >>> with h5py.File(d / "model.weights.h5", "w") as f:
    ...     f["layers/dense/vars/0"] = np.ones((2, 3), "float32")
    >>> with KerasHubWeights(d) as weights:
    ...     weights.get(var("dense", 0)).shape
    (2, 3)
    """

    item, container = "variable", "keras-hub weights"

    def __init__(self, directory):
        import h5py

        self.directory = Path(directory)
        super().__init__(self.directory)
        self._files, self._datasets = [], {}
        for shard_path in weight_files(preset_io.weights_path(self.directory)):
            f = h5py.File(shard_path, "r")
            self._files.append(f)
            f.visititems(lambda name, obj, shard=shard_path.name: self._add(name, obj, shard, h5py))

    def _add(self, name, obj, shard, h5py):
        if isinstance(obj, h5py.Dataset):
            self._datasets.setdefault(name, (shard, obj))
        # None: h5py's visititems stops at the first value returned.

    def close(self):
        for f in self._files:
            f.close()
        self._files = []

    def __exit__(self, *exc):
        self.close()

    def keys(self):
        return set(self._datasets)

    def __contains__(self, key):
        return key in self._datasets

    def _read(self, key):
        return read_array(self._datasets[key][1])

    def put_layer(self, layer_obj, layer, merge_heads=False):
        """Puts every variable of a Keras layer, in creation order (kernel/bias, gamma/beta).

        `merge_heads` flattens keras-hub's per-head attention axes, e.g. a query
        kernel `(hidden, heads, head_dim)` into our Dense `(hidden, heads * head_dim)`.
        """
        for i, variable in enumerate(layer_obj.weights):
            shape = tuple(variable.shape)
            reshape = (lambda v, shape=shape: v.reshape(shape) if v.size == int(np.prod(shape)) else v)
            self.put(variable, var(layer, i), reshape if merge_heads else None)

    def put_attention(self, attention, path, prefix=""):
        """Puts query, key, value and output projections of our `attention`
        from keras-hub's per-head `<path>/<prefix>{query,key,value,output}_dense`."""
        for ours, theirs in ((attention.query, "query"), (attention.key, "key"),
                             (attention.value, "value"), (attention.attention_output, "output")):
            self.put_layer(ours, f"{path}/{prefix}{theirs}_dense", merge_heads=True)


def layer_name(base, index):
    """Keras's saved name of the `index`-th top-level layer of class `base`.

    Example:
    >>> layer_name("transformer_decoder", 0), layer_name("transformer_decoder", 2)
    ('transformer_decoder', 'transformer_decoder_2')
    """
    return base if index == 0 else f"{base}_{index}"
