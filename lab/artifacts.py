"""What a run saves as its model, and rebuilding that model from it.

A run whose backbone weights stay as loaded from the preset (LoRA, or
`backbone.trainable=false`) trained only a small delta on a frozen base, so
by default (`tracking.save=adapter`) it saves, under the artifact path `model/`:

    base.json                  the record of the base: the preset as given, its
                               pinned form (hf://repo@commit, kaggle://.../version,
                               or an absolute directory), class, dtype, and the
                               sha256 and size of every file of the preset
    adapter.lora.safetensors   the LoRA matrices (`Backbone.save_lora_weights`)
    task.json                  task class, its config, the preprocessor config
    task.weights.h5            the head (the weights outside the backbone)

The tokenizer is the base preset's own (its files are in base.json's
checksums). `load_run_model` rebuilds base + adapter + head. A run that
trained the backbone's weights (a full fine-tune), or `tracking.save=merged`
(or `both`), saves the whole task preset once under `preset/`
(`Task.save_to_preset`; with LoRA, merged weights).

Each file is written once, straight into the artifact directory when the
store keeps artifacts on this file system (the default local store); for a
remote artifact store it is written to a temporary directory, uploaded, and
the temporary copy deleted. train.py writes them into the run's MLflow model
(`lab/mlflow_model.py`); `log_run_model` writes them into the run's own artifacts.
"""

import concurrent.futures
import fnmatch
import json
import os
import re
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import backbones
from backbones import preset_io, registry
from backbones.errors import BackboneLabError
from backbones.handles import HF_FILES, OUR_FILES, resolve_preset
from tasks import TASK_CLASSES, Preprocessor, Task, task_presets

FORMAT = "backbone_lab.run_model/1"
MODEL_DIR, PRESET_DIR = "model", "preset"
BASE_FILE, ADAPTER_FILE = "base.json", "adapter.lora.safetensors"
_LFS_BLOB = re.compile(r"[0-9a-f]{64}")


class RunModelError(BackboneLabError):
    """A run's saved model cannot be found or rebuilt; the message says why and what to do."""


# -- the record of a frozen base -----------------------------------------
class BaseRecord:
    """The frozen base of a run: where its weights come from, and their checksums.

    Checksums already known are reused: the sha256 listed in our presets'
    metadata.json (verified by `from_preset` on every load) and the names of
    Hugging Face cache blobs (an LFS file's blob is named by its sha256).
    Other files are hashed on a background thread (hashlib and file reads
    release the GIL) while the model trains: sha256 runs at 1.2 GB/s in
    memory on one core here, and the fixture's 5.0 GB of Gemma 2B
    safetensors (plain files, not cache blobs) took 7.9 s from the page
    cache on the shared machine (load average 8), time that would otherwise
    be added to every run. Nothing is hashed twice in a run: the record is
    shared by the checkpoints and the saved model.

    Args:
        preset: str. The preset as given (`backbone.preset`).
        backbone: backbones.Backbone. The backbone loaded from it.
    """

    def __init__(self, preset, backbone):
        self.preset = str(preset)
        self.directory = resolve_preset(preset).absolute()
        self.class_name = type(backbone).__name__
        self.dtype = backbone.dtype_policy.name
        self.quantize = "int8" if backbone.quantized else None  # the adapter trained over this base
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="base-sha256")
        self._files = pool.submit(file_checksums, self.directory)
        pool.shutdown(wait=False)

    def to_dict(self):
        return {"format": FORMAT, "preset": self.preset, "pinned": pinned_handle(self.preset, self.directory),
                "directory": str(self.directory), "class_name": self.class_name, "dtype": self.dtype,
                "quantize": self.quantize, "files": self._files.result()}

    def differences(self, record):
        """Files of `record` (a `to_dict()`) missing here or with another sha256; [] if the same base.
        Files added since (a later download of more file types) do not count."""
        ours = self._files.result()
        return sorted(name for name, saved in record.get("files", {}).items()
                      if (ours.get(name) or {}).get("sha256") != saved["sha256"])


def frozen_base(backbone_cfg, backbone):
    """A `BaseRecord` when the backbone's weights are the preset's and stay
    frozen (nothing trainable in it but LoRA matrices), else None: its weights
    train (or were randomly initialised) and only a full copy saves them."""
    if not backbone_cfg.load_weights:
        return None
    if any("lora_kernel" not in w.name for w in backbone.trainable_weights):
        return None
    return BaseRecord(backbone_cfg.preset, backbone)


def file_checksums(directory):
    """{relative path: {"sha256", "bytes", "from"}} of the files of a preset
    directory that a preset can use (config, weights, tokenizer, assets)."""
    directory = Path(directory)
    known = {}
    meta = directory / preset_io.METADATA_FILE
    if meta.is_file():
        known = json.loads(meta.read_text()).get("sha256", {})
    out = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if not path.is_file() or not any(fnmatch.fnmatch(name, p) for p in OUR_FILES + HF_FILES):
            continue
        blob = Path(os.readlink(path)).name if path.is_symlink() else ""
        if name in known:
            digest, source = known[name], "metadata.json"
        elif _LFS_BLOB.fullmatch(blob):
            digest, source = blob, "hf-cache-blob"
        else:
            digest, source = preset_io.sha256(path), "hashed"
        out[name] = {"sha256": digest, "bytes": path.stat().st_size, "from": source}
    return out


def pinned_handle(preset, directory):
    """The handle that finds exactly these files again: `hf://repo@commit`,
    `kaggle://owner/model/framework/variant/version`, or the directory."""
    handle = registry.BACKBONE_PRESETS.get(preset, {}).get("handle", preset)
    if handle.startswith("hf://"):
        repo = handle[len("hf://"):].partition("@")[0]
        return f"hf://{repo}@{Path(directory).name}"  # a cache snapshot is named by its commit
    if handle.startswith("kaggle://"):
        parts = handle[len("kaggle://"):].split("/")
        return "kaggle://" + "/".join(parts[:4] + [Path(directory).name])  # the cache's version directory
    return str(Path(directory).absolute())


# -- saving ----------------------------------------------------------------
def save_run_model(task, base, save, directory):
    """Writes the run's model into `directory`: `model/` (base record, adapter,
    head) and/or `preset/` (the whole task preset), per `save` and `base`.

    Args:
        task: tasks.Task. The trained task.
        base: BaseRecord or None (None: the backbone's weights trained, so the
            preset is saved whatever `save` says, once).
        save: str. `adapter`, `merged`, `both` or `none`.
        directory: str or Path. Where `model/` and `preset/` go.

    Returns: dict. Saved part name (`model`, `preset`) -> its path.
    """
    directory = Path(directory)
    saved = {}
    if save == "none":
        return saved
    if base is not None and save in ("adapter", "both"):
        with preset_io.atomic_directory(directory / MODEL_DIR) as tmp:
            preset_io.write_json(tmp / BASE_FILE, base.to_dict())
            if task.backbone.lora_spec is not None:
                task.backbone.save_lora_weights(tmp / ADAPTER_FILE)
            task_presets.write_task_spec(tmp, task)
            task_presets.save_head_weights(task, tmp)
        saved[MODEL_DIR] = directory / MODEL_DIR
    if base is None or save in ("merged", "both"):
        task.save_to_preset(directory / PRESET_DIR)
        saved[PRESET_DIR] = directory / PRESET_DIR
    return saved


def local_artifact_dir(artifact_uri):
    """The local directory of a `file:` artifact URI (or a plain path), else None."""
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" and artifact_uri:
        return Path(artifact_uri)
    return None


def log_run_model(task, base, save):
    """Saves the run's model into the active MLflow run's artifacts, once.

    A local artifact store gets the files written in place; a remote one
    gets them uploaded from a temporary directory that is deleted after.

    Returns: dict. Saved part name -> (artifact URI, bytes).
    """
    import mlflow

    artifact_uri = mlflow.get_artifact_uri()
    local = local_artifact_dir(artifact_uri)
    if local is not None:
        return {name: (str(path), dir_bytes(path)) for name, path in save_run_model(task, base, save, local).items()}
    with tempfile.TemporaryDirectory(prefix="run-model-") as tmp:
        out = {}
        for name, path in save_run_model(task, base, save, tmp).items():
            mlflow.log_artifacts(str(path), name)
            out[name] = (f"{artifact_uri.rstrip('/')}/{name}", dir_bytes(path))
        return out


def dir_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# -- loading ---------------------------------------------------------------
def load_run_model(run, tracking_uri=None, dst_dir=None, verify_base=True):
    """Rebuilds the trained task of a run from what the run saved.

    `model/` (base record + adapter + head) is preferred; otherwise the
    `preset/` task preset is loaded. The base is found by its pinned handle
    (`hf://repo@commit`, ...; the handle as given if that is gone) and, with
    `verify_base`, its files are checked against the recorded sha256 (free
    for Hugging Face cache blobs and our presets; otherwise the files are
    hashed). Predictions equal those of the task at the end of training.

    Args:
        run: str or Path. An MLflow run id (the files of its logged model,
            `lab/mlflow_model.py`, or of a run logged before it), or a
            directory: the logged model's (or run's) artifact root, its
            `model/` or `preset/` directory.
        tracking_uri: str. Store of the run id (default: MLflow's current URI).
        dst_dir: str or Path. Where a remote store's artifacts are downloaded
            (default: a new temporary directory). Local stores are read in place.
        verify_base: bool. Check the base preset's files against base.json.

    Returns: tasks.Task, with the backbone in the run's dtype.

    Example:
    >>> import backbones, tasks, tempfile
    >>> from lab import artifacts
    >>> backbone = backbones.Backbone.from_preset("gpt2_tiny_en"); backbone.enable_lora(2)
    >>> task = tasks.TextClassifier(backbone, num_classes=2, sequence_length=16)
    >>> base = artifacts.BaseRecord("gpt2_tiny_en", backbone)
    >>> out = tempfile.mkdtemp()
    >>> sorted(artifacts.save_run_model(task, base, "adapter", out))
    ['model']
    >>> again = artifacts.load_run_model(out)
    >>> bool((again.predict(["a fine film"], verbose=0) == task.predict(["a fine film"], verbose=0)).all())
    True
    """
    directory = _run_directory(run, tracking_uri, dst_dir)
    if (directory / BASE_FILE).is_file():
        return _load_model_dir(directory, verify_base)
    if (directory / MODEL_DIR / BASE_FILE).is_file():
        return _load_model_dir(directory / MODEL_DIR, verify_base)
    preset = directory / PRESET_DIR if (directory / PRESET_DIR).is_dir() else directory
    if not (preset / "task.json").is_file():
        raise RunModelError(
            f"{directory} holds no saved model: expected {MODEL_DIR}/{BASE_FILE} (a run saved with "
            f"tracking.save=adapter) or {PRESET_DIR}/task.json (tracking.save=merged, or a full fine-tune). "
            "A run with tracking.save=none saved no model: train it again with another tracking.save.")
    return Task.from_preset(preset)


def _run_directory(run, tracking_uri, dst_dir):
    path = Path(os.fspath(run)).expanduser()
    if path.is_dir():
        return path
    if not re.fullmatch(r"[0-9a-f]{32}", str(run)):
        raise RunModelError(f"{str(run)!r} is neither a directory nor an MLflow run id (32 hex characters).")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    try:
        found = client.get_run(str(run))
    except mlflow.exceptions.MlflowException as e:
        raise RunModelError(f"MLflow run {run} is not in the store {client.tracking_uri}: {e.message} "
                            "Pass tracking_uri= (or set MLFLOW_TRACKING_URI) to its store.") from e
    outputs = found.outputs.model_outputs if found.outputs else []
    if outputs:  # MLflow 3 keeps a model's files under the model (lab/mlflow_model.py), not the run
        model_uri = client.get_logged_model(outputs[-1].model_id).artifact_location
        local = local_artifact_dir(model_uri)
        return local if local is not None else Path(mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=str(dst_dir or tempfile.mkdtemp(prefix=f"run-{run}-")),
            tracking_uri=client.tracking_uri))
    artifact_uri = found.info.artifact_uri
    local = local_artifact_dir(artifact_uri)
    if local is not None:
        return local
    names = {a.path for a in client.list_artifacts(str(run))}
    part = MODEL_DIR if MODEL_DIR in names else PRESET_DIR
    dst = Path(dst_dir) if dst_dir else Path(tempfile.mkdtemp(prefix=f"run-{run}-"))
    client.download_artifacts(str(run), part, str(dst))
    return dst


def _load_model_dir(directory, verify_base):
    record = json.loads((directory / BASE_FILE).read_text())
    preset = record["pinned"]
    try:
        resolve_preset(preset)
    except BackboneLabError:
        preset = record["preset"]  # e.g. a package directory moved by a reinstall: the name still finds it
    backbone = backbones.Backbone.from_preset(preset, dtype=record["dtype"], quantize=record.get("quantize"))
    if verify_base:
        differ = BaseRecord(preset, backbone).differences(record)
        if differ:
            raise RunModelError(
                f"The base preset {preset!r} resolves to {resolve_preset(preset)}, whose files differ from the "
                f"base the run trained on ({directory / BASE_FILE}): {differ[:5]}. The adapter only fits that "
                f"base: make {record['pinned']!r} available (download that revision), or pass "
                "verify_base=False to load anyway.")
    if (directory / ADAPTER_FILE).is_file():
        backbone.load_lora_weights(directory / ADAPTER_FILE)
    spec = task_presets.read_task_spec(directory)
    cls = TASK_CLASSES.get(spec["class_name"])
    if cls is None:
        raise RunModelError(f"{directory}/task.json names task class {spec['class_name']!r}, which this "
                            f"package does not register ({sorted(TASK_CLASSES)}).")
    preprocessor = Preprocessor(backbone.tokenizer, **spec.get("preprocessor", {}))
    task = cls(backbone, preprocessor=preprocessor, **spec.get("config", {}))
    task_presets.load_head_weights(task, directory)
    return task
