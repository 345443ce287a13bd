"""Tracking that fails fast and loses nothing: a real `mlflow server` killed and
restarted mid-run, two runs creating one fresh store at once, a SIGKILLed run
marked KILLED by the next one; the metric journal and its replay."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import psutil
import pytest

from lab import tracking
from lab.metric_log import MetricLog, replay
from tests.lab.test_train import FAST, ROOT, client, runs, train


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp_path, port):
    """`mlflow server` in its own process group (its workers die with it)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            assert server.poll() is None and time.time() < deadline, "mlflow server did not start"
            time.sleep(0.3)


def _kill(server):
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


def test_server_killed_and_restarted_mid_run_loses_no_metric(tmp_path):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    steps_per_epoch = 12
    proc = train(tmp_path, "trainer.sequence_length=24", "trainer.jit_compile=false", "trainer.epochs=3",
                 "trainer.batch_size=8", f"data.max_train_samples={8 * steps_per_epoch}",
                 "data.max_validation_samples=16", "trainer.log_every_n_steps=1", "trainer.checkpoint=false",
                 "tracking=server", f"tracking.uri={uri}", "tracking.system_metrics_interval=1",
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        c = mlflow.MlflowClient(uri)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # the first epoch's metrics reached the server
            found = c.search_runs([e.experiment_id for e in c.search_experiments()])
            if found and c.get_metric_history(found[0].info.run_id, "val_loss"):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the server could be killed"
        _kill(server)
        time.sleep(3)  # training goes on meanwhile: steps and system metrics are kept
        server = _start_server(tmp_path, port)
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, out[-3000:] + err[-3000:]
        (run,) = c.search_runs([c.get_experiment_by_name("backbone-lab").experiment_id])
        history = {key: sorted(m.step for m in c.get_metric_history(run.info.run_id, key))
                   for key in ("loss", "val_loss", "step_loss", "system/cpu_utilization_percentage")}
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill(server)
    assert f"MLflow at {uri} does not answer" in err and "answers again" in err, err
    assert run.info.status == "FINISHED"
    assert history["loss"] == history["val_loss"] == [0, 1, 2]
    assert history["step_loss"] == list(range(1, 3 * steps_per_epoch + 1))
    cpu = history["system/cpu_utilization_percentage"]
    assert cpu == list(range(len(cpu))) and len(cpu) >= 3  # one a second, none lost in the outage
    assert "final_val_accuracy" in run.data.metrics
    assert not (tmp_path / ".mlflow-unsent").exists() or not list((tmp_path / ".mlflow-unsent").iterdir())


def test_unreachable_or_silent_server_fails_in_seconds(tmp_path):
    """Nothing listening fails at once; a server that accepts but never answers, after the 5 s timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        for uri in (f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{silent.getsockname()[1]}"):
            start = time.perf_counter()
            result = train(tmp_path, "tracking=server", f"tracking.uri={uri}", check=False)
            seconds = time.perf_counter() - start
            assert result.returncode == 1 and seconds < 10, (seconds, result.stderr[-2000:])
            assert f"tracking.uri={uri} does not answer" in result.stderr and "tracking=local" in result.stderr


def test_two_runs_into_a_fresh_directory_both_finish(tmp_path):
    """Without the store lock, one or both die in MLflow's alembic migrations."""
    procs = [train(tmp_path, *FAST, "trainer.max_steps=2", f"seed={seed}", "trainer.checkpoint=false",
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for seed in (1, 2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, out[-3000:]
    assert [r.info.status for r in runs(tmp_path)] == ["FINISHED", "FINISHED"]


def test_sigkilled_run_is_marked_killed_by_the_next(tmp_path):
    victim = train(tmp_path, *FAST, "trainer.max_steps=null", "trainer.epochs=50", "seed=1",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 200  # its run exists once its config.yaml is logged
    while time.time() < deadline and not list(tmp_path.glob("mlruns/*/artifacts/config.yaml")):
        time.sleep(0.3)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    (killed,) = runs(tmp_path)
    assert killed.info.status == "RUNNING" and killed.data.tags["process.pid"] == str(victim.pid)

    result = train(tmp_path, *FAST, "trainer.max_steps=1", "seed=2")
    assert f"MLflow run {killed.info.run_id}" in result.stdout and "marked KILLED" in result.stdout
    assert [r.info.status for r in runs(tmp_path)] == ["KILLED", "FINISHED"]


def test_process_gone_tells_a_reused_pid_from_a_live_process():
    me = tracking.process_tags()
    assert not tracking.process_gone(me)
    assert tracking.process_gone({**me, "process.start_time": str(float(me["process.start_time"]) - 100)})
    assert not tracking.process_gone({**me, "process.host": "another-host"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(dead.pid).create_time()
    dead.wait()
    assert tracking.process_gone({**me, "process.pid": str(dead.pid), "process.start_time": f"{started:.2f}"})


class FlakyClient:
    """An MlflowClient stand-in whose server is down while `down` is set."""

    tracking_uri = "http://flaky"

    def __init__(self):
        self.down, self.received = False, []

    def log_batch(self, run_id, metrics, synchronous=True):
        if self.down:
            raise ConnectionError("connection refused")
        self.received += [(m.key, m.step, m.value) for m in metrics]


def test_metric_log_keeps_journals_and_sends_after_an_outage(tmp_path, capsys):
    fake = FlakyClient()
    log = MetricLog(fake, "run1", tmp_path / "unsent.jsonl")
    log.log({"loss": 1.0}, step=0)
    assert log.wait_sent(10)
    fake.down = True
    log.log({"loss": 0.5}, step=1)
    deadline = time.time() + 10
    while time.time() < deadline and not (tmp_path / "unsent.jsonl").exists():
        time.sleep(0.05)
    journal = [json.loads(line) for line in (tmp_path / "unsent.jsonl").read_text().splitlines()]
    assert [(r["key"], r["step"], r["value"]) for r in journal] == [("loss", 1, 0.5)]
    fake.down = False
    assert log.wait_sent(10) and log.close(1)
    assert fake.received == [("loss", 0, 1.0), ("loss", 1, 0.5)]
    assert not (tmp_path / "unsent.jsonl").exists()  # all sent: the journal goes
    assert "does not answer" in capsys.readouterr().err

    fake.down = True  # down for good: close names what is left in the journal
    log = MetricLog(fake, "run1", tmp_path / "unsent.jsonl")
    log.log({"loss": 0.25}, step=2)
    assert not log.close(timeout=0.5)
    assert json.loads((tmp_path / "unsent.jsonl").read_text())["step"] == 2


def test_replay_sends_a_journal_to_a_real_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = mlflow.MlflowClient(uri)
    run = c.create_run(c.create_experiment("e", artifact_location=tmp_path.as_uri()))
    c.set_terminated(run.info.run_id, "FINISHED")  # a finished run still takes its late metrics
    row = {"tracking_uri": uri, "run_id": run.info.run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 3}
    (tmp_path / "j.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "step": 4}) + "\n")
    result = subprocess.run([sys.executable, "-m", "lab.metric_log", str(tmp_path / "j.jsonl")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert [m.step for m in client(tmp_path).get_metric_history(run.info.run_id, "loss")] == [3, 4]
    assert not (tmp_path / "j.jsonl").exists()


def test_datasets_are_logged_with_source_digest_schema_and_rows(tmp_path):
    import numpy as np
    from omegaconf import OmegaConf

    from lab.data import Split
    from lab.schema import DataConfig

    (tmp_path / "train.csv").write_text("text,label\na,0\n")
    (tmp_path / "val.csv").write_text("text,label\nb,1\n")
    train_split = Split(["a", "b", "c"], np.array([0, 1, 0], "int32"), ["neg", "pos"])
    val_split = Split(["d"], np.array([1], "int32"), ["neg", "pos"])
    local = OmegaConf.merge(OmegaConf.structured(DataConfig), {"source": "local", "path": str(tmp_path / "train.csv"),
                                                                "validation_path": str(tmp_path / "val.csv")})
    hub = OmegaConf.merge(OmegaConf.structured(DataConfig), {"source": "huggingface", "name": "someone/reviews",
                                                              "split": "train", "validation_split_name": "test"})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = {}
    try:
        for data_cfg in (local, hub):
            with mlflow.start_run(experiment_id=mlflow.create_experiment(data_cfg.source)) as run:
                tracking.log_datasets(data_cfg, train_split, val_split)
            logged[data_cfg.source] = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    finally:
        mlflow.set_tracking_uri(None)
    sources = {d.tags[0].value: json.loads(d.dataset.source) for d in logged["local"]}
    assert sources == {"training": {"uri": str(tmp_path / "train.csv")},
                       "validation": {"uri": str(tmp_path / "val.csv")}}
    for inputs in logged.values():
        (train_input,) = [d.dataset for d in inputs if d.tags[0].value == "training"]
        assert json.loads(train_input.profile)["num_rows"] == 3 and len(train_input.digest) == 8
        assert [c["name"] for c in json.loads(train_input.schema)["mlflow_colspec"]] == ["text", "label"]
    hub_sources = {d.tags[0].value: (d.dataset.name, json.loads(d.dataset.source)) for d in logged["huggingface"]}
    assert hub_sources["validation"][0] == "someone/reviews[validation]"
    assert (hub_sources["validation"][1]["path"], hub_sources["validation"][1]["split"]) == ("someone/reviews", "test")


def test_instruction_and_chat_splits_become_flat_tables():
    from lab.data import Split

    instruction = Split([{"prompt": "Q: 2+2\nA:", "answer": "4"}], format="instruction")
    chat = Split([[{"role": "user", "content": "hi"}]], format="chat")
    assert tracking._columns(instruction) == {"prompt": ["Q: 2+2\nA:"], "answer": ["4"]}
    assert json.loads(tracking._columns(chat)["messages"][0]) == [{"role": "user", "content": "hi"}]


def test_a_run_shorter_than_the_sampling_interval_still_gets_system_metrics(tmp_path):
    from lab.metric_log import SystemMetrics

    fake = FlakyClient()
    log = MetricLog(fake, "run1", tmp_path / "unsent.jsonl")
    SystemMetrics(log, interval=3600, first_step=7).stop()
    assert log.close(10)
    logged = {key: step for key, step, _ in fake.received}
    assert logged["system/cpu_utilization_percentage"] == 7 and logged["system/process_rss_megabytes"] == 7
    assert "system/system_memory_usage_megabytes" in logged
