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
    assert keras_stream[0] == list(stream.epoch(1))[:5] != first  # on into the next pass
    assert keras_stream.batches.position == {"epoch": 1, "examples": 5}
    keras_stream.skip_to(8 + 3)  # a resume after 11 batches: batch 3 of the second pass
    assert keras_stream[0] == list(stream.epoch(1))[15:20]


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


@pytest.mark.filterwarnings("ignore::tasks.TruncationWarning")
@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
def test_mid_epoch_checkpoint_resumes_at_the_next_batch(tmp_path, streamed):
    """Interrupted at step 8 of 12 (epoch 2 of 2, checkpoint every 4 steps): the resumed run trains the
    remaining batches in the same order and ends with the uninterrupted run's weights."""
    import keras

    import backbones
    import tasks
    from lab import checkpoint, training

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:26]))  # 6 batches of 4, 2 left over

    def make():
        keras.utils.set_random_seed(0)
        lm = tasks.CausalLM(backbones.Backbone.from_preset("gpt2_tiny_en"), sequence_length=12)
        lm.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
        if streamed:
            stream = streaming.ExampleStream(path, buffer_size=8, seed=3)
            return lm, streaming.KerasStream(streaming.StreamBatches(stream, lm.preprocessor.causal_lm, 4), 6)
        return lm, training.EpochBatches(lm.preprocessor.causal_lm(TEXTS[:26]), 4, seed=3)

    def fit(lm, batches, callbacks, initial_epoch=0):
        lm.fit(batches, epochs=2, initial_epoch=initial_epoch, steps_per_epoch=6, shuffle=False, verbose=0,
               callbacks=[*callbacks, training.StepLogger(10**9, 1, max_steps=12)])

    straight, batches = make()
    fit(straight, batches, [])

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == 8:
                raise KeyboardInterrupt

    interrupted, batches = make()
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, batches, [checkpoint.EpochCheckpoint(tmp_path / "ckpt", "run", every_n_steps=4), Interrupt()])
    state = checkpoint.read_state(tmp_path / "ckpt")
    assert state["epoch"] == 1 and state["file"] == "epoch-0001-step-00000008.npz"

    resumed, batches = make()
    start = checkpoint.restore(resumed, tmp_path / "ckpt", None, state, batches)
    fit(resumed, batches, [], initial_epoch=start)
    assert int(resumed.optimizer.iterations) == 12
    for a, b in zip(straight.trainable_weights, resumed.trainable_weights, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, err_msg=a.path)
