"""Structured-config schema of `conf/` (Hydra ConfigStore) and the checks
that run before anything heavy.

The dataclasses give every key its type, so a typo or a wrong type fails at
composition, naming the key; `validate` catches impossible combinations.
"""

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class ConfigError(ValueError):
    """A config value or combination that cannot run; the message names the key."""


@dataclass
class BackboneConfig:
    preset: str = MISSING  # built-in name, hf://..., kaggle://... or a directory
    dtype: Optional[str] = None  # null: the preset's own dtype
    trainable: bool = True
    load_weights: bool = True
    quantize: Optional[str] = None  # null | int8 (weight-only int8 frozen base under LoRA)


@dataclass
class LoRAConfig:
    rank: Optional[int] = None  # null: no LoRA
    alpha: Optional[float] = None  # null: alpha = rank
    targets: List[str] = field(default_factory=lambda: ["query", "value"])


@dataclass
class TaskConfig:
    name: str = "classifier"  # classifier | causal_lm
    num_classes: Optional[int] = None
    dropout: float = 0.1
    # A bias in the classifier's logits layer. false: what transformers' decoder *ForSequenceClassification
    # heads have (`score`, no bias), needed for tracking.export=[transformers] of a decoder classifier.
    head_bias: bool = True
    metric: str = "val_accuracy"  # what train.py returns and sweeps optimise
    metric_mode: str = "max"  # max | min


# Stanford Alpaca's prompts (with and without an input), the usual default for instruction data.
ALPACA_PROMPT = ("Below is an instruction that describes a task, paired with an input that provides further "
                 "context. Write a response that appropriately completes the request.\n\n"
                 "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                          "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


@dataclass
class DataConfig:
    source: str = "bundled"  # bundled | local | huggingface
    name: Optional[str] = None  # bundled dataset name, or Hugging Face dataset name
    path: Optional[str] = None  # local file (csv, jsonl, parquet)
    validation_path: Optional[str] = None  # local validation file; null: split `path`
    # What an example is: text | classification | instruction | chat. null: classification when
    # label_column is set, else text (both as before).
    format: Optional[str] = None
    file_format: Optional[str] = None  # csv | tsv | jsonl | parquet; null: from the file suffix
    split: str = "train"  # Hugging Face split to train on
    validation_split_name: Optional[str] = None  # Hugging Face split to validate on
    text_column: str = "text"
    label_column: Optional[str] = "label"
    num_classes: Optional[int] = None
    # format=instruction: the columns, and the prompt ({instruction}, {input}) the output follows.
    instruction_column: str = "instruction"
    input_column: Optional[str] = "input"  # null: no input column
    output_column: str = "output"
    prompt_template: str = ALPACA_PROMPT
    prompt_template_no_input: str = ALPACA_PROMPT_NO_INPUT  # when the input is empty
    # format=chat: a list of {role, content} (or sharegpt's {from, value}) per example.
    messages_column: str = "messages"
    chat_template: Optional[str] = None  # Jinja; null: the tokenizer's own (tokenizer_config.json)
    train_on: str = "completion"  # completion: loss on answers only (instruction/chat) | all
    validation_fraction: float = 0.2
    max_train_samples: Optional[int] = None
    max_validation_samples: Optional[int] = None
    packing: bool = False  # causal_lm: several examples per row (tasks.packing); validation stays one per row
    # causal_lm: read the training file in chunks through a shuffle buffer (lab/streaming.py), never whole.
    # null: when the file is larger than 256 MB (lab.streaming.STREAMING_BYTES).
    streaming: Optional[bool] = None


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # adamw | adam | sgd
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    schedule: str = "constant"  # constant | linear | cosine
    warmup_ratio: float = 0.0
    clipnorm: Optional[float] = 1.0  # global gradient-norm clipping; null = none


@dataclass
class TrainerConfig:
    epochs: int = 3
    max_steps: Optional[int] = None  # stop after this many optimizer steps
    batch_size: int = 16
    sequence_length: int = 64
    jit_compile: Optional[bool] = None  # null: tasks.task.default_jit_compile (XLA for float32 on CPU)
    remat: bool = False  # recompute each block's activations in the backward pass (less memory, more compute)
    checkpoint: bool = True  # checkpoint each epoch; a re-run resumes
    checkpoint_every_n_steps: Optional[int] = None  # also mid-epoch (long epochs, streamed data): resumes at that batch
    deterministic: bool = False
    early_stopping_patience: Optional[int] = None  # epochs without improvement of `metric`
    log_every_n_steps: int = 10
    distribution: str = "none"  # none | mirrored | multi_worker (lab/distribution.py)
    cpu_replicas: Optional[int] = None  # mirrored without GPUs: split the CPU into this many logical devices


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # null: sqlite:///<cwd>/mlflow.db, artifacts in <cwd>/mlruns
    experiment: str = "backbone-lab"
    run_name: Optional[str] = None
    # What a run saves as its model (lab/artifacts.py): adapter | merged | both | none.
    save: str = "adapter"
    log_preset: Optional[bool] = None  # replaced by `save`: set, it fails with a message saying how
    reproduce_of: Optional[str] = None  # set by scripts/reproduce.py
    register: Optional[str] = None  # registered model name: a run registers its model, a sweep its best job's
    alias: Optional[str] = None  # alias of that version, e.g. champion (needs register)
    # Also written with the run's model: transformers (a transformers checkpoint, LoRA merged) and/or
    # peft (the adapter in PEFT's format; LoRA runs).
    export: List[str] = field(default_factory=list)
    # CPU, memory, disk, network as system/* metrics every N seconds (null: off). MLflow's default
    # is 10 s; 5 gives a debug run of half a minute a few points, a day-long run 17k per metric.
    system_metrics_interval: Optional[float] = 5.0
    # A server that stops answering mid-run: training goes on, metrics are kept; at the end the run
    # waits this many seconds for it to come back before naming the file that holds what is unsent.
    reconnect_timeout: int = 300


@dataclass
class TrainConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 42


def register():
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


EXPORT_FORMATS = ("transformers", "peft")  # tracking.export

CHOICES = {
    "task.name": ("classifier", "causal_lm"),
    "data.source": ("bundled", "local", "huggingface"),
    "data.format": (None, "text", "classification", "instruction", "chat"),
    "data.file_format": (None, "csv", "tsv", "jsonl", "json", "parquet"),
    "data.train_on": ("completion", "all"),
    "optimizer.name": ("adamw", "adam", "sgd"),
    "optimizer.schedule": ("constant", "linear", "cosine"),
    "task.metric_mode": ("max", "min"),
    "tracking.save": ("adapter", "merged", "both", "none"),
    "backbone.dtype": (None, "float32", "bfloat16", "float16", "mixed_bfloat16", "mixed_float16"),
    "backbone.quantize": (None, "int8"),  # backbones.quantize.MODES
    "trainer.distribution": ("none", "mirrored", "multi_worker"),  # lab/distribution.py
}


def validate(cfg):
    """Raises `ConfigError` on a value or combination that cannot run."""
    from omegaconf import OmegaConf

    _known_keys(cfg)
    if cfg.data.format in CHOICES["data.file_format"][1:]:
        raise ConfigError(f"data.format={cfg.data.format} names a file type, which is now data.file_format: "
                          f"set data.file_format={cfg.data.format}. data.format says what an example is "
                          "(text, classification, instruction or chat).")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {[a for a in allowed if a]}.")
    positive = {"trainer.epochs": cfg.trainer.epochs, "trainer.batch_size": cfg.trainer.batch_size,
                "trainer.sequence_length": cfg.trainer.sequence_length,
                "trainer.log_every_n_steps": cfg.trainer.log_every_n_steps,
                "optimizer.learning_rate": cfg.optimizer.learning_rate}
    for key in ("lora.rank", "lora.alpha", "trainer.max_steps", "trainer.early_stopping_patience",
                "trainer.checkpoint_every_n_steps", "trainer.cpu_replicas", "tracking.system_metrics_interval",
                "data.max_train_samples", "data.max_validation_samples"):
        if OmegaConf.select(cfg, key) is not None:
            positive[key] = OmegaConf.select(cfg, key)
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}={value} must be positive{' (or null for no LoRA)' if key == 'lora.rank' else ''}.")
    if cfg.lora.rank is not None and not cfg.lora.targets:
        raise ConfigError("lora.targets is empty: name the projections to adapt, e.g. [query, value].")
    if cfg.task.name == "classifier":
        if cfg.data.format not in (None, "classification"):
            raise ConfigError(f"data.format={cfg.data.format} trains a language model: use task=causal_lm "
                              "(task=classifier takes data.format=classification).")
        if cfg.task.num_classes is None or cfg.task.num_classes < 2:
            raise ConfigError(
                f"task.num_classes={cfg.task.num_classes}: a classifier needs at least 2 classes. "
                "Set data.num_classes=K (task.num_classes follows it) or task.num_classes=K.")
        if cfg.data.label_column is None:
            raise ConfigError("data.label_column is null, but task=classifier needs labels.")
    if cfg.tracking.get("log_preset") is not None:
        raise ConfigError(
            f"tracking.log_preset={cfg.tracking.log_preset} was replaced by tracking.save: adapter (the default: "
            "a LoRA run saves its adapter, head and a record of its base; a full fine-tune its preset), merged "
            "(the merged preset), both, or none (no model; what log_preset=false did). Remove "
            "tracking.log_preset from the command or config and set tracking.save instead.")
    _check_registry(cfg.tracking)
    _check_export(cfg)
    if cfg.backbone.quantize:
        if cfg.lora.rank is None and cfg.backbone.trainable:
            raise ConfigError(f"backbone.quantize={cfg.backbone.quantize}: int8 weights cannot train. Set "
                              "lora.rank=R (LoRA over the quantized base) or backbone.trainable=false.")
        if cfg.backbone.dtype in ("float16", "mixed_float16"):
            raise ConfigError(f"backbone.quantize={cfg.backbone.quantize} with backbone.dtype={cfg.backbone.dtype}: "
                              "Keras's int8 layers do not compute in float16. Use bfloat16 or float32.")
    _distribution_fits(cfg.trainer)
    if cfg.data.get("packing") and cfg.task.name != "causal_lm":
        raise ConfigError(f"data.packing=true packs examples for language modelling; task={cfg.task.name} "
                          "takes one example per row. Set task=causal_lm or data.packing=false.")
    if cfg.data.get("streaming"):
        if cfg.task.name != "causal_lm":
            raise ConfigError(f"data.streaming=true streams examples for language modelling; task={cfg.task.name} "
                              "maps labels over the whole file first. Set data.streaming=false.")
        if cfg.data.get("packing"):
            raise ConfigError("data.packing=true with data.streaming=true is not supported yet: packing needs the "
                              "lengths of all examples up front. Choose one of the two.")
    if not 0 < cfg.data.validation_fraction < 1:
        raise ConfigError(f"data.validation_fraction={cfg.data.validation_fraction} must be in (0, 1).")
    if cfg.data.source == "local" and not cfg.data.path:
        raise ConfigError("data.source=local needs data.path=/path/to/file.{csv,jsonl,parquet}.")
    if cfg.data.source == "huggingface" and not cfg.data.name:
        raise ConfigError("data.source=huggingface needs data.name=<dataset on the Hub>.")


def _known_keys(cfg, node=TrainConfig, prefix=""):
    """A key added with `+` passes composition (Hydra opens the structured config for it), so a typo
    there, `+optimizer.learnig_rate=3e-4` as Hydra's own "Could not override" message suggests, would
    be ignored: the run would train at the default. Only `+check` is not in the schema."""
    known = {f.name: f.type for f in dataclasses.fields(node)}
    for key in cfg:
        if not prefix and key == "check":
            continue
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {prefix}{close[0]}?" if close else f" Choose from {sorted(known)}."
            raise ConfigError(f"{prefix}{key} is not a config key, so it would be ignored.{hint} "
                              "Set an existing key without '+'.")
        if dataclasses.is_dataclass(known[key]) and cfg[key] is not None:
            _known_keys(cfg[key], known[key], f"{prefix}{key}.")


def _check_registry(tracking_cfg):
    """`tracking.register` / `tracking.alias` as the MLflow registry accepts them
    (its own rules: no '/' or ':' in a name; an alias of word characters and '-',
    not `latest` or `v<N>`), so a bad name fails before training, not after."""
    name, alias = tracking_cfg.get("register"), tracking_cfg.get("alias")
    if name is not None and (not str(name).strip() or any(c in str(name) for c in "/:")):
        raise ConfigError(f"tracking.register={name!r} is not a registered model name: it must be non-empty "
                          "and contain no '/' or ':'. E.g. tracking.register=sentiment-classifier.")
    if name is not None and tracking_cfg.save == "none":
        raise ConfigError(f"tracking.register={name!r} with tracking.save=none: the run saves no model to "
                          "register. Set tracking.save=adapter (or merged, both) or drop tracking.register.")
    if alias is None:
        return
    if name is None:
        raise ConfigError(f"tracking.alias={alias!r} names an alias of a registered model, but "
                          "tracking.register is not set: add tracking.register=NAME.")
    alias = str(alias)
    if not re.fullmatch(r"[\w\-]{1,255}", alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise ConfigError(f"tracking.alias={alias!r} is not a valid alias: use letters, digits, '_' and '-' "
                          "(not 'latest' or 'v<number>', which MLflow reserves), e.g. tracking.alias=champion.")


def _check_export(cfg):
    """`tracking.export`: known formats; PEFT's needs LoRA."""
    unknown = [f for f in cfg.tracking.export if f not in EXPORT_FORMATS]
    if unknown:
        raise ConfigError(f"tracking.export has {unknown}: choose from {list(EXPORT_FORMATS)}, "
                          "e.g. tracking.export=[transformers,peft].")
    if "peft" in cfg.tracking.export and cfg.lora.rank is None:
        raise ConfigError("tracking.export has peft, an adapter format, but lora.rank is null: this run trains "
                          "no adapter. Set lora.rank=R, or export the whole model with tracking.export=[transformers].")


def _distribution_fits(trainer):
    if trainer.cpu_replicas is not None and trainer.distribution != "mirrored":
        raise ConfigError(f"trainer.cpu_replicas={trainer.cpu_replicas} splits the CPU for "
                          f"trainer.distribution=mirrored, but it is {trainer.distribution}: drop cpu_replicas "
                          "or set trainer.distribution=mirrored.")
    if trainer.cpu_replicas is not None and trainer.batch_size % trainer.cpu_replicas:
        raise ConfigError(f"trainer.batch_size={trainer.batch_size} is the global batch, split evenly over "
                          f"trainer.cpu_replicas={trainer.cpu_replicas} replicas: make it a multiple of it.")
    if trainer.distribution != "none" and trainer.jit_compile:
        raise ConfigError(
            f"trainer.jit_compile=true with trainer.distribution={trainer.distribution}: XLA:CPU has no kernels "
            "for the collective ops that sum gradients over replicas (measured: CollectiveGatherV2 with two "
            "workers, 'variable on a different device' with two logical CPUs), and XLA with strategies on GPUs "
            "is untested here. Leave trainer.jit_compile=null (off under a strategy) or set it to false.")
