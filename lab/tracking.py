"""MLflow tracking for a run: store, run lifecycle, what gets logged.

With `tracking.uri: null` the store is MLflow's own default made absolute,
`sqlite:///<cwd>/mlflow.db` with artifacts in `<cwd>/mlruns`, so every job
of a sweep shares it and `mlflow ui` in that directory shows it.
"""

import contextlib
import importlib.metadata
import platform
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from lab.distribution import is_chief, worker_run
from lab.errors import Interrupted

PACKAGES = ("backbone-lab", "keras", "tensorflow", "mlflow", "hydra-core", "omegaconf", "tokenizers", "numpy")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def tracking_uri(tracking_cfg):
    return tracking_cfg.uri or f"sqlite:///{Path.cwd().absolute() / 'mlflow.db'}"


def ensure_experiment(tracking_cfg):
    """Creates the store and experiment if needed; returns the experiment id.

    Called once in the parent process before a sweep's jobs start: several
    processes creating a fresh sqlite store at once all fail.
    """
    import mlflow

    uri = tracking_uri(tracking_cfg)
    mlflow.set_tracking_uri(uri)
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
    unique across sweeps.
    """
    import mlflow

    if not is_chief():  # another worker of a multi-worker run: the chief keeps the one record
        with worker_run() as active:
            yield active
        return
    experiment_id = ensure_experiment(tracking_cfg)
    name = tracking_cfg.run_name
    if parent_run_id and job_num is not None:
        name = f"{name or 'sweep'}-{parent_run_id[:8]}-{job_num}"
    active = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                              run_name=None if run_id else name,
                              parent_run_id=None if run_id else parent_run_id)
    previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    try:
        yield active
    except KeyboardInterrupt as e:
        mlflow.end_run("KILLED")
        raise Interrupted(_interrupted_message(e, active.info.run_id, checkpoint_dir),
                          128 + (e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT)) from None
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
    metrics), minus its step-less copy of the validation metrics: the epoch
    logs already carry them as val_*."""
    import mlflow.keras

    class EpochMetrics(mlflow.keras.MlflowCallback):
        def on_test_end(self, logs=None):
            pass

    return EpochMetrics()


def log_parameter_counts(model):
    import mlflow
    import numpy as np

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    mlflow.log_params({"params.total": total, "params.trainable": trainable})
    return total, trainable


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
