"""Loading text datasets for an experiment: bundled, local files, Hugging Face.

`load(cfg.data, seed)` returns train and validation `Split`s of raw strings
and integer labels (None for language modelling). String labels are mapped
to integers in sorted order; the mapping is kept for tracking.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from lab.schema import ConfigError

BUNDLED_DIR = Path(__file__).parent / "datasets"


@dataclasses.dataclass
class Split:
    texts: list
    labels: object = None  # np.ndarray of int32, or None
    label_names: list = None  # label id -> original value, when labels were strings

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
    if cfg.label_column is not None:
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
    """The format of a data file: `data.format`, or its suffix."""
    fmt = cfg.format or path.suffix.lstrip(".").lower()
    if fmt not in ("jsonl", "json", "csv", "tsv", "parquet"):
        raise ConfigError(f"{path}: unknown format {fmt!r}; set data.format to csv, tsv, jsonl or parquet.")
    return fmt


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
    for key in ("text_column", "label_column"):
        column = cfg[key]
        if column is not None and column not in table:
            raise ConfigError(f"data.{key}={column!r} is not a column of {where}; columns: {sorted(table)}.")
    texts = ["" if t is None else str(t) for t in table[cfg.text_column]]
    labels = list(table[cfg.label_column]) if cfg.label_column else None
    return Split(texts, labels)


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
    return Split([data.texts[i] for i in index], labels, data.label_names)


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
        out.append(Split(split.texts, labels, names))
    bad = [int(v) for v in np.concatenate([s.labels for s in out]) if not 0 <= v < (cfg.num_classes or 0)]
    if cfg.num_classes is not None and bad:
        raise ConfigError(f"Labels {sorted(set(bad))[:5]} are outside [0, data.num_classes={cfg.num_classes}); "
                          "set data.num_classes to the number of classes.")
    return out
