"""Loading text datasets for an experiment: bundled, local files, Hugging Face.

`load(cfg.data, seed)` returns train and validation `Split`s of examples
and integer labels (None for language modelling). String labels are mapped
to integers in sorted order; the mapping is kept for tracking. What an
example is follows `data.format`: a string (`text`, `classification`), an
`{"prompt", "answer"}` dict with the prompt template filled (`instruction`),
or a list of `{"role", "content"}` messages (`chat`; rendered with the
model's chat template by `lab.tasks`, which has the tokenizer).
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from backbones.chat_template import ChatTemplateError, normalize_messages
from lab.schema import ConfigError

BUNDLED_DIR = Path(__file__).parent / "datasets"


@dataclasses.dataclass
class Split:
    texts: list  # one example each: str, {"prompt", "answer"} (instruction) or messages (chat)
    labels: object = None  # np.ndarray of int32, or None
    label_names: list = None  # label id -> original value, when labels were strings
    format: str = "text"  # text | classification | instruction | chat

    def __len__(self):
        return len(self.texts)


def load(cfg, seed):
    """Train and validation splits for `cfg` (the `data` config node).

    Example:
    >>> from omegaconf import OmegaConf
    >>> from lab.schema import DataConfig
    >>> cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {"name": "sentiment", "num_classes": 2})
    >>> train, val = load(cfg, seed=0)
    >>> len(train), len(val)
    (1600, 400)
    """
    if cfg.source in ("bundled", "local"):
        paths = [path for _, path in files(cfg)]
        train = _read_file(paths[0], cfg)
        validation = _read_file(paths[1], cfg) if len(paths) > 1 else None
    else:
        train, validation = _read_huggingface(cfg)
    if validation is None:
        train, validation = _split(train, cfg.validation_fraction, seed)
    train, validation = _cap(train, cfg.max_train_samples), _cap(validation, cfg.max_validation_samples)
    if example_format(cfg) == "classification":
        train, validation = _encode_labels(train, validation, cfg)
    for name, split in (("training", train), ("validation", validation)):
        if len(split) == 0:
            raise ConfigError(f"The {name} split is empty: check data.path / data.validation_fraction / caps.")
    return train, validation


def _bundled(name):
    path = BUNDLED_DIR / f"{name}.jsonl"
    if not path.exists():
        names = sorted(p.stem for p in BUNDLED_DIR.glob("*.jsonl"))
        raise ConfigError(f"data.name={name!r} is not a bundled dataset; bundled: {names}.")
    return path


def files(cfg):
    """`(key, path)` of each data file a bundled or local `data` config reads.

    Example:
    >>> from omegaconf import OmegaConf
    >>> [(k, p.name) for k, p in files(OmegaConf.create({"source": "bundled", "name": "sentiment"}))]
    [('data.name', 'sentiment.jsonl')]
    """
    if cfg.source == "bundled":
        return [("data.name", _bundled(cfg.name))]
    if cfg.source != "local":
        return []
    paths = [("data.path", cfg.path)] + ([("data.validation_path", cfg.validation_path)] if cfg.validation_path else [])
    out = []
    for key, path in paths:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"Data file {path} does not exist ({key}). Check the path; a relative "
                              f"path is relative to the directory you run from ({Path.cwd()}).")
        out.append((key, path))
    return out


def file_format(path, cfg):
    """The type of a data file: `data.file_format`, or its suffix."""
    fmt = cfg.get("file_format") or path.suffix.lstrip(".").lower()
    if fmt not in ("jsonl", "json", "csv", "tsv", "parquet"):
        raise ConfigError(f"{path}: unknown file type {fmt!r}; set data.file_format to csv, tsv, jsonl or parquet.")
    return fmt


def example_format(cfg):
    """What an example is: `data.format`, or classification when
    `data.label_column` is set and text otherwise.

    Example:
    >>> from omegaconf import OmegaConf
    >>> example_format(OmegaConf.create({"format": None, "label_column": None}))
    'text'
    """
    return cfg.get("format") or ("classification" if cfg.label_column is not None else "text")


def required_columns(cfg):
    """`{data.<key>: column}` of the columns the example format reads.

    Example:
    >>> from omegaconf import OmegaConf
    >>> required_columns(OmegaConf.create({"format": "chat", "messages_column": "conversations"}))
    {'messages_column': 'conversations'}
    """
    fmt = example_format(cfg)
    keys = {"text": ["text_column"], "classification": ["text_column", "label_column"],
            "instruction": ["instruction_column", "input_column", "output_column"],
            "chat": ["messages_column"]}[fmt]
    return {key: cfg[key] for key in keys if cfg.get(key) is not None}


def instruction_prompt(cfg, instruction, input_text=""):
    """The prompt of an instruction example: `data.prompt_template` filled
    with `{instruction}` and `{input}`, or `data.prompt_template_no_input`
    when the input is empty.

    Example:
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"prompt_template": "Q: {instruction} ({input})\\nA:",
    ...                         "prompt_template_no_input": "Q: {instruction}\\nA:"})
    >>> instruction_prompt(cfg, "Add 2 and 2.")
    'Q: Add 2 and 2.\\nA:'
    """
    key = "prompt_template" if input_text else "prompt_template_no_input"
    try:
        return cfg[key].format(instruction=instruction, input=input_text)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"data.{key}={cfg[key]!r} is not a template of {{instruction}} and {{input}} "
                          f"({type(e).__name__}: {e}). Write other braces as {{{{ and }}}}.") from None


def to_messages(value, where):
    """A chat example's messages, as `{"role", "content"}` dicts (sharegpt's
    `{"from", "value"}` accepted); a bad value raises `ConfigError` naming `where`."""
    if isinstance(value, str):  # a CSV cell holding JSON
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"{where}: a chat example must be a list of messages, got the string "
                              f"{value[:60]!r}.") from None
    if hasattr(value, "tolist"):  # Parquet gives NumPy arrays of dicts
        value = value.tolist()
    try:
        return normalize_messages(value, where)
    except ChatTemplateError as e:
        raise ConfigError(str(e)) from None


def read_jsonl(path):
    r"""Yields the records of a JSON-lines file; a malformed line raises
    `ConfigError` naming the file and the line number.

    Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "d.jsonl"
    >>> _ = path.write_text('{"text": "a"}\n{"text": "b",}\n')
    >>> try:
    ...     list(read_jsonl(path))
    ... except ConfigError as e:
    ...     print(str(e).split(", ", 1)[1])
    line 2: not valid JSON (Expecting property name enclosed in double quotes at column 14). Fix or remove that line.
    """
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}, line {number}: not valid JSON ({e.msg} at column {e.colno}). "
                                  "Fix or remove that line.") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{path}, line {number}: expected a JSON object "
                                  f'({{"text": ..., "label": ...}}), got {type(record).__name__}.')
            yield record


def _read_file(path, cfg):
    fmt = file_format(path, cfg)
    try:
        if fmt in ("jsonl", "json"):
            records = list(read_jsonl(path))
            columns = {k for r in records[:1] for k in r}
            table = {k: [r.get(k) for r in records] for k in columns}
        else:
            import pandas as pd

            frame = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, sep="\t" if fmt == "tsv" else ",")
            table = {k: frame[k].tolist() for k in frame.columns}
    except (ValueError, OSError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"Could not read {path} as {fmt}: {e}") from e
    return _to_split(table, cfg, str(path))


def _to_split(table, cfg, where):
    for key, column in required_columns(cfg).items():
        if column not in table:
            raise ConfigError(f"data.{key}={column!r} is not a column of {where}; columns: {sorted(table)}. "
                              f"Set data.{key} (data.format={example_format(cfg)}).")
    fmt = example_format(cfg)
    if fmt == "instruction":
        inputs = table[cfg.input_column] if cfg.input_column else [None] * len(table[cfg.instruction_column])
        texts = [{"prompt": instruction_prompt(cfg, _str(i), _str(x)), "answer": _str(o)}
                 for i, x, o in zip(table[cfg.instruction_column], inputs, table[cfg.output_column])]
    elif fmt == "chat":
        texts = [to_messages(m, f"{where}, example {n} (data.messages_column={cfg.messages_column!r})")
                 for n, m in enumerate(table[cfg.messages_column])]
    else:
        texts = [_str(t) for t in table[cfg.text_column]]
    labels = list(table[cfg.label_column]) if fmt == "classification" else None
    return Split(texts, labels, format=fmt)


def _str(value):
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def require_datasets():
    from lightning_utilities.core.imports import RequirementCache

    if not RequirementCache("datasets"):
        raise ConfigError("data.source=huggingface needs the `datasets` package: pip install datasets.")


def _read_huggingface(cfg):
    require_datasets()
    import datasets

    def split(name):
        try:
            data = datasets.load_dataset(cfg.name, split=name)
        except Exception as e:  # offline and not cached, unknown name or split...
            raise ConfigError(f"Could not load Hugging Face dataset {cfg.name!r} split {name!r}: {e}. "
                              "Offline, it must be in the datasets cache (HF_DATASETS_OFFLINE=1).") from e
        return _to_split({c: data[c] for c in data.column_names}, cfg, f"{cfg.name}[{name}]")

    validation = split(cfg.validation_split_name) if cfg.validation_split_name else None
    return split(cfg.split), validation


def _split(data, fraction, seed):
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, int(round(len(data) * fraction)))
    return _take(data, order[n_val:]), _take(data, order[:n_val])


def _take(data, index):
    labels = None if data.labels is None else [data.labels[i] for i in index]
    return Split([data.texts[i] for i in index], labels, data.label_names, data.format)


def _cap(data, limit):
    return data if limit is None or len(data) <= limit else _take(data, np.arange(limit))


def _encode_labels(train, validation, cfg):
    values = list(train.labels) + list(validation.labels)
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
        raise ConfigError(f"data.label_column={cfg.label_column!r} has missing values; clean the data.")
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer()) for v in values):
        names = None
        encode = int
    else:
        names = sorted({str(v) for v in values})
        encode = {n: i for i, n in enumerate(names)}.__getitem__
    out = []
    for split in (train, validation):
        labels = np.array([encode(v if names is None else str(v)) for v in split.labels], "int32")
        out.append(Split(split.texts, labels, names, split.format))
    bad = [int(v) for v in np.concatenate([s.labels for s in out]) if not 0 <= v < (cfg.num_classes or 0)]
    if cfg.num_classes is not None and bad:
        raise ConfigError(f"Labels {sorted(set(bad))[:5]} are outside [0, data.num_classes={cfg.num_classes}); "
                          "set data.num_classes to the number of classes.")
    return out
