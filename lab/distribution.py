"""Data-parallel training on TensorFlow's `tf.distribute`: `trainer.distribution`.

    none          one process, one device (the default).
    mirrored      every GPU of this host, or `trainer.cpu_replicas` logical CPU
                  devices on a host without GPUs (for trying it; no speed-up):
                  `MirroredStrategy`.
    multi_worker  one process per host (or per slot): `MultiWorkerMirroredStrategy`,
                  the cluster from `TF_CONFIG` (scripts/launch_local.py sets it)
                  or, without it, from SLURM's variables (`SlurmClusterResolver`).

The task is built, trained and evaluated inside `scope(trainer_cfg)` with
Keras's own `fit`: `trainer.batch_size` stays the global batch, each replica
gets `batch_size / replicas` rows of it, the loss of each replica is scaled by
`1 / replicas` and the gradients are summed over replicas before clipping
(`tasks.optimizers`), so N replicas take the step one replica takes on the
same global batch. Why TensorFlow's strategies and not the JAX backend with
`keras.distribution`: README, "More than one machine".

One run, one record: only the chief (`is_chief()`: TensorFlow's own notion,
`strategy.extended.should_checkpoint`) logs to MLflow and writes checkpoints,
presets and adapters. The other workers' MLflow calls go to a throwaway store
(`worker_run`), so no stray call can ever open a second run in the real one.
"""

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from lab.schema import ConfigError

_chief = True  # False on the other workers of a multi_worker run; kept after `scope` exits (the summary)


def is_chief():
    """Whether this process keeps the run's record: logs to MLflow, writes
    checkpoints and the run's model. True except on the non-chief workers of
    a `multi_worker` run (decided when its `scope` is entered).

    Example:
    >>> is_chief()
    True
    """
    return _chief


def cluster_size():
    """`(source, workers)` of the multi-worker cluster this process belongs to,
    read from `TF_CONFIG` or SLURM's variables without importing TensorFlow;
    `(None, 0)` when neither is set. Raises `ConfigError` on a bad `TF_CONFIG`."""
    if "TF_CONFIG" in os.environ:
        try:
            config = json.loads(os.environ["TF_CONFIG"])
            cluster = config["cluster"]
            config["task"]["type"], config["task"]["index"]  # noqa: B018
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"trainer.distribution=multi_worker: the environment variable TF_CONFIG is not a cluster "
                f"description ({type(e).__name__}: {e}). It is JSON like "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}; '
                "scripts/launch_local.py --workers 2 -- train.py ... sets it for one machine.") from None
        return "TF_CONFIG", sum(len(hosts) for job, hosts in cluster.items() if job in ("chief", "worker"))
    if "SLURM_JOB_ID" in os.environ and "SLURM_NTASKS" in os.environ:
        return "SLURM", int(os.environ["SLURM_NTASKS"])
    return None, 0


@contextlib.contextmanager
def scope(trainer_cfg):
    """The strategy of `trainer.distribution`, entered; yields it (None for `none`).

    Build the task, fit and evaluate inside it. Sets `is_chief()`.
    """
    global _chief
    _chief = True
    mode = trainer_cfg.distribution
    if mode == "none":
        yield None
        return
    # TensorFlow logs a line per collective at INFO, which Hydra's logging shows.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    strategy = _mirrored(trainer_cfg.cpu_replicas) if mode == "mirrored" else _multi_worker()
    replicas = strategy.num_replicas_in_sync
    if trainer_cfg.batch_size % replicas:
        raise ConfigError(
            f"trainer.batch_size={trainer_cfg.batch_size} is the global batch, split evenly over the "
            f"{replicas} replicas of trainer.distribution={mode}: make it a multiple of {replicas}.")
    _chief = bool(strategy.extended.should_checkpoint)
    print(f"trainer.distribution={mode}: {replicas} replicas, {trainer_cfg.batch_size // replicas} rows of each "
          f"global batch of {trainer_cfg.batch_size} per replica; this process is "
          f"{'the chief (logs and saves)' if _chief else 'a worker (logs nothing)'}.")
    with strategy.scope():
        yield strategy


def _mirrored(cpu_replicas):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU") or not cpu_replicas:
        return tf.distribute.MirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    except RuntimeError:  # devices already initialised in this process (an earlier job of a sweep)
        if len(tf.config.list_logical_devices("CPU")) != cpu_replicas:
            raise ConfigError(
                f"trainer.cpu_replicas={cpu_replicas}: TensorFlow's devices were already set up in this process "
                f"with {len(tf.config.list_logical_devices('CPU'))} CPU devices; run each setting in its own "
                "process (a sweep over it: hydra/launcher=submitit_local).") from None
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def _multi_worker():
    import tensorflow as tf

    source, _ = cluster_size()
    if source == "SLURM":
        # One task per host or slot; TensorFlow picks each task's host and port (port_base + local rank).
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=int(os.environ.get("TF_PORT_BASE", 8888)), auto_set_gpu=False,
            gpus_per_node=int(os.environ.get("SLURM_GPUS_ON_NODE", 0) or 0))
    else:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    # Blocks until every worker has joined. A worker that dies later is found by TensorFlow's
    # coordination service (heartbeats), which aborts every collective: about 13 s here
    # (tests/lab/test_distribution.py), then tasks.errors.WorkerLostError names it.
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


@contextlib.contextmanager
def worker_run():
    """An MLflow run in a throwaway store, for a worker that is not the chief.

    Every MLflow call of this process lands there and is deleted on exit:
    the real store gets one run, the chief's, whatever code logs.
    """
    import mlflow

    previous_uri, previous_flag = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    with tempfile.TemporaryDirectory(prefix="worker-mlflow-") as tmp:
        # A file store: created in milliseconds, where a fresh sqlite store runs its migrations.
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        mlflow.set_tracking_uri(Path(tmp).as_uri())
        try:
            experiment = mlflow.MlflowClient().create_experiment("worker")
            with mlflow.start_run(experiment_id=experiment) as run:
                yield run
        finally:
            mlflow.set_tracking_uri(previous_uri)
            if previous_flag is None:
                os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
            else:
                os.environ["MLFLOW_ALLOW_FILE_STORE"] = previous_flag
