"""Epoch checkpoints, and resuming an interrupted run where it stopped.

A run's checkpoint lives in `<cwd>/.checkpoints/<key>/`, where the key is a
hash of the resolved config (tracking names aside): re-running the same
command finds it. It holds every variable of the model (seed-generator
states included, so dropout continues identically) and of the optimizer,
the epoch reached and the MLflow run id to continue. It is removed when the
run completes.
"""

import hashlib
import json
import os
from pathlib import Path

import keras
import numpy as np
from omegaconf import OmegaConf


def directory_for(cfg):
    config = OmegaConf.to_container(cfg, resolve=True)
    tracking = config.pop("tracking", {})
    config["tracking"] = {k: tracking.get(k) for k in ("uri", "experiment")}
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path.cwd().absolute() / ".checkpoints" / key


def read_state(directory):
    """{"run_id", "epoch"} of an unfinished run, or None."""
    path = Path(directory) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _variables(model):
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return list(model.variables) + list(optimizer.variables)


def restore(model, directory):
    """Loads the checkpoint's variables into a compiled model; returns its epoch."""
    state = read_state(directory)
    with np.load(Path(directory) / "variables.npz") as saved:
        variables = _variables(model)
        if len(saved.files) != len(variables):
            raise ValueError(f"Checkpoint {directory} does not match this model; delete it to start afresh.")
        for i, variable in enumerate(variables):
            variable.assign(saved[f"v{i}"])
    return state["epoch"]


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves every variable (model + optimizer) at each epoch end, atomically."""

    def __init__(self, directory, run_id):
        super().__init__()
        self.directory, self.run_id = Path(directory), run_id

    def on_epoch_end(self, epoch, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / "variables.partial.npz"
        np.savez(tmp, **{f"v{i}": v.numpy() for i, v in enumerate(_variables(self.model))})
        os.replace(tmp, self.directory / "variables.npz")
        state_tmp = self.directory / "state.partial.json"
        state_tmp.write_text(json.dumps({"run_id": self.run_id, "epoch": epoch + 1}))
        os.replace(state_tmp, self.directory / "state.json")


def clear(directory):
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
