"""MLflow tracking for a run: store, run lifecycle, what gets logged.

With `tracking.uri: null` the store is MLflow's own default made absolute,
`sqlite:///<cwd>/mlflow.db` with artifacts in `<cwd>/mlruns`, so every job
of a sweep shares it and `mlflow ui` in that directory shows it.
"""

import contextlib
import fcntl
import importlib.metadata
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from lab.distribution import is_chief, worker_run
from lab.errors import Interrupted
from lab.schema import ConfigError

PACKAGES = ("backbone-lab", "keras", "tensorflow", "mlflow", "hydra-core", "omegaconf", "tokenizers", "numpy")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
# During a run against a server, a request that finds no server fails after
# about 7 s (2 retries with back-off and jitter; measured 7.3 s) instead of
# MLflow's minutes (7 retries, back-off factor 2, 120 s timeout); a server
# that accepts but hangs, after 30 s per attempt. Metrics are sent from a background thread that keeps
# and retries them (`lab.metric_log`), so training never waits on these. A
# user's own values of these variables win.
SERVER_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
PROCESS_TAGS = ("process.host", "process.pid", "process.start_time")

_metric_log = None  # the MetricLog of the active run
_reconnect_timeout = 0  # its tracking.reconnect_timeout


class _StoreGone(Exception):
    """The store did not come back within tracking.reconnect_timeout."""


def tracking_uri(tracking_cfg):
    return tracking_cfg.uri or f"sqlite:///{Path.cwd().absolute() / 'mlflow.db'}"


@contextlib.contextmanager
def store_lock(uri):
    """Holds an exclusive lock beside a sqlite store while it is created or
    migrated: processes creating a fresh store at once otherwise die in
    MLflow's alembic migrations. Other stores need no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_experiment(tracking_cfg):
    """Creates the store and experiment if needed (under `store_lock`);
    returns the experiment id."""
    import mlflow

    uri = tracking_uri(tracking_cfg)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(tracking_cfg.experiment)
        if experiment is not None:
            return experiment.experiment_id
        location = (Path.cwd().absolute() / "mlruns").as_uri() if tracking_cfg.uri is None else None
        try:
            return client.create_experiment(tracking_cfg.experiment, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # created meanwhile by another process
            return client.get_experiment_by_name(tracking_cfg.experiment).experiment_id


@contextlib.contextmanager
def run(tracking_cfg, run_id=None, parent_run_id=None, job_num=None, checkpoint_dir=None):
    """An active MLflow run that always ends FINISHED, FAILED or KILLED.

    Ctrl-C and SIGTERM end it KILLED and raise `Interrupted`, whose message
    says where the run stopped and how to resume (from `checkpoint_dir`).
    Pass `run_id` to continue an existing run (resume). A sweep job
    (`parent_run_id`, `job_num`) is named `<run_name or sweep>-<parent id>-<job>`,
    unique across sweeps. The run is tagged with its process (host, pid,
    start time), and runs of this store left RUNNING by a dead process are
    marked KILLED first. Metrics logged with `log_metrics` survive a server
    outage (`lab.metric_log`); system metrics are sampled every
    `tracking.system_metrics_interval` seconds.
    """
    import mlflow

    from lab.metric_log import MetricLog, SystemMetrics

    global _metric_log, _reconnect_timeout
    if not is_chief():  # another worker of a multi-worker run: the chief keeps the one record
        with worker_run() as active:
            yield active
        return
    with _server_http_env(tracking_cfg.uri):
        experiment_id = ensure_experiment(tracking_cfg)
        mark_dead_runs_killed(mlflow.MlflowClient(), keep=run_id)
        resumed = run_id is not None
        name = tracking_cfg.run_name
        if parent_run_id and job_num is not None:
            name = f"{name or 'sweep'}-{parent_run_id[:8]}-{job_num}"
        active = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                                  run_name=None if run_id else name,
                                  parent_run_id=None if run_id else parent_run_id, tags=process_tags())
        run_id = active.info.run_id
        client = mlflow.MlflowClient()
        _metric_log = MetricLog(client, run_id, Path.cwd().absolute() / ".mlflow-unsent" / f"{run_id}.jsonl")
        _reconnect_timeout = tracking_cfg.reconnect_timeout
        system = None
        previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
        try:
            if tracking_cfg.system_metrics_interval:
                first = len(client.get_metric_history(run_id, "system/cpu_utilization_percentage")) if resumed else 0
                system = SystemMetrics(_metric_log, tracking_cfg.system_metrics_interval, first)
            yield active
        except KeyboardInterrupt as e:
            _finish(system, tracking_cfg, "KILLED", wait=5)
            raise Interrupted(_interrupted_message(e, run_id, checkpoint_dir),
                              128 + (e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT)) from None
        except _StoreGone:
            _finish(system, tracking_cfg, "FAILED", wait=0)
            raise ConfigError(_lost_message(tracking_cfg, run_id, checkpoint_dir)) from None
        except BaseException:
            _finish(system, tracking_cfg, "FAILED", wait=5)
            raise
        else:
            if not _finish(system, tracking_cfg, "FINISHED", wait=tracking_cfg.reconnect_timeout):
                raise ConfigError(_lost_message(tracking_cfg, run_id, checkpoint_dir))
        finally:
            _metric_log = None
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _finish(system, tracking_cfg, status, wait):
    """Stops the samplers, sends what is kept (waiting up to `wait` s for the
    store) and ends the run; False if the store never answered."""
    import mlflow

    if system is not None:
        system.stop()
    sent = _metric_log.close(timeout=wait)
    try:
        mlflow.end_run(status)
    except Exception:  # noqa: BLE001 - the store is gone: the message after says what is kept where
        if status == "FINISHED" and sent:
            raise
        return False  # end_run dropped the run from MLflow's active stack before it failed
    return sent


def _lost_message(tracking_cfg, run_id, checkpoint_dir):
    journal = _metric_log.journal if _metric_log else Path.cwd() / ".mlflow-unsent" / f"{run_id}.jsonl"
    resume = (f"the checkpoint in {checkpoint_dir} lets the same command finish the run once the server is back"
              if checkpoint_dir else "checkpoints are off (trainer.checkpoint=false)")
    return (f"tracking.uri={tracking_uri(tracking_cfg)} stopped answering and did not come back within "
            f"tracking.reconnect_timeout={tracking_cfg.reconnect_timeout} s after training ended. Nothing "
            f"measured is lost: the metrics MLflow run {run_id} could not send are in {journal}; once the "
            f"server answers, send them with: python -m lab.metric_log {journal}; {resume}.")


@contextlib.contextmanager
def _server_http_env(uri):
    """MLflow's HTTP retries made short (`SERVER_HTTP_ENV`) for a server URI."""
    if not uri or not uri.startswith(("http://", "https://")):
        yield
        return
    added = {k: v for k, v in SERVER_HTTP_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def log_metrics(metrics, step=0, model_id=None, wait=False):
    """Logs `{name: value}` to the active run through its `MetricLog` (kept
    and sent again if the server does not answer); returns at once, or with
    `wait` once they are in the store (`wait_metrics_sent`). `model_id` links
    them to a LoggedModel too."""
    if _metric_log is None:
        import mlflow

        mlflow.log_metrics(metrics, step=step, model_id=model_id)
        return
    _metric_log.log(metrics, step, model_id=model_id)
    if wait:
        wait_metrics_sent()


def wait_metrics_sent():
    """Blocks until the active run's metrics are all sent, before what needs
    the server (artifacts, the run's end); raises `_StoreGone` after
    tracking.reconnect_timeout seconds."""
    if _metric_log is None or _metric_log.wait_sent(timeout=0 if _metric_log.down_since else 30):
        return  # a store that answers takes them in a moment: no message
    print(f"Waiting up to {_reconnect_timeout} s (tracking.reconnect_timeout) for MLflow at {_metric_log.uri} "
          f"to take {_metric_log.unsent} kept metrics...", file=sys.stderr)
    if not _metric_log.wait_sent(_reconnect_timeout):
        raise _StoreGone()


def process_tags():
    """Tags naming this process, so a later run can tell whether it still lives."""
    import psutil

    return {"process.host": socket.gethostname(), "process.pid": str(os.getpid()),
            "process.start_time": f"{psutil.Process().create_time():.2f}"}


def process_gone(tags):
    """True if the process named by `process_tags` on this host is dead (or its
    pid now belongs to another process); False if alive or on another host."""
    import psutil

    if tags.get("process.host") != socket.gethostname() or not tags.get("process.pid", "").isdigit():
        return False
    try:
        started = psutil.Process(int(tags["process.pid"])).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.AccessDenied:
        return False
    return abs(started - float(tags.get("process.start_time") or 0)) > 0.5  # pid reused


def mark_dead_runs_killed(client, keep=None):
    """Ends KILLED every RUNNING run of the store whose process is gone
    (`process_gone`), printing a line for each; returns their ids."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    killed = []
    for found in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000):
        if found.info.run_id != keep and process_gone(found.data.tags):
            client.set_terminated(found.info.run_id, "KILLED")
            killed.append(found.info.run_id)
            print(f"MLflow run {found.info.run_id} ({found.info.run_name}) was RUNNING but its process "
                  f"(pid {found.data.tags['process.pid']} on {found.data.tags['process.host']}) is gone: "
                  "marked KILLED.")
    return killed


def _main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signum)


def _interrupted_message(error, run_id, checkpoint_dir):
    signum = error.args[0] if error.args and isinstance(error.args[0], int) else signal.SIGINT
    how = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C" if signum == signal.SIGINT else f"signal {signum}"
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    if not checkpoint_dir:
        return (f"Interrupted ({how}): MLflow run {run_id} ended KILLED. Checkpoints are off "
                f"(trainer.checkpoint=false): the same command starts again: {command}")
    from lab.checkpoint import read_state  # keras is loaded by now; this module stays light for sweeps

    state = read_state(checkpoint_dir)
    where = f"after epoch {state['epoch']}" if state else "before the first epoch ended"
    return (f"Interrupted ({how}) {where}: MLflow run {run_id} ended KILLED. "
            f"Run the same command to {'resume' if state else 'start again'}: {command}")


def flatten(config, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become strings."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def log_config(cfg, hydra_output_dir=None, choices=None, overrides=()):
    """Logs the resolved config (params + YAML), command line, choices, git and versions."""
    import mlflow

    resolved = OmegaConf.to_container(cfg, resolve=True)
    params = {k: str(v)[:MAX_PARAM_LENGTH] for k, v in flatten(resolved).items()}
    mlflow.log_params(params)
    mlflow.log_text(OmegaConf.to_yaml(resolved), "config.yaml")
    if hydra_output_dir and (Path(hydra_output_dir) / ".hydra").is_dir():
        mlflow.log_artifacts(str(Path(hydra_output_dir) / ".hydra"), "hydra")
    tags = {"command": " ".join(shlex.quote(a) for a in sys.argv), "overrides": " ".join(overrides),
            "python": platform.python_version()}
    tags.update({f"config.{group}": str(option) for group, option in (choices or {}).items()
                 if group != "hydra" and not group.startswith("hydra/")})
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            tags[f"version.{package}"] = importlib.metadata.version(package)
    tags.update(git_tags(Path(__file__).resolve().parent.parent))
    if cfg.tracking.get("reproduce_of"):
        tags["reproduce_of"] = cfg.tracking.reproduce_of
    mlflow.set_tags(tags)


def git_tags(directory):
    """Commit and dirty flag of the repository holding `directory`, if any."""
    def git(*args):
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return {}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"mlflow.source.git.commit": commit.stdout.strip(), "git.dirty": str(dirty).lower()}


def epoch_callback():
    """MLflow's own Keras callback (optimizer params, model summary, per-epoch
    metrics), minus its step-less copy of the validation metrics (the epoch
    logs already carry them as val_*), with the epoch metrics sent through the
    run's `MetricLog`; when training ends it waits for them to be sent."""
    import mlflow.keras

    class EpochMetrics(mlflow.keras.MlflowCallback):
        def on_epoch_end(self, epoch, logs=None):
            if logs:
                log_metrics(logs, step=epoch)

        def on_test_end(self, logs=None):
            pass

        def on_train_end(self, logs=None):
            wait_metrics_sent()

    return EpochMetrics()


def model_params(model):
    """Parameter counts (total, trainable, backbone, LoRA) and dtypes of a task
    model, as MLflow params.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model_params(model)["params.total"], model_params(model)["model.dtype_policy"]
    (8, 'float32')
    """
    import numpy as np

    def count(weights):
        return sum(int(np.prod(w.shape)) for w in weights)

    backbone = getattr(model, "backbone", None)
    lora = [w for w in model.weights if "lora_" in w.path]
    dtypes = {}
    for w in model.weights:
        dtypes[w.dtype] = dtypes.get(w.dtype, 0) + int(np.prod(w.shape))
    policy = model.dtype_policy
    return {"params.total": count(model.weights), "params.trainable": count(model.trainable_weights),
            "params.non_trainable": count(model.non_trainable_weights),
            "params.backbone": count(backbone.weights) if backbone is not None else count(model.weights),
            "params.lora": count(lora),
            "model.dtype_policy": policy.name, "model.compute_dtype": policy.compute_dtype,
            "model.weight_dtypes": ", ".join(f"{k}: {v}" for k, v in sorted(dtypes.items())),
            "model.class": type(model).__name__}


def log_parameter_counts(model):
    """Logs `model_params(model)` as params; returns (total, trainable)."""
    import mlflow

    params = model_params(model)
    mlflow.log_params(params)
    return params["params.total"], params["params.trainable"]


def log_datasets(data_cfg, train_split, val_split):
    """Logs the training and validation splits as MLflow datasets (Inputs in
    the UI): source (file, or Hugging Face name and split), digest, schema and
    row count, with the config's name; what was read after caps and splits."""
    import mlflow
    import pandas as pd

    from mlflow.data.meta_dataset import MetaDataset

    for context, split in (("training", train_split), ("validation", val_split)):
        source, name = dataset_source(data_cfg, context)
        with warnings.catch_warnings():
            # MLflow registers its local source twice (schemes "" and "file") and warns that a path
            # matches both; and hints that integer columns cannot hold missing values (labels never do).
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer")
            if not hasattr(split, "texts"):  # a streamed file (lab.streaming): its source, not its rows
                if isinstance(source, str):
                    from mlflow.data.dataset_source_registry import resolve_dataset_source

                    source = resolve_dataset_source(source)
                dataset = MetaDataset(source, name=name)
            else:
                dataset = mlflow.data.from_pandas(pd.DataFrame(_columns(split)), source=source, name=name,
                                                  targets="label" if split.labels is not None else None)
            mlflow.log_input(dataset, context=context)
    if getattr(train_split, "label_names", None):
        mlflow.log_dict({"label_names": train_split.label_names}, "labels.json")


def _columns(split):
    """A split as the table MLflow profiles: text (+ label), prompt + answer
    (instruction), or each conversation as one JSON string (chat)."""
    import json

    fmt = getattr(split, "format", "text")
    if fmt == "instruction":
        return {"prompt": [t["prompt"] for t in split.texts], "answer": [t["answer"] for t in split.texts]}
    if fmt == "chat":
        return {"messages": [json.dumps(t, ensure_ascii=False, default=str) for t in split.texts]}
    return {"text": split.texts, **({"label": split.labels} if split.labels is not None else {})}


def dataset_source(data_cfg, context):
    """(MLflow dataset source, name) of a split: the file it was read from, or
    the Hugging Face dataset and split. A validation split carved out of the
    training file (`data.validation_fraction`) names the training file."""
    from lab import data

    if data_cfg.source == "huggingface":
        from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

        split = data_cfg.split if context == "training" else (data_cfg.validation_split_name or data_cfg.split)
        return HuggingFaceDatasetSource(path=data_cfg.name, split=split), f"{data_cfg.name}[{context}]"
    paths = [path for _, path in data.files(data_cfg)]
    path = paths[1] if context == "validation" and len(paths) > 1 else paths[0]
    return str(path.absolute()), f"{path.stem}[{context}]"


def print_summary(cfg, run_id, value, artifacts):
    if not is_chief():
        print(f"{cfg.task.metric} = {value:.4f} (a worker: the chief logged the run)")
        return
    uri = tracking_uri(cfg.tracking)
    lines = [f"{cfg.task.metric} = {value:.4f}", f"MLflow run {run_id} in {uri}"]
    lines += [f"saved {name}/ ({size / 1e6:.3g} MB, written once): {where}" for name, (where, size) in artifacts.items()]
    if uri.startswith("sqlite:///"):
        lines.append(f"Open it: mlflow ui --backend-store-uri {uri}")
    else:
        lines.append(f"Open it: {uri}")
    print("\n".join(lines))
