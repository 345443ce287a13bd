"""The task part of a preset directory: `task.json` and `task.weights.h5`.

    task.json        {"class_name", "config", "preprocessor", "registered_name"}
    task.weights.h5  the weights outside the backbone (the head), one HDF5
                     dataset per variable, addressed by its Keras path
                     (e.g. `logits/kernel`), never by position.

The backbone's own files (config.json, model.weights.h5, tokenizer) sit
beside them, so a task preset is also a backbone preset.
"""

from pathlib import Path

import h5py
import numpy as np

from backbones import preset_io
from backbones.errors import PresetFormatError

TASK_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"


def read_task_spec(directory):
    """The parsed task.json of `directory`, or None for a backbone-only preset."""
    path = Path(directory) / TASK_FILE
    return preset_io.read_json(path, "task preset") if path.is_file() else None


def write_task_spec(directory, task):
    name = type(task).__name__
    preset_io.write_json(Path(directory) / TASK_FILE, {
        "class_name": name, "module": type(task).__module__,
        "config": task.get_config(), "preprocessor": task.preprocessor.get_config(),
        "registered_name": f"backbone_lab>{name}",
    })


def head_variables(task):
    """Variables of `task` outside its backbone: Keras path -> variable."""
    in_backbone = {id(v) for v in task.backbone.weights}
    return {v.path: v for v in task.weights if id(v) not in in_backbone}


def save_head_weights(task, directory):
    with h5py.File(Path(directory) / TASK_WEIGHTS_FILE, "w") as f:
        for path, variable in head_variables(task).items():
            f.create_dataset(path, data=np.asarray(variable.numpy()))


def load_head_weights(task, directory):
    """Assigns every head variable from task.weights.h5; a missing, extra or
    mis-shaped tensor is a `PresetFormatError` naming it."""
    path = Path(directory) / TASK_WEIGHTS_FILE
    if not path.is_file():
        raise PresetFormatError(
            f"{path} is missing: the task preset has no head weights. Re-save it with "
            "task.save_to_preset, or pass load_weights=False for random weights."
        )
    with h5py.File(path, "r") as f:
        stored = {}
        f.visititems(lambda name, item: stored.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    variables = head_variables(task)
    if set(stored) != set(variables):
        missing, extra = sorted(set(variables) - set(stored)), sorted(set(stored) - set(variables))
        raise PresetFormatError(
            f"{path} does not fit this {type(task).__name__}: missing {missing}, unexpected "
            f"{extra}. Load it with the task.json it was saved with."
        )
    for name, variable in variables.items():
        if tuple(stored[name].shape) != tuple(variable.shape):
            raise PresetFormatError(
                f"{path}: {name} has shape {stored[name].shape} but the task expects "
                f"{tuple(variable.shape)} (was num_classes changed?). For a new head on this "
                "backbone, build the task on backbones.Backbone.from_preset(<preset>)."
            )
        variable.assign(_typed(stored[name], variable))


def _typed(value, variable):
    """h5py keeps bfloat16 (an ml_dtypes type) as opaque 2-byte records: read them as the variable's dtype."""
    if value.dtype.kind != "V":
        return value
    import ml_dtypes

    return value.view(getattr(ml_dtypes, variable.dtype))
