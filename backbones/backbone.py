"""`Backbone`: the base class of every backbone, and its cross-family machinery."""

from pathlib import Path

import keras

from backbones import formats, lora, preset_io, registry, remat
from backbones.common.logits import tied_logits
from backbones.errors import LoRAError
from backbones.formats import native, peft, transformers
from backbones.formats.base import check_subclass, quantizing_on_load
from backbones.handles import resolve_preset
from backbones.quantize import check_mode, quantize_backbone


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
        max_sequence_length: int. Positions the model supports (None: no
            limit of its own).

    Hooks a task relies on (declared here; a family overrides what it has):
        decoders: `compute_logits`, `init_cache` + `call_with_cache`
            (`supports_cache` says whether a family implements them);
        encoders: `input_names` (with `segment_ids`), `sequence_output`,
            `pooled_output`.

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
    max_sequence_length = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        registry.register_backbone_class(cls)
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

    # -- hooks tasks rely on ---------------------------------------------------
    @property
    def input_names(self):
        """Names of the model's inputs: `token_ids`, `padding_mask`, and for
        encoders with segments (BERT) `segment_ids`."""
        return tuple(self.input) if isinstance(self.input, dict) else ("token_ids", "padding_mask")

    def sequence_output(self, outputs):
        """Hidden states `(batch, seq, hidden)` from this backbone's output
        (an encoder returns a dict with `sequence_output` and `pooled_output`)."""
        return outputs["sequence_output"] if isinstance(outputs, dict) else outputs

    def pooled_output(self, outputs):
        """The family's own pooled representation `(batch, hidden)` (BERT's
        tanh pooler over [CLS]), or None when it has none and a task pools
        the hidden states itself."""
        return outputs.get("pooled_output") if isinstance(outputs, dict) else None

    def compute_logits(self, hidden_states):
        """Next-token logits `(..., vocabulary_size)` of final hidden states
        (decoders). Default: tied to the token embedding,
        `hidden_states @ token_embedding.embeddings^T`; a family with an untied
        head or soft-capping overrides it.

        Example:
        >>> import backbones, numpy as np
        >>> m = backbones.Backbone.from_preset("gpt2_tiny_en")
        >>> m.compute_logits(np.zeros((1, 2, m.hidden_dim), "float32")).shape[-1] == m.token_embedding.input_dim
        True
        """
        if self.is_encoder:
            raise NotImplementedError(
                f"{type(self).__name__} is an encoder (is_encoder=True): it predicts no next token. "
                "Use a decoder (GPT-2, Llama, Gemma) for a causal LM.")
        return tied_logits(hidden_states, self.token_embedding)

    @property
    def supports_cache(self):
        """True when the family implements `init_cache` and `call_with_cache`
        (generation then costs one step per new token)."""
        return type(self).call_with_cache is not Backbone.call_with_cache

    def init_cache(self, batch_size, max_length):
        """An empty key/value cache for `call_with_cache` (decoders)."""
        raise NotImplementedError(self._no_cache_message())

    def call_with_cache(self, token_ids, padding_mask, cache, cache_index):
        """Hidden states of `token_ids` placed at `cache_index`, reading and
        updating `cache`; returns `(hidden_states, new_cache)` (decoders)."""
        raise NotImplementedError(self._no_cache_message())

    def _no_cache_message(self):
        return (f"{type(self).__name__} implements no key/value cache (init_cache, call_with_cache). "
                "Generate with use_cache=False (one full pass per token).")

    # -- presets ----------------------------------------------------------
    @classproperty
    def presets(cls):
        """Built-in presets of this class and its subclasses: name -> metadata."""
        registry.load()
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
        if quantize is not None:
            check_mode(quantize)
        directory = resolve_preset(preset)
        # One question, one answer: the directory's format (backbones.formats).
        with formats.open_preset(directory) as source, quantizing_on_load(quantize if load_weights else None):
            target = source.backbone_class()
            check_subclass(cls, target, preset, kwargs)
            init = {**source.backbone_kwargs(load_weights), **kwargs}  # a user's dtype wins
            backbone = source.build(target, init) if load_weights else target.from_config(init)
            backbone.tokenizer = source.tokenizer()
        if quantize is not None:  # layers not filled from the file (random or initialised weights)
            backbone.quantize(quantize)
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
        """Writes config, weights and tokenizer into an existing directory
        (`backbones.formats.native.write`)."""
        native.write(self, directory, max_shard_size)

    def export_to_transformers(self, directory, max_shard_size=5.0):
        """Writes a transformers checkpoint of the bare model (`GPT2Model`,
        `LlamaModel`, `GemmaModel`, `BertModel`): `config.json`, safetensors
        (sharded past `max_shard_size` GB) and the tokenizer files.
        `transformers.AutoModel.from_pretrained(directory)` gives our hidden
        states. LoRA is merged in; atomic like `save_to_preset`. A task's
        `export_to_transformers` writes its head too (an untied Llama's
        output embedding is the causal LM's head).

        Example:
        >>> import backbones, tempfile, json, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "hf"
        >>> backbones.Backbone.from_preset("gpt2_tiny_en").export_to_transformers(d)
        >>> json.loads((d / "config.json").read_text())["architectures"]
        ['GPT2Model']
        """
        transformers.export(self, directory, max_shard_size=max_shard_size)

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
        quantize_backbone(self, mode)

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

    def save_lora_weights(self, filepath, format=None):
        """Saves only the LoRA matrices.

        Args:
            filepath: str or Path. A file (our format: one safetensors file
                with rank, alpha, targets and an architecture fingerprint),
                or a directory for PEFT's format.
            format: str. `"peft"`: a directory with `adapter_config.json` and
                `adapter_model.safetensors` that `peft.PeftModel.from_pretrained`
                loads onto the transformers model (`*ForCausalLM` for decoders,
                the bare model for BERT) of this backbone, e.g. its
                `export_to_transformers`. Default: PEFT for a path without a
                suffix or an existing directory, else ours. See `backbones.formats.peft`.

        Example:
        >>> import backbones, tempfile, pathlib
        >>> m = backbones.Backbone.from_preset("gpt2_tiny_en"); m.enable_lora(2)
        >>> m.save_lora_weights(tempfile.mkdtemp() + "/adapter.lora.safetensors")
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "peft_adapter"
        >>> m.save_lora_weights(d)
        >>> sorted(p.name for p in d.iterdir())
        ['adapter_config.json', 'adapter_model.safetensors']
        """
        path = Path(filepath)
        if format is None:
            format = "peft" if path.is_dir() or not path.suffix else "backbone_lab"
        if format == "peft":
            peft.save(self, path)
        elif format == "backbone_lab":
            lora.save(self, path)
        else:
            raise LoRAError(f"save_lora_weights got format={format!r}; use 'peft' or 'backbone_lab'.")

    def load_lora_weights(self, filepath):
        """Loads LoRA matrices saved by `save_lora_weights`, or a PEFT adapter
        directory (`adapter_config.json` + `adapter_model.safetensors`, made by
        `peft` on the transformers model of the same checkpoint).

        A backbone without LoRA gets it enabled with the file's rank, alpha
        and targets; a backbone with other settings or another architecture
        raises `LoRAError`, as does a PEFT adapter we cannot represent
        exactly (DoRA, trained biases, `modules_to_save`).
        """
        if peft.is_peft_directory(filepath):
            peft.load(self, filepath)
        else:
            lora.load(self, filepath)

