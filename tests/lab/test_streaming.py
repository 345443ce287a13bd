"""The streaming reader: chunked files, seeded shuffle buffer, resume mid-epoch."""

import json

import numpy as np
import pandas as pd
import pytest

from lab import streaming
from lab.schema import ConfigError

TEXTS = [f"example {i} " + "word " * (i % 7) for i in range(250)]


@pytest.fixture(params=["jsonl", "csv", "parquet"])
def data_file(request, tmp_path):
    path = tmp_path / f"data.{request.param}"
    if request.param == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS)))
    elif request.param == "csv":
        pd.DataFrame({"text": TEXTS, "label": [i % 2 for i in range(250)]}).to_csv(path, index=False)
    else:
        pd.DataFrame({"text": TEXTS}).to_parquet(path)
    return path


def test_file_larger_than_a_chunk_streams_every_example_once(data_file):
    stream = streaming.ExampleStream(data_file, buffer_size=0, chunk_rows=32)  # 250 rows: 8 chunks
    assert list(stream.epoch(0)) == TEXTS and stream.count() == 250
    # A held-out part for validation: disjoint, together everything, whatever the chunk size.
    train = list(streaming.ExampleStream(data_file, buffer_size=0, chunk_rows=32, holdout=0.2).epoch(0))
    val = streaming.ExampleStream(data_file, chunk_rows=100, holdout=0.2, part="validation").split().texts
    assert sorted(train + val) == sorted(TEXTS) and 25 < len(val) < 75


def test_resumed_mid_epoch_gives_the_same_remaining_examples_in_order(data_file):
    def run(stop_after=None, position=None):
        batches = streaming.StreamBatches(streaming.ExampleStream(data_file, buffer_size=40, seed=7, chunk_rows=32),
                                          list, batch_size=16, **(position or {}))
        seen = []
        while batches.epoch < 2:  # epochs 0 and 1
            while True:
                if stop_after is not None and len(seen) == stop_after:
                    return seen, batches.position
                try:
                    seen.append(batches.next_batch())
                except StopIteration:
                    break
            batches.next_epoch()
        return seen, batches.position

    full, _ = run()
    assert len(full) == 2 * (250 // 16) and full[0] != full[250 // 16]  # reshuffled per epoch
    head, position = run(stop_after=20)  # interrupted in the second epoch
    assert position == {"epoch": 1, "examples": (20 - 250 // 16) * 16}
    resumed, _ = run(position={"epoch": position["epoch"], "skip": position["examples"]})
    assert head + resumed == full


def test_shuffle_buffer_is_determined_by_the_seed():
    first = list(streaming.shuffle_buffer(range(1000), 64, [3, 0]))
    assert first == list(streaming.shuffle_buffer(range(1000), 64, [3, 0]))
    assert first != list(streaming.shuffle_buffer(range(1000), 64, [4, 0]))
    assert first != list(range(1000)) and sorted(first) == list(range(1000))


def test_a_missing_column_names_the_key(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"body": "x"}\n')
    with pytest.raises(ConfigError, match="data.text_column='text' is not a column of .*d.jsonl, rows 0..0"):
        list(streaming.ExampleStream(path).epoch(0))


def test_keras_stream_serves_in_order_and_a_peek_does_not_consume(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:40]))
    stream = streaming.ExampleStream(path, buffer_size=8, seed=1)
    keras_stream = streaming.KerasStream(streaming.StreamBatches(stream, list, batch_size=5), steps_per_epoch=8)
    first = keras_stream[0]
    assert keras_stream[0] == first and [keras_stream[i] for i in range(8)][0] == first  # Keras peeks at batch 0
    with pytest.raises(IndexError, match="read in order only"):
        keras_stream[0]
    keras_stream.on_epoch_end()
    assert keras_stream.batches.position == {"epoch": 1, "examples": 0}
    assert keras_stream[0] == list(stream.epoch(1))[:5] != first


def test_train_py_streams_a_local_file(tmp_path):
    from tests.lab.test_train import FAST, runs, train

    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    result = train(tmp_path, *FAST, "task=causal_lm", "data=local", f"data.path={path}", "data.label_column=null",
                   "data.streaming=true", "data.validation_fraction=0.1", "trainer.max_steps=3")
    assert "val_loss" in result.stdout
    (run,) = runs(tmp_path)
    assert run.info.status == "FINISHED" and np.isfinite(run.data.metrics["final_val_loss"])


@pytest.mark.parametrize("overrides, message", [
    ({"data": {"packing": True}}, "data.packing=true packs examples for language modelling"),
    ({"data": {"streaming": True}}, "data.streaming=true streams examples for language modelling"),
    ({"task": {"name": "causal_lm"}, "data": {"streaming": True, "packing": True}}, "not supported yet"),
])
def test_impossible_packing_and_streaming_combinations_fail_naming_the_key(overrides, message):
    from omegaconf import OmegaConf

    from lab import schema

    cfg = OmegaConf.merge(OmegaConf.structured(schema.TrainConfig), {"backbone": {"preset": "gpt2_tiny_en"},
                                                                      "task": {"num_classes": 2}}, overrides)
    with pytest.raises(ConfigError, match=message):
        schema.validate(cfg)
