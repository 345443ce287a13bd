"""The pre-flight check: what can be known wrong about an experiment, found
in about a second, before TensorFlow is imported or an MLflow run exists.

`check(cfg)` validates the config (`schema.validate`), reads the preset's
config.json (built-in names, directories, Hugging Face / Kaggle caches; an
uncached hub preset is downloaded by the run, and checked then), and checks
the family against the task and the LoRA targets, the sequence length
against the model's positions, the data files and the columns of
`data.format` (header or first record; for chat, the first conversation),
the labels against `num_classes`, the chat template (given or the preset's,
compiled), the writable directories and
the tracking server. Each failure is one `ConfigError` naming the key or
file and what to do. `python train.py +check=true` runs it alone.

Nothing here imports keras or mlflow.
"""

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from backbones.chat_template import ChatTemplateError, compile_template
from backbones.errors import BackboneLabError
from backbones.preset_facts import read_preset_facts
from backbones.tokenizer import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, Tokenizer, chat_template_from
from lab import data, distribution, schema
from lab.schema import ConfigError

# Scanning labels reads the whole file: skip it above this size (the run
# checks the labels itself when it loads them).
MAX_LABEL_SCAN_BYTES = 50_000_000
TRACKING_TIMEOUT = 5  # seconds for the tracking server's /health


def check(cfg, output_dir=None):
    """Runs every check; returns a few lines describing what was checked.

    Example:
    >>> from hydra import compose, initialize_config_dir
    >>> schema.register()
    >>> with initialize_config_dir(str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
    ...     cfg = compose("train")
    >>> check(cfg)[0]
    "backbone.preset='gpt2_tiny_en': GPT2Backbone (ours format), 256 positions"
    """
    schema.validate(cfg)
    facts = preset(cfg.backbone.preset)
    family = facts.family
    lines = [f"backbone.preset={cfg.backbone.preset!r}: "
             + (f"{family.class_name} ({facts.format} format), {facts.max_positions or 'unlimited'} positions"
                if facts.format else "not cached yet: downloaded and checked when the run starts")]
    if family is not None:
        task_fits(cfg.task, family, cfg.backbone.preset)
        export_fits(cfg.tracking, cfg.task, family, facts.directory)
        lora_fits(cfg.lora, family)
    if facts.max_positions and cfg.trainer.sequence_length > facts.max_positions:
        raise ConfigError(
            f"trainer.sequence_length={cfg.trainer.sequence_length} is longer than the "
            f"{facts.max_positions} positions of backbone.preset={cfg.backbone.preset!r} "
            f"({facts.family.max_positions[facts.format]} in its config.json): set "
            f"trainer.sequence_length={facts.max_positions} or less.")
    lines += cluster_fits(cfg.trainer)
    lines += data_fits(cfg.data, cfg.task)
    lines += chat_template_fits(cfg.data, facts)
    lines += writable(cfg.tracking, output_dir)
    lines += tracking_reachable(cfg.tracking)
    return lines


def preset(name):
    """The `PresetFacts` of `backbone.preset`, errors named by that key."""
    try:
        return read_preset_facts(name)
    except BackboneLabError as e:
        raise ConfigError(f"backbone.preset={name!r}: {e}") from None


def task_fits(task_cfg, family, preset_name):
    if task_cfg.name == "causal_lm" and family.is_encoder:
        raise ConfigError(
            f"task=causal_lm needs a decoder, but backbone.preset={preset_name!r} is a "
            f"{family.class_name}, a bidirectional encoder: it cannot predict the next token. "
            "Use task=classifier with it, or a decoder preset (GPT-2, Llama, Gemma) for causal_lm.")


def export_fits(tracking_cfg, task_cfg, family, directory=None):
    """transformers' decoder classification heads (`score`) have no bias, and pool the
    rightmost token that is not `pad_token_id`: a decoder classifier exports only without
    a bias, and with a pad token other than its eos (the token ours pools), as
    `backbones.formats.transformers` refuses; say it now rather than after training."""
    if not ("transformers" in tracking_cfg.export and task_cfg.name == "classifier" and not family.is_encoder):
        return
    if task_cfg.head_bias:
        raise ConfigError(
            f"tracking.export=[transformers] of a {family.class_name} classifier: transformers' "
            "*ForSequenceClassification head of a decoder has no bias, so a trained bias could not be carried. "
            "Add task.head_bias=false (a head without bias, as transformers has), or drop transformers from "
            "tracking.export.")
    tokenizer = Tokenizer.from_directory(directory) if directory is not None else None
    if tokenizer is None:
        return  # not cached yet, or a tokenizer we convert: the export checks it
    pad = tokenizer.special_token_id("pad")
    pad = 0 if pad is None else pad  # no pad token: our packing pads with 0, and the export says so
    if pad == tokenizer.special_token_id("eos"):
        raise ConfigError(
            f"tracking.export=[transformers] of a {family.class_name} classifier: the tokenizer of {directory} "
            f"pads with its eos token (id {pad}), so transformers' classifier would take the eos ours pools "
            "for padding and pool the token before it. Use a preset whose tokenizer has a pad token other "
            "than its eos, or drop transformers from tracking.export (tracking.export=[peft] keeps the adapter).")


def lora_fits(lora_cfg, family):
    """LoRA targets must be names the family knows."""
    if lora_cfg.rank is None:
        return
    if not family.lora_targets:
        raise ConfigError(f"lora.rank={lora_cfg.rank}, but {family.class_name} has no attention "
                          "projections to adapt: set lora.rank=null.")
    unknown = [t for t in lora_cfg.targets if t not in family.lora_targets]
    if unknown:
        raise ConfigError(f"lora.targets has {unknown}, unknown to {family.class_name}; "
                          f"choose from {sorted(family.lora_targets)}.")


def cluster_fits(trainer_cfg):
    """`multi_worker` needs a cluster (TF_CONFIG or SLURM) whose workers split the global batch evenly."""
    if trainer_cfg.distribution != "multi_worker":
        return []
    source, workers = distribution.cluster_size()
    if source is None:
        raise ConfigError(
            "trainer.distribution=multi_worker, but this process is in no cluster: neither TF_CONFIG nor "
            "SLURM's variables (SLURM_JOB_ID, SLURM_NTASKS) are set. On one machine: python "
            "scripts/launch_local.py --workers 2 -- train.py trainer.distribution=multi_worker ...; on SLURM: "
            "srun python train.py ... (README, More than one machine).")
    if trainer_cfg.batch_size % workers:
        raise ConfigError(
            f"trainer.batch_size={trainer_cfg.batch_size} is the global batch, split evenly over the {workers} "
            f"workers of the cluster ({source}): make it a multiple of {workers}.")
    return [f"trainer.distribution=multi_worker: {workers} workers from {source}"]


def data_fits(data_cfg, task_cfg):
    """Data files exist, have the named columns, and labels fit `num_classes`."""
    if data_cfg.source == "huggingface":
        data.require_datasets()
        return [f"data.name={data_cfg.name!r}: a Hugging Face dataset, loaded when the run starts"]
    lines = []
    example_format = data.example_format(data_cfg)
    if example_format == "instruction":
        data.instruction_prompt(data_cfg, "instruction", "input")
        data.instruction_prompt(data_cfg, "instruction")
    labels = set()
    for key, path in data.files(data_cfg):
        fmt = data.file_format(path, data_cfg)
        found = _columns(path, fmt)
        for field, column in data.required_columns(data_cfg).items():
            if column not in found:
                raise ConfigError(f"data.{field}={column!r} is not a column of {path} ({key}); "
                                  f"its columns: {sorted(found)}. Set data.{field} to one of them "
                                  f"(data.format={example_format}).")
        if example_format == "chat" and fmt in ("jsonl", "json"):  # the first example's messages, cheaply
            data.to_messages(next(data.read_jsonl(path))[data_cfg.messages_column],
                             f"{path}, example 0 (data.messages_column={data_cfg.messages_column!r})")
        if example_format == "classification" and path.stat().st_size <= MAX_LABEL_SCAN_BYTES:
            labels |= _label_values(path, fmt, data_cfg.label_column)
        lines.append(f"{key}: {path} ({fmt}), columns {sorted(found)}")
    if labels and task_cfg.name == "classifier":
        _labels_fit(labels, task_cfg.num_classes)
        lines.append(f"labels: {len(labels)} distinct values for task.num_classes={task_cfg.num_classes}")
    return lines


def chat_template_fits(data_cfg, facts):
    """format=chat needs a chat template that compiles: `data.chat_template`,
    or the preset's own (tokenizer_config.json / chat_template.jinja)."""
    if data.example_format(data_cfg) != "chat":
        return []
    template, where = data_cfg.chat_template, "data.chat_template"
    if not template:
        directory = facts.directory
        if directory is None or not (Path(directory) / TOKENIZER_FILE).is_file():
            return []  # not cached yet, or a tokenizer we convert: checked when the run renders
        config_path = Path(directory) / TOKENIZER_CONFIG_FILE
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        template, where = chat_template_from(config, directory), f"{directory}/{TOKENIZER_CONFIG_FILE}"
        if not template:
            raise ConfigError(
                f"data.format=chat renders each conversation with the model's chat template, but "
                f"{where} has no `chat_template`. Give one: data.chat_template='<Jinja template>' "
                "(it is then saved with the trained model's tokenizer).")
    try:
        compile_template(template)
    except ChatTemplateError as e:
        raise ConfigError(f"{where}: {e}") from None
    return [f"chat template: from {where}"]


def _columns(path, fmt):
    if fmt in ("jsonl", "json"):
        return set(next(data.read_jsonl(path), {}))
    if fmt in ("csv", "tsv"):
        import csv

        with open(path, newline="", encoding="utf-8") as f:
            return set(next(csv.reader(f, delimiter="\t" if fmt == "tsv" else ","), []))
    import pyarrow.parquet

    return set(pyarrow.parquet.read_schema(path).names)


def _label_values(path, fmt, column):
    if fmt in ("jsonl", "json"):
        return {_hashable(r.get(column)) for r in data.read_jsonl(path)}
    if fmt in ("csv", "tsv"):
        import csv

        with open(path, newline="", encoding="utf-8") as f:
            return {row.get(column) for row in csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")}
    return set()  # parquet: checked when the run loads it


def _hashable(value):
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _labels_fit(labels, num_classes):
    values = {_as_int(v) for v in labels}
    if None in values:  # string labels: one class per distinct value
        if len(labels) > num_classes:
            raise ConfigError(
                f"The data has {len(labels)} distinct labels ({sorted(map(str, labels))[:8]}), more than "
                f"task.num_classes={num_classes}: set data.num_classes={len(labels)}.")
        return
    outside = sorted(v for v in values if not 0 <= v < num_classes)
    if outside:
        raise ConfigError(
            f"Labels {outside[:5]} are outside [0, task.num_classes={num_classes}): set "
            f"data.num_classes={max(values) + 1} (labels must be 0 .. num_classes-1).")


def _as_int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def writable(tracking_cfg, output_dir):
    """The run directory and, for the local store, the current directory."""
    places = [("the run directory (hydra.run.dir)", Path(output_dir))] if output_dir else []
    if tracking_cfg.uri is None:
        places.append(("the current directory, which holds the MLflow store (mlflow.db, mlruns/) "
                       "and the checkpoints (.checkpoints/)", Path.cwd()))
    for what, path in places:
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{path} is not writable: it is {what}. Run from a writable directory "
                              "or point hydra.run.dir / tracking.uri elsewhere.")
    return []


def tracking_reachable(tracking_cfg):
    """A tracking server must answer /health within `TRACKING_TIMEOUT` s: MLflow
    itself would retry for minutes, silently, before the run even starts."""
    uri = tracking_cfg.uri
    if not uri or not uri.startswith(("http://", "https://")):
        return []
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=TRACKING_TIMEOUT)
    except (urllib.error.URLError, OSError) as e:
        where = urllib.parse.urlsplit(uri)
        raise ConfigError(
            f"tracking.uri={uri} does not answer ({getattr(e, 'reason', e)}; asked {uri.rstrip('/')}/health "
            f"with a {TRACKING_TIMEOUT} s timeout). Start the server (mlflow server --host {where.hostname} "
            f"--port {where.port or (443 if where.scheme == 'https' else 80)}), fix tracking.uri, or log "
            "locally with tracking=local (a sqlite store in this directory).") from None
    return [f"tracking.uri={uri}: reachable"]
