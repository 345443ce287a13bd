"""Epoch checkpoints (lab.checkpoint): what they hold, restoring, damaged files, a changed base."""

import json

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

import backbones
import tasks
from lab import artifacts, checkpoint

TEXTS, LABELS = ["a great film", "an awful film", "fine", "so dull"], [1, 0, 1, 0]


def make_task(lora=True, dtype="float32"):
    keras.utils.set_random_seed(0)
    backbone = backbones.Backbone.from_preset("gpt2_tiny_en", dtype=dtype)
    if lora:
        backbone.enable_lora(2)
    task = tasks.TextClassifier(backbone, num_classes=2, sequence_length=16)
    task.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    base = artifacts.frozen_base(OmegaConf.create({"preset": "gpt2_tiny_en", "load_weights": True}), backbone)
    return task, base


def train_epochs(task, directory, base, epochs):
    task.fit(TEXTS, LABELS, batch_size=2, epochs=epochs, verbose=0,
             callbacks=[checkpoint.EpochCheckpoint(directory, "run", base)])


def state_of(model):
    """Every variable of the model and its optimizer, in order (names differ between two models of one process)."""
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.variables + model.optimizer.variables]


def test_lora_checkpoint_holds_only_what_changes_and_restores_it(tmp_path):
    task, base = make_task()
    train_epochs(task, tmp_path, base, 2)
    state = checkpoint.read_state(tmp_path)
    assert state["epoch"] == 2 and state["scope"] == "trainable"
    assert not any(p.endswith("/kernel") and "logits" not in p for p in state["paths"])  # no frozen weights
    assert any("lora_kernel_a" in p for p in state["paths"]) and any("seed_generator" in p for p in state["paths"])
    assert state["base"]["files"]["model.weights.h5"]["sha256"]
    frozen_bytes = sum(w.numpy().nbytes for w in task.backbone.non_trainable_weights)
    assert (tmp_path / state["file"]).stat().st_size < 0.3 * frozen_bytes
    assert sorted(p.name for p in tmp_path.glob("epoch-*.npz")) == ["epoch-0001.npz", "epoch-0002.npz"]

    fresh, fresh_base = make_task()
    assert checkpoint.restore(fresh, tmp_path, fresh_base) == 2
    for expected, got in zip(state_of(task), state_of(fresh), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_full_fine_tune_checkpoints_everything_in_bfloat16(tmp_path):
    task, base = make_task(lora=False, dtype="bfloat16")
    assert base is None  # its backbone weights train
    train_epochs(task, tmp_path, base, 1)
    state = checkpoint.read_state(tmp_path)
    assert state["scope"] == "all" and "bfloat16" in state["dtypes"]
    fresh, _ = make_task(lora=False, dtype="bfloat16")
    checkpoint.restore(fresh, tmp_path, None)
    for expected, got in zip(state_of(task), state_of(fresh), strict=True):
        np.testing.assert_array_equal(got, expected)


def cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_cut_file_falls_back_to_the_previous_epoch(tmp_path, capsys):
    task, base = make_task()
    train_epochs(task, tmp_path, base, 2)
    cut(tmp_path / "epoch-0002.npz")
    state = checkpoint.read_state(tmp_path)
    assert state["epoch"] == 1 and state["file"] == "epoch-0001.npz"
    assert "epoch-0002.npz has" in capsys.readouterr().out
    fresh, fresh_base = make_task()
    assert checkpoint.restore(fresh, tmp_path, fresh_base, state) == 1


def test_a_cut_file_without_fallback_is_one_clear_error(tmp_path):
    task, base = make_task()
    train_epochs(task, tmp_path, base, 1)
    cut(tmp_path / "epoch-0001.npz")
    with pytest.raises(checkpoint.CheckpointError, match=r"epoch-0001.npz has \d+ bytes.*rm -r"):
        checkpoint.read_state(tmp_path)
    (tmp_path / "state.json").write_text('{"run_id": "r", "ep')  # a state file cut short
    with pytest.raises(checkpoint.CheckpointError, match="state.json is not a checkpoint state"):
        checkpoint.read_state(tmp_path)


def test_a_damaged_member_is_named_not_a_bare_zip_error(tmp_path):
    task, base = make_task()
    train_epochs(task, tmp_path, base, 1)
    path = tmp_path / "epoch-0001.npz"
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # same size, intact zip directory: a CRC error on read
    path.write_bytes(bytes(data))
    fresh, fresh_base = make_task()
    with pytest.raises(checkpoint.CheckpointError, match="epoch-0001.npz could not be read"):
        checkpoint.restore(fresh, tmp_path, fresh_base)


def test_resume_refuses_another_base(tmp_path):
    task, base = make_task()
    train_epochs(task, tmp_path, base, 1)
    state_path = tmp_path / "state.json"
    state = json.loads(state_path.read_text())
    state["base"]["files"]["model.weights.h5"]["sha256"] = "0" * 64  # the checkpoint was made on another base
    state_path.write_text(json.dumps(state))
    fresh, fresh_base = make_task()
    with pytest.raises(checkpoint.CheckpointError, match="same base"):
        checkpoint.restore(fresh, tmp_path, fresh_base)
