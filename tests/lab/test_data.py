"""lab.data: bundled, local files (csv, jsonl, parquet), Hugging Face datasets; errors."""

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from lab import data
from lab.schema import ConfigError, DataConfig


def cfg(**kwargs):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), kwargs)


ROWS = [{"review": f"text {i}", "stars": ["bad", "ok", "good"][i % 3]} for i in range(30)]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_local_files_with_string_labels(tmp_path, fmt):
    path = tmp_path / f"reviews.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    else:
        getattr(pd.DataFrame(ROWS), "to_csv" if fmt == "csv" else "to_parquet")(path, index=False)
    train, val = data.load(cfg(source="local", path=str(path), text_column="review", label_column="stars",
                               num_classes=3, validation_fraction=0.2), seed=0)
    assert (len(train), len(val)) == (24, 6)
    assert train.label_names == ["bad", "good", "ok"]  # sorted: ids are stable across runs
    text_to_label = {r["review"]: r["stars"] for r in ROWS}
    assert all(train.label_names[label] == text_to_label[text] for text, label in zip(train.texts, train.labels))


def test_split_is_seeded_and_caps_apply():
    a = data.load(cfg(name="sentiment", num_classes=2), seed=1)[0].texts
    b = data.load(cfg(name="sentiment", num_classes=2), seed=1)[0].texts
    c = data.load(cfg(name="sentiment", num_classes=2), seed=2)[0].texts
    assert a == b and a != c
    train, val = data.load(cfg(name="sentiment", num_classes=2, max_train_samples=10, max_validation_samples=5), seed=1)
    assert (len(train), len(val)) == (10, 5) and train.labels.dtype == np.int32


def test_separate_validation_file(tmp_path):
    for name in ("train", "val"):
        pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 0]}).to_csv(tmp_path / f"{name}.csv", index=False)
    train, val = data.load(cfg(source="local", path=str(tmp_path / "train.csv"),
                               validation_path=str(tmp_path / "val.csv"), num_classes=2), seed=0)
    assert (len(train), len(val)) == (3, 3)


def test_errors_name_the_key(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [0, 1, 5, 1]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"Labels \[5\] are outside .*data.num_classes=2"):
        data.load(cfg(source="local", path=str(path), num_classes=2), seed=0)
    with pytest.raises(ConfigError, match="data.text_column='body' is not a column.*columns: \\['label', 'text'\\]"):
        data.load(cfg(source="local", path=str(path), text_column="body", num_classes=6), seed=0)
    with pytest.raises(ConfigError, match="does not exist"):
        data.load(cfg(source="local", path=str(tmp_path / "nope.csv")), seed=0)
    with pytest.raises(ConfigError, match="unknown file type 'xlsx'.*data.file_format"):
        (tmp_path / "d.xlsx").write_text("x")
        data.load(cfg(source="local", path=str(tmp_path / "d.xlsx")), seed=0)
    with pytest.raises(ConfigError, match="not a bundled dataset.*sentiment"):
        data.load(cfg(name="imdb"), seed=0)


def test_language_modelling_has_no_labels():
    train, val = data.load(cfg(name="sentiment", label_column=None), seed=0)
    assert train.labels is None and len(train) == 1600


def test_huggingface_datasets_source(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": [i % 2 for i in range(20)]}).to_csv(
        folder / "train.csv", index=False)
    train, val = data.load(cfg(source="huggingface", name=str(folder), num_classes=2), seed=0)
    assert (len(train), len(val)) == (16, 4)
    with pytest.raises(ConfigError, match="Could not load Hugging Face dataset"):
        data.load(cfg(source="huggingface", name=str(folder), split="nope", num_classes=2), seed=0)


def test_malformed_jsonl_names_its_line(tmp_path):
    lines = [json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(20)]
    lines[12] = '{"text": "t12", "label": 0,}'
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"d.jsonl, line 13: not valid JSON"):
        data.load(cfg(source="local", path=str(tmp_path / "d.jsonl"), num_classes=2), seed=0)
