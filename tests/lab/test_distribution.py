"""trainer.distribution end to end, in subprocesses (logical devices and clusters are set up
once per process): 2 logical CPUs with `mirrored`, 2 worker processes on 127.0.0.1 with
`multi_worker` (one MLflow run, the same losses as one process), a worker killed mid-run,
resume, and a sweep through the submitit local launcher."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lab import distribution
from lab.schema import ConfigError
from tests.lab.test_train import ROOT, client, runs, train

# Dropout off: each replica draws its own masks, so only then are N replicas one replica's math.
# 2 epochs x 4 steps of a global batch of 8 (4 rows per replica); XLA is off under a strategy anyway.
SMALL = ["trainer.epochs=2", "trainer.batch_size=8", "trainer.sequence_length=16", "trainer.log_every_n_steps=1",
         "trainer.jit_compile=false", "task.dropout=0.0", "data.max_train_samples=32",
         "data.max_validation_samples=16", "tracking.save=none"]
MULTI = ["trainer.distribution=multi_worker"]


def launch(tmp_path, *overrides, workers=2, **popen):
    command = [sys.executable, str(ROOT / "scripts" / "launch_local.py"), "--workers", str(workers),
               "--grace", "120", "--", str(ROOT / "train.py"), *overrides]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "1"}
    if popen:
        return subprocess.Popen(command, cwd=tmp_path, env=env, **popen)
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def final(tmp_path):
    (run,) = runs(tmp_path)
    return run, run.data.metrics


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process run every distributed run must match: (wall seconds, metrics)."""
    tmp_path = tmp_path_factory.mktemp("single")
    start = time.perf_counter()
    train(tmp_path, *SMALL)
    seconds = time.perf_counter() - start
    run, metrics = final(tmp_path)
    assert run.info.status == "FINISHED"
    return seconds, metrics


def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path, single):
    result = train(tmp_path, *SMALL, "trainer.distribution=mirrored", "trainer.cpu_replicas=2")
    assert "2 replicas, 4 rows of each global batch of 8" in result.stdout
    run, metrics = final(tmp_path)
    assert run.info.status == "FINISHED"
    for key in ("loss", "val_loss", "final_val_loss"):
        assert metrics[key] == pytest.approx(single[1][key], abs=1e-4), key


def test_multi_worker_two_processes_one_run_same_losses(tmp_path, single):
    start = time.perf_counter()
    # With its model saved: the signature's predictions are a collective step every worker takes.
    result = launch(tmp_path, *[o for o in SMALL if o != "tracking.save=none"], *MULTI)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    out = result.stdout
    assert "[worker 0] val_accuracy = " in out and "[worker 1] val_accuracy = " in out
    assert "[worker 0] saved preset/" in out
    assert "(a worker: the chief logged the run)" in out and "[worker 0] MLflow run " in out
    run, metrics = final(tmp_path)  # one run in the store: the chief's
    assert run.info.status == "FINISHED" and run.data.params["trainer.distribution"] == "multi_worker"
    for key in ("loss", "val_loss", "final_val_loss"):
        assert metrics[key] == pytest.approx(single[1][key], abs=1e-4), key
    steps = [m.step for m in client(tmp_path).get_metric_history(run.info.run_id, "step_loss")]
    assert steps == list(range(1, 9))  # logged once per step, by the chief only
    print(f"\n1 process: loss {single[1]['loss']:.6f} in {single[0]:.0f} s; "
          f"2 workers: loss {metrics['loss']:.6f} in {seconds:.0f} s")


def test_killed_worker_fails_the_run_then_both_resume(tmp_path):
    overrides = [*SMALL, "trainer.epochs=3", *MULTI]
    process = launch(tmp_path, *overrides, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = None
    deadline = time.monotonic() + 600
    while state is None and time.monotonic() < deadline and process.poll() is None:
        states = list(tmp_path.glob(".checkpoints/*/state.json"))
        state = states[0] if states else None
        time.sleep(0.1)
    assert state is not None, process.communicate()[0][-4000:]
    worker = _worker_pid(tmp_path, index=1)
    os.kill(worker, signal.SIGKILL)  # mid-run: after epoch 1's checkpoint, before the last collective
    killed = time.monotonic()
    out = process.communicate(timeout=300)[0]
    waited = time.monotonic() - killed
    assert process.returncode != 0
    assert "Worker /job:worker/task:1 of this multi-worker run stopped" in out, out[-4000:]
    assert waited < 120, waited  # TensorFlow's heartbeats find a dead worker in about 10 s
    (run,) = runs(tmp_path)
    assert run.info.status == "FAILED"
    checkpoints = list(tmp_path.glob(".checkpoints/*"))
    assert len(checkpoints) == 1 and len(list(checkpoints[0].glob("epoch-*.npz"))) >= 1
    print(f"\nworker 1 killed: run FAILED {waited:.0f} s later")

    result = launch(tmp_path, *overrides)  # both workers again: the chief resumes its run
    assert result.returncode == 0, result.stdout[-4000:]
    assert "[worker 0] Resuming MLflow run " + run.info.run_id in result.stdout
    (resumed,) = runs(tmp_path)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert not list(tmp_path.glob(".checkpoints/*"))


def _worker_pid(tmp_path, index):
    """The pid of train.py worker `index` (its TF_CONFIG names the index), a child of our launcher."""
    for _ in range(100):
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            config = next((e[len(b"TF_CONFIG="):] for e in environ if e.startswith(b"TF_CONFIG=")), None)
            if config and cwd == str(tmp_path) and json.loads(config)["task"]["index"] == index:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no worker {index} process found")


def test_submitit_local_sweep_logs_both_jobs_under_one_parent(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # as when installed
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_local", "debug=fast",
         "trainer.sequence_length=16", "trainer.max_steps=2", "trainer.checkpoint=false", "tracking.save=none",
         "seed=1,2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = runs(tmp_path)
    (parent,) = [r for r in found if r.data.tags.get("sweep") == "true"]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(found) == 3 and len(children) == 2
    assert all(r.info.status == "FINISHED" and "final_val_accuracy" in r.data.metrics for r in children)
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 2
    assert sorted(r.data.params["seed"] for r in children) == ["1", "2"]


@pytest.mark.parametrize("launcher, target", [("submitit_local", "LocalLauncher"),
                                              ("submitit_slurm", "SlurmLauncher")])
def test_cluster_launchers_compose_with_our_config(launcher, target):
    """The README's `hydra/launcher=submitit_slurm hydra.launcher.partition=...` composes with conf/."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from lab import schema

    schema.register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}", "hydra.launcher.timeout_min=30"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(f"submitit_launcher.{target}")
    assert cfg.hydra.launcher.timeout_min == 30


def test_cluster_checks_before_anything_starts(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert distribution.cluster_size() == (None, 0)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG is not a cluster description"):
        distribution.cluster_size()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2", "c:3"]},
                                                "task": {"type": "worker", "index": 2}}))
    assert distribution.cluster_size() == ("TF_CONFIG", 3)
    monkeypatch.delenv("TF_CONFIG")
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("SLURM_NTASKS", "4")  # srun's tasks: one worker each
    assert distribution.cluster_size() == ("SLURM", 4)


@pytest.mark.parametrize("overrides, message", [
    (["trainer.distribution=multi_worker"], "this process is in no cluster"),
    (["trainer.distribution=mirrored", "trainer.cpu_replicas=3"], "make it a multiple of it"),
    (["trainer.cpu_replicas=2"], "trainer.cpu_replicas=2 splits the CPU"),
    (["trainer.distribution=mirrored", "trainer.jit_compile=true"], "XLA:CPU has no kernels"),
    (["trainer.distribution=ring"], "trainer.distribution='ring' is not one of"),
])
def test_preflight_names_the_distribution_mistake(tmp_path, overrides, message):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "SLURM_JOB_ID")}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "+check=true", "trainer.batch_size=16",
                             *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
