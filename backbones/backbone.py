"""`Backbone`: the base class of every backbone, and its cross-family machinery."""

import concurrent.futures
import contextlib
import contextvars
import inspect

import keras

import backbones
from backbones import lora, preset_io, quantize, registry, remat, weights_h5
from backbones.errors import (PresetClassMismatchError, PresetFormatError, QuantizationError,
                              UnknownArgumentError)
from backbones.handles import resolve_preset
from backbones.keras_hub_preset import load_keras_hub_preset
from backbones.tokenizer import Tokenizer
from backbones.variables import deferred_variables


_WEIGHTS_TO_BE_LOADED = contextvars.ContextVar("weights_to_be_loaded", default=False)
_QUANTIZE_ON_LOAD = contextvars.ContextVar("quantize_on_load", default=None)


@contextlib.contextmanager
def weights_to_be_loaded(stored=None):
    """Within it, backbones are built only to have every weight loaded next
    (`from_preset`, checkpoint conversion): `normal_initializer` gives the
    stored array of the weight when `stored` (a `weights_h5.StoredWeights`)
    holds it, else zeros."""
    token = _WEIGHTS_TO_BE_LOADED.set(stored or True)
    try:
        yield
    finally:
        _WEIGHTS_TO_BE_LOADED.reset(token)


@contextlib.contextmanager
def built_to_be_filled(build):
    """`build()` a backbone unallocated, for the block to fill each of its
    variables from a file (`variables.fill`); the rest are initialised on
    leaving it. Every loader of `from_preset` builds through here: when
    `from_preset` was given `quantize=`, each layer is quantized as soon as
    its kernel is filled (`quantize.quantizing_as_filled`).

    Example:
    >>> import numpy as np
    >>> from backbones import variables
    >>> from backbones.gpt2 import GPT2Backbone
    >>> build = lambda: GPT2Backbone(vocabulary_size=8, num_layers=1, num_heads=1, hidden_dim=4,
    ...                              intermediate_dim=8, max_sequence_length=4)
    >>> with built_to_be_filled(build) as model:
    ...     variables.fill(model.token_embedding.embeddings, np.ones((8, 4), "float32"))
    >>> float(model.token_embedding.embeddings.numpy().sum())
    32.0
    """
    with weights_to_be_loaded(), deferred_variables() as finish:
        backbone = build()
    with quantize.quantizing_as_filled(backbone, _QUANTIZE_ON_LOAD.get()):
        yield backbone
    finish()


@keras.saving.register_keras_serializable(package="backbone_lab")
class _StoredOrZeros(keras.initializers.Initializer):
    """The stored value of the weight being built, or zeros (see `weights_to_be_loaded`)."""

    def __init__(self, stored):
        self.stored = stored

    def __call__(self, shape, dtype=None):
        value = self.stored.initial_value(shape, dtype)
        return keras.initializers.Zeros()(shape, dtype) if value is None else value

    # A loaded layer keeps this initializer: if its config is ever serialized,
    # it round-trips as plain zeros (the stored arrays are long gone).
    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return keras.initializers.Zeros()


def normal_initializer(stddev=0.02):
    """`RandomNormal(stddev)`, or inside `weights_to_be_loaded()` the stored
    value (else zeros).

    Drawing random weights that the loaded ones overwrite at once is the
    largest cost of building a preset: ~1 s of a 110M-parameter GPT-2's
    from_preset on 2 vCPU, where zeros cost a memset; creating the variable
    from its stored array saves the memset and a copy into it too.

    Example:
    >>> type(normal_initializer()).__name__
    'RandomNormal'
    >>> with weights_to_be_loaded():
    ...     type(normal_initializer()).__name__
    'Zeros'
    """
    stored = _WEIGHTS_TO_BE_LOADED.get()
    if stored is True:
        return keras.initializers.Zeros()
    if stored:
        return _StoredOrZeros(stored)
    return keras.initializers.RandomNormal(stddev=stddev)


class classproperty:
    """A read-only property on the class (for `Backbone.presets`)."""

    def __init__(self, fget):
        self.fget = fget

    def __get__(self, instance, owner):
        return self.fget(owner)


class Backbone(keras.Model):
    """Base class of all backbones: a functional model from tokens to hidden states.

    A family subclasses it, builds its layers and functional graph in
    `__init__`, passes `inputs=`/`outputs=` here, sets `self.token_embedding`,
    and echoes its flat constructor arguments in `get_config()`. Every
    subclass is registered by class name: only registered classes can be
    built from a preset, and nothing is ever unpickled.

    Family hooks (class attributes):
        lora_target_layers: dict. LoRA target name -> names of the Dense
            layers it covers, e.g. `{"query": ("query",), "ffn": (...)}`.
        default_lora_targets: tuple. Targets of `enable_lora` by default.
        is_encoder: bool. True for bidirectional encoders (BERT).

    Family attributes set in `__init__`:
        transformer_layers: list of the encoder/decoder blocks, in order;
            `enable_remat` rematerialises each of them. A block is called
            as `block(hidden_states, **kwargs)`: hidden states first.

    Args:
        dtype: str or keras.DTypePolicy. Dtype policy of every sublayer,
            e.g. `"float32"`, `"bfloat16"`, `"mixed_bfloat16"`.
        trainable, name: as in Keras.

    Example:
    >>> import backbones, numpy as np
    >>> model = backbones.Backbone.from_preset("gpt2_tiny_en")
    >>> x = {"token_ids": np.array([[5, 6, 7]]), "padding_mask": np.array([[1, 1, 1]])}
    >>> model(x).shape[:2]
    TensorShape([1, 3])
    """

    lora_target_layers = {}
    default_lora_targets = ("query", "value")
    is_encoder = False
    transformer_layers = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        registry.BACKBONE_CLASSES[cls.__name__] = cls
        keras.saving.register_keras_serializable(package="backbone_lab")(cls)

    def __init__(self, *args, dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dtype_policy = keras.dtype_policies.get(dtype or keras.config.dtype_policy())
        self.tokenizer = None  # set by from_preset when the preset has one
        self._lora_spec = None

    # -- config -----------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "dtype": self.dtype_policy.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- presets ----------------------------------------------------------
    @classproperty
    def presets(cls):
        """Built-in presets of this class and its subclasses: name -> metadata."""
        backbones.load()
        return {
            name: meta for name, meta in registry.BACKBONE_PRESETS.items()
            if issubclass(registry.BACKBONE_CLASSES[meta["class_name"]], cls)
        }

    @classmethod
    def from_preset(cls, preset, load_weights=True, quantize=None, **kwargs):
        """Builds a backbone from a preset.

        Args:
            preset: str. A built-in name (`"gpt2_base_en"`), `"hf://owner/repo[@rev]"`,
                `"kaggle://owner/model/framework/variant[/version]"` or a local
                directory: ours, a transformers checkpoint or a keras-hub preset
                (e.g. `kaggle://keras/gpt2/keras/gpt2_base_en`; both converted on
                load for the families whose converters are registered).
            load_weights: bool. False gives the preset's architecture with
                randomly initialised weights.
            quantize: str. `"int8"`: a weight-only int8 frozen base, each
                layer quantized as soon as its weights are read (see
                `quantize()`): loading a bfloat16 checkpoint peaks at about
                the int8 model plus one float layer, not the float model.
            **kwargs: constructor overrides, e.g. `dtype="bfloat16"`,
                `trainable=False`. A user's `dtype` always wins.

        Example:
        >>> import backbones
        >>> m = backbones.Backbone.from_preset("gpt2_tiny_en", dtype="bfloat16", trainable=False)
        >>> type(m).__name__, m.dtype_policy.name, m.trainable
        ('GPT2Backbone', 'bfloat16', False)
        >>> backbones.Backbone.from_preset("gpt2_tiny_en", quantize="int8").quantized
        True
        """
        backbones.load()  # every family's class and converters
        if quantize is not None:
            from backbones.quantize import check_mode

            check_mode(quantize)
        token = _QUANTIZE_ON_LOAD.set(quantize if load_weights else None)
        try:
            backbone = cls._load_preset(preset, load_weights, kwargs)
        finally:
            _QUANTIZE_ON_LOAD.reset(token)
        if quantize is not None:  # layers not filled from the file (random or initialised weights)
            backbone.quantize(quantize)
        return backbone

    @classmethod
    def _load_preset(cls, preset, load_weights, kwargs):
        directory = resolve_preset(preset)
        config = preset_io.read_json(directory / preset_io.CONFIG_FILE)
        fmt = preset_io.config_format(config)
        if fmt == "transformers":
            from backbones.convert import load_hf_checkpoint

            return load_hf_checkpoint(cls, directory, config, load_weights, kwargs, preset)
        if fmt == "keras_hub":
            return load_keras_hub_preset(cls, directory, config, load_weights, kwargs, preset)
        target = _registered_class(config, directory)
        check_subclass(cls, target, preset, kwargs)
        if not load_weights:
            backbone = target.from_config({**config.get("config", {}), **kwargs})
        else:
            # The sha256 of the weights runs on another thread (hashlib and file
            # reads release the GIL) while the model is built and loaded; a
            # mismatch still raises before anything is returned.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                checked = pool.submit(preset_io.verify_checksums, directory)
                try:
                    # The large weights are created from their stored arrays
                    # as the model is built, the rest assigned after (weights_h5).
                    init = {**config.get("config", {}), **kwargs}
                    with weights_h5.StoredWeights(preset_io.weights_path(directory)) as stored:
                        if _QUANTIZE_ON_LOAD.get():  # filled one by one, each layer quantized when filled
                            with built_to_be_filled(lambda: target.from_config(init)) as backbone:
                                stored.load_into(backbone)
                        else:
                            with weights_to_be_loaded(stored):
                                backbone = target.from_config(init)
                            stored.load_into(backbone)
                except Exception:
                    checked.result()  # a corrupted file reports its checksum, not the h5 error
                    raise
                checked.result()
        backbone.tokenizer = Tokenizer.from_directory(directory)
        return backbone

    def save_to_preset(self, preset_dir, max_shard_size=5.0, metadata=None):
        """Saves a preset directory that `from_preset` loads to identical outputs.

        With LoRA enabled, the weights saved are the merged ones (W + scale * A @ B),
        so the preset loads without LoRA. The write is atomic: files go to a
        sibling directory renamed into place at the end.

        Args:
            preset_dir: str or Path. Target directory (replaced if it exists).
            max_shard_size: float. Weights larger than this many GB are sharded
                into `model.weights.json` plus `.h5` shards.
            metadata: dict. Extra fields for metadata.json (e.g. a description).

        Example:
        >>> import backbones, tempfile
        >>> m = backbones.Backbone.from_preset("gpt2_tiny_en")
        >>> d = tempfile.mkdtemp() + "/p"
        >>> m.save_to_preset(d)
        >>> backbones.Backbone.from_preset(d).count_params() == m.count_params()
        True
        """
        with preset_io.atomic_directory(preset_dir) as tmp:
            self.save_preset_files(tmp, max_shard_size)
            preset_io.write_metadata(tmp, self.count_params(), **(metadata or {}))

    def save_preset_files(self, directory, max_shard_size=5.0):
        """Writes config, weights and tokenizer into an existing directory."""
        if self.quantized:
            # A preset of int8 kernels would load into float layers as garbage, and
            # dequantizing would bake the quantization error into a "full" model.
            raise QuantizationError(
                f"This {type(self).__name__} is quantized (int8): it cannot be saved as a preset. "
                "Save the adapter with save_lora_weights(path); to get a merged preset, load "
                "the unquantized base (Backbone.from_preset(preset)), load_lora_weights(path) "
                "into it and call save_to_preset there.")
        name = type(self).__name__
        preset_io.write_json(directory / preset_io.CONFIG_FILE, {
            "module": type(self).__module__, "class_name": name,
            "config": self.get_config(), "registered_name": f"backbone_lab>{name}",
        })
        weight_bytes = sum(w.numpy().nbytes for w in self.weights)
        if weight_bytes > max_shard_size * 1e9:
            self.save_weights(directory / preset_io.SHARDED_WEIGHTS_FILE, max_shard_size=max_shard_size)
        else:
            self.save_weights(directory / preset_io.WEIGHTS_FILE)
        if self.tokenizer is not None:
            self.tokenizer.save_to_preset(directory)

    # -- LoRA -------------------------------------------------------------
    @property
    def lora_spec(self):
        """The LoRA settings (`rank`, `alpha`, `targets`), or None when off."""
        return self._lora_spec

    def enable_lora(self, rank, alpha=None, targets=None):
        """Freezes every weight and adds LoRA to the target projections.

        Args:
            rank: int. LoRA rank r.
            alpha: float. Scale numerator (scale = alpha / rank); default rank,
                like Keras (PEFT's `lora_alpha`).
            targets: list of str. Projections to adapt; default query and value.
                See `lora_target_layers` for the family's names
                (`"query"`, `"key"`, `"value"`, `"attention_output"`, `"ffn"`).

        Example:
        >>> import backbones
        >>> m = backbones.Backbone.from_preset("gpt2_tiny_en")
        >>> m.enable_lora(4)
        >>> sorted({w.name for w in m.trainable_weights})
        ['lora_kernel_a', 'lora_kernel_b']
        """
        from backbones.errors import LoRAError

        spec = lora.make_spec(self, rank, alpha, targets)
        if self._lora_spec is not None:
            raise LoRAError(
                f"LoRA is already enabled (rank={self._lora_spec.rank}); it can be "
                "enabled once. Rebuild the backbone to change its settings."
            )
        lora.enable(self, spec)
        self._lora_spec = spec

    # -- memory -----------------------------------------------------------
    def enable_remat(self):
        """Recomputes each block's activations in the backward pass instead of
        keeping them (activation rematerialisation, "gradient checkpointing").

        Training then holds one block's activations at a time plus one
        hidden-states tensor per block, for about a third more compute per step.
        Losses and gradients are unchanged (dropout masks included). A training
        choice, not part of the architecture: not saved in presets, like
        transformers' `gradient_checkpointing_enable()`. See `backbones.remat`.

        Example:
        >>> import backbones
        >>> m = backbones.Backbone.from_preset("gpt2_tiny_en")
        >>> m.enable_remat()
        >>> m.remat_enabled
        True
        """
        for block in self.transformer_layers:
            remat.remat_block(block)
        self._remat_enabled = True

    def quantize(self, mode, config=None, **kwargs):
        """Quantizes the frozen base to int8 (weight-only), one layer at a time.

        Every Dense and Embedding kernel becomes int8 with a scale per
        output channel: half the memory of bfloat16, a quarter of float32.
        Activations stay in the compute dtype. Meant for a base under LoRA
        (`enable_lora` before or after): the int8 weights cannot train, the
        LoRA matrices stay float32. A quantized backbone saves adapters
        (`save_lora_weights`, loadable into the unquantized base too), not
        presets. See `backbones.quantize`.

        On a loaded backbone the float model was held first (and TensorFlow
        keeps the freed memory for later tensors): to load a checkpoint as
        int8, `from_preset(preset, quantize="int8")` quantizes each layer as
        it is read and peaks at about the int8 size.

        Args:
            mode: str. `"int8"`, the only mode.

        Example:
        >>> import backbones
        >>> m = backbones.Backbone.from_preset("gpt2_tiny_en")
        >>> m.quantize("int8"); m.enable_lora(2)
        >>> m.quantized, m.token_embedding.embeddings.dtype
        (True, 'int8')
        """
        # `config`: Keras's wrapper of every layer's quantize passes its default
        # int8 config (which quantizes activations too); the mode is what counts.
        quantize.quantize_backbone(self, mode)

    @property
    def quantized(self):
        """True when some layer holds quantized weights (see `quantize`)."""
        return any(getattr(layer, "_is_quantized", False) for layer in self._flatten_layers(include_self=False))

    @property
    def remat_enabled(self):
        """True after `enable_remat()`."""
        return getattr(self, "_remat_enabled", False)

    # -- packed rows ------------------------------------------------------
    def call_packed(self, token_ids, segment_ids, training=None):
        """Hidden states `(batch, seq, hidden)` of packed rows: several examples
        per row, numbered by `segment_ids` (1, 2, ...; 0 is padding). Each token
        attends only to earlier tokens of its own example, and positions
        restart at 0 at each example, so every example's hidden states equal
        those of the example alone (`tasks.CausalLM(..., packing=True)`).
        Decoders implement it (`supports_packing`); a separate method rather
        than an extra graph input, so the unpacked graph costs nothing more.

        Example:
        >>> import backbones, numpy as np
        >>> m = backbones.Backbone.from_preset("gpt2_tiny_en")
        >>> alone = m({"token_ids": np.array([[7, 8]]), "padding_mask": np.array([[1, 1]])})
        >>> packed = m.call_packed(np.array([[5, 6, 7, 8]]), np.array([[1, 1, 2, 2]]))
        >>> bool(np.allclose(packed[:, 2:], alone, atol=1e-5))
        True
        """
        raise NotImplementedError(f"{type(self).__name__} does not take packed rows (no call_packed).")

    @property
    def supports_packing(self):
        """True when the family implements `call_packed`."""
        return type(self).call_packed is not Backbone.call_packed

    def save_lora_weights(self, filepath):
        """Saves only the LoRA matrices (a small safetensors file).

        Example:
        >>> import backbones, tempfile
        >>> m = backbones.Backbone.from_preset("gpt2_tiny_en"); m.enable_lora(2)
        >>> m.save_lora_weights(tempfile.mkdtemp() + "/adapter.lora.safetensors")
        """
        lora.save(self, filepath)

    def load_lora_weights(self, filepath):
        """Loads LoRA matrices saved by `save_lora_weights`.

        A backbone without LoRA gets it enabled with the file's rank, alpha
        and targets; a backbone with other settings or another architecture
        raises `LoRAError`.
        """
        lora.load(self, filepath)


def _registered_class(config, directory):
    name = config.get("class_name")
    if name not in registry.BACKBONE_CLASSES:
        raise PresetFormatError(
            f"{directory}/config.json names class {name!r}, which is not a backbone "
            f"this package registers ({sorted(registry.BACKBONE_CLASSES)}). Only our "
            "registered classes are built from presets."
        )
    return registry.BACKBONE_CLASSES[name]


def check_subclass(cls, target, preset, kwargs=()):
    """`target` (the preset's class) must be a `cls`, and take every keyword of `kwargs`."""
    if not issubclass(target, cls):
        raise PresetClassMismatchError(
            f"Preset {preset!r} holds a {target.__name__}, which is not a {cls.__name__}. "
            f"Call {target.__name__}.from_preset or Backbone.from_preset instead."
        )
    # Keras's Model swallows unknown keywords: a typo would be ignored silently.
    accepted = {"name", "trainable", "dtype"} | {
        p.name for p in inspect.signature(target.__init__).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        hints = [c for u in unknown for c in registry.closest(u, accepted, n=1)]
        hint = f" Did you mean {', '.join(map(repr, hints))}?" if hints else ""
        raise UnknownArgumentError(
            f"{target.__name__}.from_preset({str(preset)!r}) got unknown keyword argument(s) "
            f"{unknown}.{hint} {target.__name__} takes {sorted(accepted)}."
        )
