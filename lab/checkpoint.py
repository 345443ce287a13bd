"""Epoch checkpoints, and resuming an interrupted run where it stopped.

A run's checkpoint lives in `<cwd>/.checkpoints/<key>/`, where the key is a
hash of the resolved config (tracking names aside): re-running the same
command finds it. It is removed when the run completes.

    state.json        {"run_id", "epoch", "file", "bytes", "scope", "paths", "shapes", "dtypes",
                       "base", "previous"}
    epoch-0003.npz    the variables at the end of epoch 3 (npz: NumPy's zip of arrays)

What it holds:
- A run on a frozen base (LoRA; `artifacts.frozen_base` decides) holds only
  what training changes: the trainable variables (LoRA matrices, head), every
  variable outside the frozen backbone weights (seed-generator states, so
  dropout continues identically) and the optimizer's variables. For Gemma 2B
  LoRA r4 that is a few MB instead of the 5 GB base. The base is not saved,
  so a resume proves it is the same one: state.json keeps the base's record
  (`artifacts.BaseRecord`: pinned handle and the sha256 of every preset file)
  and `restore` compares it with the base it just loaded; a different base
  (e.g. `hf://owner/repo` now at a newer commit) is a `CheckpointError`.
- A full fine-tune holds every variable of the model and the optimizer.

Writes are atomic and durable: the epoch file is written under a temporary
name, fsynced and renamed, then state.json the same way, so a kill or a full
disk at any moment leaves the previous state.json naming a complete file.
A frozen-base run keeps the previous epoch's (small) file as a fallback.
If the file state.json names is damaged anyway (cut short by a crash of the
machine, copied half, edited), `read_state` says so: it falls back to the
previous good epoch when there is one, else raises a `CheckpointError` that
names the file and what to do, never a bare `zipfile.BadZipFile`.
"""

import hashlib
import json
import os
import zipfile
from pathlib import Path

import keras
import numpy as np
from omegaconf import OmegaConf

from backbones.errors import BackboneLabError

STATE_FILE = "state.json"


class CheckpointError(BackboneLabError):
    """A checkpoint that cannot be resumed from; the message names it and says what to do."""


def directory_for(cfg):
    config = OmegaConf.to_container(cfg, resolve=True)
    tracking = config.pop("tracking", {})
    config["tracking"] = {k: tracking.get(k) for k in ("uri", "experiment")}
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path.cwd().absolute() / ".checkpoints" / key


def _damaged(directory, what, state=None):
    run = f" The MLflow run {state['run_id']} stays as it was (KILLED or FAILED)." if state else ""
    return CheckpointError(
        f"Cannot resume from the checkpoint in {directory}: {what}. This happens when a write was cut "
        f"short (the machine crashed or the disk filled) or the files were changed by hand. To start "
        f"this run again from the beginning, delete that directory (rm -r {directory}) and run the "
        f"same command.{run}")


def _check_file(directory, entry):
    """Why the epoch file of a state entry is unusable, or None if it looks whole."""
    path = Path(directory) / entry["file"]
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"{path} has {size} bytes, not the {entry['bytes']} written"
    try:
        with zipfile.ZipFile(path) as z:  # the zip directory sits at the end: a cut file has none
            if len(z.namelist()) != len(entry["paths"]):
                return f"{path} holds {len(z.namelist())} arrays, not {len(entry['paths'])}"
    except (zipfile.BadZipFile, OSError) as e:
        return f"{path} is not a readable zip file ({e})"
    return None


def read_state(directory):
    """The state of an unfinished run (`run_id`, `epoch`, ...), or None.

    Checks that the epoch file is whole; falls back to the previous epoch's
    file if not and one is kept (saying so), else raises `CheckpointError`.
    """
    directory = Path(directory)
    path = directory / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        state["file"], state["bytes"], state["paths"]  # noqa: B018  (present, format 2)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise _damaged(directory, f"{path} is not a checkpoint state this version wrote ({e!r})") from None
    problem = _check_file(directory, state)
    if problem is None:
        return state
    previous = state.get("previous")
    if previous and _check_file(directory, {**state, **previous}) is None:
        print(f"Checkpoint: {problem}; resuming from the previous one, epoch {previous['epoch']}.")
        return {**state, **previous, "previous": None}
    raise _damaged(directory, problem, state)


def _variables(model, base):
    """(Keras path, variable) of everything a checkpoint holds, in a fixed order."""
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = list(model.variables)
    if base is not None:  # frozen base: not its weights, which never change
        frozen = {id(w) for w in model.backbone.weights if not w.trainable}
        variables = [v for v in variables if id(v) not in frozen]
    return [(v.path, v) for v in variables + list(optimizer.variables)]


def _storable(value):
    """npz has no bfloat16 (nor other ml_dtypes types: they come back as raw
    bytes): those are stored as their bits, their dtype kept in state.json."""
    return value.view(f"uint{value.dtype.itemsize * 8}") if value.dtype.kind == "V" else value


def _from_storable(value, dtype):
    import ml_dtypes

    return value if value.dtype.name == dtype else value.view(getattr(ml_dtypes, dtype, dtype))


def restore(model, directory, base=None, state=None, batches=None):
    """Loads the checkpoint into a compiled model; returns its epoch (finished epochs).

    Args:
        model: tasks.Task. Compiled, built like the run that saved it.
        directory: Path. The checkpoint directory.
        base: artifacts.BaseRecord or None. The frozen base just loaded
            (None for a full fine-tune); compared with the checkpoint's.
        state: dict. What `read_state(directory)` returned (read again if None).
        batches: training.EpochBatches or streaming.KerasStream. Resumed at
            the checkpoint's optimizer step (`skip_to`): after a mid-epoch
            checkpoint, at the next batch of the interrupted epoch.
    """
    state = state or read_state(directory)
    variables = _variables(model, base)
    # Shapes, not paths: Keras numbers names per process (adam_1/..., seed_generator_1/...).
    shapes = [list(v.shape) for _, v in variables]
    if (state["scope"] == "trainable") != (base is not None) or shapes != state["shapes"]:
        raise CheckpointError(
            f"The checkpoint in {directory} holds {len(state['shapes'])} variables ({state['scope']}) that do "
            f"not match this model's {len(shapes)}; was the code changed since? Delete {directory} to start afresh.")
    if base is not None:
        differ = base.differences(state["base"])
        if differ:
            raise CheckpointError(
                f"The checkpoint in {directory} holds only what training changed on top of the base preset "
                f"{state['base']['pinned']}, and the base loaded now ({base.directory}) has other files: "
                f"{differ[:5]}. Resume needs the same base: set backbone.preset={state['base']['pinned']} "
                f"(pinned), or delete {directory} to start afresh.")
    file = Path(directory) / state["file"]
    try:
        with np.load(file, allow_pickle=False) as saved:
            for i, ((_, variable), dtype) in enumerate(zip(variables, state["dtypes"])):
                variable.assign(_from_storable(saved[f"v{i}"], dtype))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as e:  # a bad CRC, a cut member
        raise _damaged(directory, f"{file} could not be read ({type(e).__name__}: {e})", state) from None
    if batches is not None:
        batches.skip_to(int(keras.ops.convert_to_numpy(model.optimizer.iterations)))
    return state["epoch"]


def _write_atomic(path, write):
    """`write(f)` into a temporary sibling, fsync, rename over `path`."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash of the machine
    finally:
        os.close(dir_fd)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the model's changing state at each epoch end, atomically (see the module docstring).

    Args:
        directory: Path. The run's checkpoint directory.
        run_id: str. MLflow run to continue on resume.
        base: artifacts.BaseRecord or None. The frozen base (only the delta
            is saved), or None for a full fine-tune (everything is saved).
    """

    def __init__(self, directory, run_id, base=None, every_n_steps=None):
        super().__init__()
        self.directory, self.run_id, self.base = Path(directory), run_id, base
        self.every_n_steps, self._epoch = every_n_steps, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # Mid-epoch: the state's epoch counts the finished ones; the optimizer's step
        # (saved with it) is the position, where `EpochBatches.skip_to` resumes.
        if self.every_n_steps:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            if step % self.every_n_steps == 0:
                self._save(self._epoch, f"epoch-{self._epoch:04d}-step-{step:08d}.npz")

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, f"epoch-{epoch + 1:04d}.npz")

    def _save(self, epochs_done, name):
        self.directory.mkdir(parents=True, exist_ok=True)
        variables = _variables(self.model, self.base)
        arrays = [np.asarray(keras.ops.convert_to_numpy(v)) for _, v in variables]
        _write_atomic(self.directory / name,
                      lambda f: np.savez(f, **{f"v{i}": _storable(a) for i, a in enumerate(arrays)}))
        # A frozen-base checkpoint is small: keep the previous epoch's as a fallback. A full one is not.
        keep = self._previous(name) if self.base is not None else None
        state = {"format": 2, "run_id": self.run_id, "epoch": epochs_done, "file": name,
                 "bytes": (self.directory / name).stat().st_size,
                 "scope": "trainable" if self.base is not None else "all",
                 "paths": [p for p, _ in variables], "shapes": [list(a.shape) for a in arrays],
                 "dtypes": [a.dtype.name for a in arrays],
                 "base": self.base.to_dict() if self.base is not None else None,
                 "previous": {k: keep[k] for k in ("epoch", "file", "bytes")} if keep else None}
        _write_atomic(self.directory / STATE_FILE, lambda f: f.write(json.dumps(state).encode()))
        for stale in self.directory.glob("epoch-*.npz"):
            if stale.name not in (name, keep and keep["file"]):
                stale.unlink()

    def _previous(self, name):
        """The entry of the state.json being replaced, if its file is whole."""
        try:
            old = json.loads((self.directory / STATE_FILE).read_text())
            usable = old["file"] != name and _check_file(self.directory, old) is None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return old if usable else None


def clear(directory):
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
