"""`Task`: a backbone plus a preprocessor, trainable on raw strings."""

import inspect

import keras
import numpy as np

from backbones import preset_io, registry
from backbones.backbone import Backbone
from backbones.errors import PresetClassMismatchError, PresetFormatError
from backbones.formats.transformers import export
from backbones.handles import resolve_preset
from tasks import data, optimizers, task_presets
from tasks.errors import MissingTokenizerError, TaskConfigError, TaskInputError
from tasks.preprocessor import Preprocessor

# class name -> class, filled by `Task.__init_subclass__`: only our own task
# classes are ever built from a preset's task.json; a name taken twice is refused.
TASK_CLASSES = {}

# Methods of other tasks, for a clear error instead of a bare AttributeError.
_ELSEWHERE = {"generate": "CausalLM"}


class Task(keras.Model):
    """Base class of tasks: a functional model over a backbone, with a preprocessor.

    `fit`, `evaluate` and `predict` take raw strings (a list, a NumPy array,
    a tf.data dataset of strings or of `(string, label)` pairs), tokenized
    once in Rust batches and fed through a prefetched tf.data pipeline, or
    already tokenized inputs (a dict with `token_ids` and `padding_mask`).
    A task compiles itself with the defaults when built (`compile=True`, as
    keras-hub's tasks do), so `from_preset(...).fit(...)` trains; `compile()`
    with no arguments gives the same defaults, and `compile(...)` again
    replaces them. Defaults chosen before `backbone.enable_lora(...)` are
    re-chosen at the next `fit` (LoRA gets its own learning rate).
    `from_preset` / `save_to_preset` round-trip the backbone, the tokenizer
    and the head (`task.json` + `task.weights.h5`).

    Subclasses build their layers and graph in `__init__`, and supply
    `_preprocess` (NumPy batch in, NumPy arrays out), `_default_loss` and
    `_default_metrics`.

    Attributes:
        backbone: backbones.Backbone. The wrapped backbone.
        preprocessor: tasks.Preprocessor. Tokenizer plus packing.

    Example:
    >>> import tasks
    >>> clf = tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=2, sequence_length=16)
    >>> history = clf.fit(["so good", "so bad"], [1, 0], batch_size=2, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss']
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        registry.register(TASK_CLASSES, cls.__name__, cls, "Task class")  # a second one is refused
        keras.saving.register_keras_serializable(package="backbone_lab")(cls)

    def __init__(self, *args, compile=True, **kwargs):
        """Subclasses call this with their functional graph. `compile`: bool.
        Compile with the defaults now (see `compile`)."""
        super().__init__(*args, **kwargs)
        self._default_compiled_for = None  # the LoRA spec the default optimizer was chosen for
        if compile:
            self.compile()

    def __getattr__(self, name):
        # Only reached when normal lookup fails (Keras probes attributes with hasattr).
        if name in _ELSEWHERE:
            raise AttributeError(
                f"{type(self).__name__} has no {name}(): it is a method of tasks."
                f"{_ELSEWHERE[name]}. A {type(self).__name__} predicts with predict(); "
                f"build tasks.{_ELSEWHERE[name]}(backbone) to use {name}()."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- subclass hooks ---------------------------------------------------
    def _preprocess(self, x, y=None, sample_weight=None):
        raise NotImplementedError

    def _default_loss(self):
        raise NotImplementedError

    def _default_metrics(self):
        """`(metrics, weighted_metrics)` for `compile()`."""
        raise NotImplementedError

    def _pack_inputs(self, x):
        """Token inputs from texts or a token dict (NumPy int32 arrays)."""
        if data.is_token_dict(x):
            missing = [k for k in self.preprocessor.feature_names if k not in x]
            if missing:
                raise TaskInputError(
                    f"Tokenized inputs lack {missing}; {type(self.backbone).__name__} needs "
                    f"{list(self.preprocessor.feature_names)}. Or pass raw strings."
                )
            return {k: np.asarray(x[k], "int32") for k in self.preprocessor.feature_names}
        return self.preprocessor(x)

    # -- training ---------------------------------------------------------
    def compile(self, optimizer="auto", loss="auto", metrics="auto", weighted_metrics="auto", **kwargs):
        """Keras's compile; each `"auto"` argument gets the task's default.

        The default optimizer is AdamW (learning rate 5e-5, or 2e-4 when the
        backbone has LoRA enabled at compile time: adapters start at zero and
        need larger steps; weight decay 0.01, not on biases and norms; global
        gradient norm clipped at 1.0), which keeps float32 master weights and
        state for bfloat16 / float16 variables (`tasks.optimizers`). Any
        optimizer gets dynamic loss scaling when the backbone computes in
        float16 (`float16`, `mixed_float16`). Measured against the references'
        own defaults (tiny GPT-2, the same initial weights, 400 texts, 2 epochs
        of batch 16): validation loss 6.26 -> 5.76 here, 6.01 with keras-hub's
        (Adam 2e-5), 5.95 with transformers' Trainer (AdamW 5e-5, linear
        decay); LoRA r8: 6.21 here, 6.25 with PEFT and Trainer defaults.
        `jit_compile="auto"` picks XLA by measurement (`default_jit_compile`).
        """
        self._default_compiled_for = None
        if isinstance(optimizer, str) and optimizer == "auto":
            optimizer = default_optimizer(self)
            self._default_compiled_for = (getattr(self.backbone, "lora_spec", None),)
        if optimizer is not None:
            optimizer = optimizers.with_loss_scaling(keras.optimizers.get(optimizer), self)
        if isinstance(loss, str) and loss == "auto":
            loss = self._default_loss()
        default_metrics, default_weighted = self._default_metrics()
        if isinstance(metrics, str) and metrics == "auto":
            metrics = default_metrics
        if isinstance(weighted_metrics, str) and weighted_metrics == "auto":
            weighted_metrics = default_weighted
        if kwargs.get("jit_compile", "auto") in ("auto", None):
            kwargs["jit_compile"] = default_jit_compile(self.backbone)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics,
                        weighted_metrics=weighted_metrics, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, sample_weight=None, validation_data=None,
            validation_split=0.0, shuffle=True, validation_batch_size=None, **kwargs):
        """Keras's fit, also on raw strings (see the class docstring).

        In-memory data is shuffled each epoch when `shuffle` is true, and
        cycled (repeated) when `steps_per_epoch` is given. A tf.data dataset
        is used as it comes (shuffle and repeat it yourself); unbatched
        datasets are batched with `batch_size` (default 32).
        """
        if self._default_compiled_for not in (None, (getattr(self.backbone, "lora_spec", None),)):
            self.compile(jit_compile=self.jit_compile)  # LoRA enabled since: its default learning rate
        if validation_split and validation_data is None and data.is_in_memory(x):
            (x, y, sample_weight), validation_data = data.split_tail(x, y, sample_weight, validation_split)
            validation_split = 0.0
        train = data.make_dataset(x, y, sample_weight, batch_size, shuffle, self._preprocess,
                                  repeat=kwargs.get("steps_per_epoch") is not None)
        if validation_data is not None:
            val = _unpack(validation_data)
            ds = data.make_dataset(*val, validation_batch_size or batch_size, False, self._preprocess)
            validation_data = validation_data if ds is None else ds
        if train is None:
            args = dict(y=y, batch_size=batch_size, sample_weight=sample_weight, shuffle=shuffle,
                        validation_split=validation_split, validation_batch_size=validation_batch_size)
        else:  # shuffled by the pipeline already; Keras rejects a split of a dataset
            x, args = train, {"shuffle": False, "validation_split": validation_split}
        with data.translate_errors():
            build_training_state(self, x)
            return super().fit(x, validation_data=validation_data, **args, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, sample_weight=None, **kwargs):
        """Keras's evaluate, also on raw strings."""
        ds = data.make_dataset(x, y, sample_weight, batch_size, False, self._preprocess)
        args = dict(y=y, batch_size=batch_size, sample_weight=sample_weight) if ds is None else {}
        with data.translate_errors():
            return super().evaluate(x if ds is None else ds, **args, **kwargs)

    def predict(self, x, batch_size=None, **kwargs):
        """Keras's predict, also on raw strings."""
        ds = data.make_dataset(x, None, None, batch_size, False, self._preprocess)
        args = dict(batch_size=batch_size) if ds is None else {}
        with data.translate_errors():
            return super().predict(x if ds is None else ds, **args, **kwargs)

    # -- under a tf.distribute strategy ------------------------------------
    # Keras 3.15's TensorFlow trainer, under a MultiWorkerMirroredStrategy
    # (keras issue 20585), fails in two places that only need one replica's
    # view; fixed here so that multi-worker training is Keras's own fit.
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds the optimizer and metrics from a first batch (under a strategy).

        Keras reduces the distributed first batch with `strategy.reduce`, which
        the collectives of several workers refuse for a dict of inputs; only
        its shapes and dtypes matter, so replica 0's share serves.
        """
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is None or iterator is None:
            return super()._maybe_symbolic_build(iterator, data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            break
        local = keras.tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], batch)
        with strategy.scope():
            self._symbolic_build(data_batch=local)

    def train_step(self, *args, **kwargs):
        return self._collective_logs(super().train_step(*args, **kwargs))

    def test_step(self, *args, **kwargs):
        return self._collective_logs(super().test_step(*args, **kwargs))

    def _collective_logs(self, logs):
        """Logs as shape-(1,) tensors across workers: Keras averages them over
        workers with `strategy.reduce("MEAN", v, axis=0)`, which fails on the
        scalars its own step returns; on (1,) it gives the scalar mean."""
        strategy = getattr(self, "_distribute_strategy", None)
        multi_worker = strategy is not None and getattr(strategy.extended, "_in_multi_worker_mode", bool)()
        if not multi_worker or not isinstance(logs, dict):
            return logs
        return {k: keras.ops.reshape(v, (1,)) for k, v in logs.items()}

    # -- presets ----------------------------------------------------------
    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds a task from a task preset, or a fresh head on a backbone preset.

        With a `task.json` in the preset, its class (any registered task when
        called on `Task`) is rebuilt with its head weights, backbone and
        tokenizer. On a plain backbone preset, `cls` (a concrete task class)
        gets a new head on the pretrained backbone.

        Args:
            preset: str or Path. Any handle `Backbone.from_preset` takes.
            load_weights: bool. False: the architecture with random weights.
            **kwargs: task arguments (`num_classes`, `sequence_length`,
                `preprocessor`, ...); the others (`dtype`, `trainable`) go to
                the backbone.

        Example:
        >>> import tasks
        >>> clf = tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=3, sequence_length=16)
        >>> clf.predict(["a great film", "an awful film"], verbose=0).shape
        (2, 3)
        """
        directory = resolve_preset(preset)
        spec = task_presets.read_task_spec(directory)
        if spec is None and (cls is Task or cls not in TASK_CLASSES.values()):
            raise PresetFormatError(
                f"Preset {str(preset)!r} is a backbone preset (no {task_presets.TASK_FILE}), so it "
                f"does not say which task to build. Call a task class on it, e.g. "
                f"tasks.TextClassifier.from_preset({str(preset)!r}, num_classes=...) or "
                f"tasks.CausalLM.from_preset({str(preset)!r})."
            )
        target = cls if spec is None else _registered_class(spec, directory)
        if not issubclass(target, cls):
            raise PresetClassMismatchError(
                f"Preset {str(preset)!r} holds a {target.__name__} task, not a {cls.__name__}. "
                f"Call {target.__name__}.from_preset or Task.from_preset instead."
            )
        params = inspect.signature(target.__init__).parameters
        task_kwargs = {k: v for k, v in kwargs.items() if k in params or k in ("name", "compile")}
        backbone_kwargs = {k: v for k, v in kwargs.items() if k not in task_kwargs}
        backbone = Backbone.from_preset(directory, load_weights=load_weights, **backbone_kwargs)
        if spec is None:
            if task_kwargs.get("preprocessor") is None:
                task_kwargs["preprocessor"] = _preprocessor(backbone, preset, task_kwargs, {})
            return target(backbone, **task_kwargs)
        preprocessor = task_kwargs.pop("preprocessor", None) or _preprocessor(
            backbone, preset, task_kwargs, spec.get("preprocessor", {}))
        task_kwargs.pop("sequence_length", None)
        task = target(backbone, preprocessor=preprocessor, **{**spec.get("config", {}), **task_kwargs})
        if load_weights:
            task_presets.load_head_weights(task, directory)
        return task

    def save_to_preset(self, preset_dir, max_shard_size=5.0, metadata=None):
        """Saves backbone, tokenizer and head as a preset directory, atomically.

        Writes the backbone's files (config.json, model.weights.h5; merged
        weights when LoRA is enabled), the preprocessor's tokenizer,
        `task.json` (`class_name`, `config`, `preprocessor`) and
        `task.weights.h5` (the weights outside the backbone), then
        metadata.json with their checksums. A failed save leaves the old
        preset (or none).

        Example:
        >>> import tasks, tempfile
        >>> clf = tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=2, sequence_length=16)
        >>> clf.save_to_preset(tempfile.mkdtemp() + "/clf")
        """
        with preset_io.atomic_directory(preset_dir) as tmp:
            self.backbone.save_preset_files(tmp, max_shard_size)
            self.preprocessor.tokenizer.save_to_preset(tmp)
            task_presets.write_task_spec(tmp, self)
            task_presets.save_head_weights(self, tmp)
            preset_io.write_metadata(tmp, self.count_params(), **(metadata or {}))

    def export_to_transformers(self, directory, max_shard_size=5.0):
        """Writes a transformers checkpoint of backbone and head (LoRA merged):
        a `CausalLM` as `*ForCausalLM`, a `TextClassifier` as
        `*ForSequenceClassification`, with the preprocessor's tokenizer.
        See `Backbone.export_to_transformers`.

        Example:
        >>> import tasks, tempfile, json, pathlib
        >>> lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=16)
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "hf"
        >>> lm.export_to_transformers(d)
        >>> json.loads((d / "config.json").read_text())["architectures"]
        ['GPT2LMHeadModel']
        """
        head, layer = self._transformers_head()
        export(self.backbone, directory, head=head, head_layer=layer, max_shard_size=max_shard_size,
               tokenizer=self.preprocessor.tokenizer)

    def _transformers_head(self):
        """(head kind, head layer) for `export_to_transformers`: see `backbones.formats.transformers.export`."""
        return "base", None

    def get_config(self):
        """The task's own arguments (the backbone and tokenizer live in the preset)."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        raise TaskConfigError(
            f"{cls.__name__} is saved and loaded as a preset: use task.save_to_preset(dir) "
            f"and {cls.__name__}.from_preset(dir) (.keras files are not supported)."
        )


def build_preprocessor(backbone, preprocessor, sequence_length):
    """The given preprocessor (checked against the backbone), or one from its tokenizer."""
    if preprocessor is None:
        if getattr(backbone, "tokenizer", None) is None:
            raise MissingTokenizerError(
                f"{type(backbone).__name__} {backbone.name!r} has no tokenizer (backbone.tokenizer "
                "is None), so the task cannot tokenize text. Load the backbone from a preset "
                "that has tokenizer.json, or pass preprocessor=tasks.Preprocessor(tokenizer, ...)."
            )
        return Preprocessor(backbone.tokenizer, sequence_length, is_encoder=backbone.is_encoder)
    expected = set(backbone.input_names)
    if set(preprocessor.feature_names) != expected:
        raise TaskConfigError(
            f"The preprocessor makes {sorted(preprocessor.feature_names)} but "
            f"{type(backbone).__name__} takes {sorted(expected)}: build it with "
            f"is_encoder={backbone.is_encoder}."
        )
    return preprocessor


def task_inputs(backbone):
    """Symbolic int32 inputs named as the backbone's inputs."""
    return {n: keras.Input(shape=(None,), dtype="int32", name=n) for n in backbone.input_names}


def build_training_state(model, batches):
    """Creates a compiled model's optimizer and metric variables before its
    train step is traced, from the specs of `batches`' first batch.

    Keras on TensorFlow (without a distribution strategy) creates them inside
    the first trace of the train step, and a `tf.function` that creates
    variables is traced twice. Building them first saves one whole trace:
    GPT-2 at the benchmark shape (BENCHMARKS.md), first step 7.3 s -> 5.0 s.
    A no-op on other backends, under a strategy, or for inputs other than a
    `tf.data.Dataset` or a `keras.utils.PyDataset`.

    Args:
        model: keras.Model. Compiled.
        batches: tf.data.Dataset or keras.utils.PyDataset of
            `(x, y[, sample_weight])` batches.
    """
    if keras.backend.backend() != "tensorflow" or getattr(model, "_distribute_strategy", None) is not None:
        return
    import tensorflow as tf

    if isinstance(batches, tf.data.Dataset):
        batch = batches.element_spec
    elif isinstance(batches, keras.utils.PyDataset):
        batch = batches[0]
    else:
        return
    model._symbolic_build(data_batch=batch)  # what Keras does itself under a strategy


def default_jit_compile(backbone):
    """Whether to train `backbone` with XLA when the user does not say.

    XLA on TensorFlow and JAX (torch has no XLA path), except on a CPU for a
    half-precision compute dtype: XLA:CPU compiles bfloat16/float16 matmuls
    into its own loops, while TensorFlow's oneDNN kernels use the CPU's bf16
    units (AMX). Measured (BENCHMARKS.md, 2 vCPU): GPT-2 float32 with XLA 1.50x
    the tokens/s of Keras's default; Gemma 2B bfloat16 LoRA, batch 8 x 48,
    without XLA 81 tokens/s and 8.05 GB peak RSS against 28 tokens/s and
    16.3 GB with it. Keras's own "auto" turns XLA off on every CPU. Off under
    TensorFlow's op determinism, which XLA does not support, and under a
    tf.distribute strategy on a CPU: XLA:CPU has no kernels for collective
    ops (`CollectiveGatherV2` with several workers; "variable on a different
    device" with several logical CPUs).

    Example:
    >>> import backbones
    >>> default_jit_compile(backbones.Backbone.from_preset("gpt2_tiny_en"))
    True
    >>> default_jit_compile(backbones.Backbone.from_preset("gpt2_tiny_en", dtype="bfloat16"))
    False
    """
    if keras.backend.backend() not in ("tensorflow", "jax") or _op_determinism():
        return False
    if keras.backend.standardize_dtype(backbone.dtype_policy.compute_dtype) == "float32" and not _distributed():
        return True
    return _has_accelerator()


def _distributed():
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()


def _has_accelerator():
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() != "cpu"
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def default_optimizer(task):
    lora = getattr(task.backbone, "lora_spec", None) is not None
    # tasks.optimizers: float32 master weights and state for bf16/fp16 variables.
    return optimizers.build("adamw", 2e-4 if lora else 5e-5, weight_decay=0.01, global_clipnorm=1.0)


def _op_determinism():
    """TensorFlow's op determinism is on (`enable_op_determinism`): XLA does not support it."""
    if keras.backend.backend() != "tensorflow":
        return False
    from tensorflow.python.framework import config  # what Keras reads too; TF 2.21 has no public getter

    return config.is_op_determinism_enabled()


def _unpack(validation_data):
    if isinstance(validation_data, tuple):
        return (tuple(validation_data) + (None, None))[:3]
    return validation_data, None, None


def _registered_class(spec, directory):
    name = spec.get("class_name")
    if name not in TASK_CLASSES:
        raise PresetFormatError(
            f"{directory}/{task_presets.TASK_FILE} names task class {name!r}, which is not a "
            f"task this package registers ({sorted(TASK_CLASSES)}). Only our registered task "
            "classes are built from presets."
        )
    return TASK_CLASSES[name]


def _preprocessor(backbone, preset, task_kwargs, saved):
    if backbone.tokenizer is None:
        raise MissingTokenizerError(
            f"Preset {str(preset)!r} has no tokenizer (no tokenizer.json), so a task cannot "
            "tokenize text. Use a preset saved with its tokenizer, or pass "
            "preprocessor=tasks.Preprocessor(tokenizer, ...)."
        )
    config = dict(saved)
    if task_kwargs.get("sequence_length") is not None:
        config["sequence_length"] = task_kwargs["sequence_length"]
    config.setdefault("is_encoder", backbone.is_encoder)
    return Preprocessor(backbone.tokenizer, **config)
