"""train.py end to end, in subprocesses, each into its own temporary MLflow store."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import backbones
from lab import artifacts as artifacts_lib

ROOT = Path(__file__).resolve().parents[2]
FAST = ["debug=fast", "trainer.sequence_length=24"]


def train(tmp_path, *overrides, check=True, quiet=False, **popen):
    """train.py in `tmp_path`; `quiet`: as a user runs it (no HYDRA_FULL_ERROR, no TF_CPP_MIN_LOG_LEVEL)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "1"}
    if quiet:
        env = {k: v for k, v in env.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "HYDRA_FULL_ERROR")}
    command = [sys.executable, str(ROOT / "train.py"), *overrides]
    if popen:
        return subprocess.Popen(command, cwd=tmp_path, env=env, **popen)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-3000:] + result.stderr[-3000:])
    return result


def client(tmp_path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def runs(tmp_path, experiment="backbone-lab"):
    c = client(tmp_path)
    return c.search_runs([c.get_experiment_by_name(experiment).experiment_id], order_by=["attributes.start_time ASC"])


def model_parts(c, run_id):
    """Top-level paths of the run's logged model (MLflow 3 keeps a model's files under the model, not the run)."""
    (output,) = c.get_run(run_id).outputs.model_outputs
    return {a.path for a in c.list_logged_model_artifacts(output.model_id)}


def test_default_run_logs_everything_and_artifacts_load_back(tmp_path):
    result = train(tmp_path, *FAST, "lora.rank=4", "hydra.run.dir=out", quiet=True)
    assert "Open it: mlflow ui" in result.stdout
    # No TensorFlow, CUDA-probe or MLflow store lines; a warning (truncated texts) is one line.
    assert all(line.startswith("TruncationWarning: ") for line in result.stderr.splitlines()), result.stderr
    assert "\n5/5 - " in result.stdout  # the progress count agrees with max_steps=5
    (run,) = runs(tmp_path)
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["backbone.preset"] == "gpt2_tiny_en" and params["lora.rank"] == "4"
    assert int(params["params.trainable"]) < int(params["params.total"])
    assert 0 < int(params["params.lora"]) < int(params["params.trainable"])
    assert params["model.dtype_policy"] == "float32" and params["model.weight_dtypes"].startswith("float32: ")
    rows = {d.dataset.name: json.loads(d.dataset.profile)["num_rows"] for d in run.inputs.dataset_inputs}
    assert rows == {"sentiment[training]": 64, "sentiment[validation]": 32}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
            "system/process_rss_megabytes"} <= set(metrics)
    assert tags["process.pid"].isdigit() and tags["process.host"]
    assert tags["config.backbone"] == "gpt2_tiny" and "lora.rank=4" in tags["overrides"]
    assert "train.py" in tags["command"] and tags["version.keras"] and tags["git.dirty"] in ("true", "false")
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "final_val_accuracy",
            "step_loss", "learning_rate", "tokens_per_second"} <= set(metrics)
    c = client(tmp_path)
    history = c.get_metric_history(run.info.run_id, "step_loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5]  # debug=fast: 5 steps, logged every step
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "hydra"} <= artifacts and not {"model", "preset"} & artifacts
    assert {"MLmodel", "model"} <= model_parts(c, run.info.run_id) and "preset" not in model_parts(c, run.info.run_id)
    assert "saved model/" in result.stdout

    # Disk: the adapter, head and logs, written once; no copy of the base weights (the tiny preset's
    # model.weights.h5 alone is > 20x the model/ files, so one copy anywhere fails this).
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    model_bytes = sum(p.stat().st_size for p in files if p.parent.name == "model")
    logs = [p for p in files if p.name in ("mlflow.db", "mlflow.db.lock", "MLmodel")
            or p.suffix in (".yaml", ".log", ".txt", ".json")]
    other = [p for p in files if p.parent.name != "model" and p not in logs]
    assert other == [] and not list(tmp_path.glob(".checkpoints/*"))
    assert model_bytes * 20 < (backbones.handles.resolve_preset("gpt2_tiny_en") / "model.weights.h5").stat().st_size
    assert sum(p.stat().st_size for p in files) <= 2 * model_bytes + sum(p.stat().st_size for p in logs)

    task = artifacts_lib.load_run_model(run.info.run_id, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert type(task).__name__ == "TextClassifier" and task.backbone.lora_spec.rank == 4
    assert task.predict(["The movie was great."], verbose=0).shape == (1, 2)


def test_merged_and_both_save_one_preset_copy(tmp_path):
    train(tmp_path, "-m", *FAST, "lora.rank=2", "tracking.save=merged,both", "trainer.checkpoint=false")
    children = {r.data.params["tracking.save"]: r for r in runs(tmp_path) if r.data.tags.get("mlflow.parentRunId")}
    c = client(tmp_path)
    assert model_parts(c, children["merged"].info.run_id) >= {"preset"}
    assert "model" not in model_parts(c, children["merged"].info.run_id)
    assert model_parts(c, children["both"].info.run_id) >= {"preset", "model"}
    assert len(list(tmp_path.rglob("model.weights.h5"))) == 2  # one per run: nothing in multirun/, no second copy

    import tasks

    (output,) = c.get_run(children["both"].info.run_id).outputs.model_outputs
    both = artifacts_lib.local_artifact_dir(c.get_logged_model(output.model_id).artifact_location)
    merged = tasks.Task.from_preset(both / "preset")
    adapter = artifacts_lib.load_run_model(both)  # base + adapter + head
    texts = ["The movie was great.", "Dull."]
    np.testing.assert_allclose(merged.predict(texts, verbose=0), adapter.predict(texts, verbose=0), atol=1e-5)


def test_grid_sweep_is_one_parent_with_a_child_per_job(tmp_path):
    result = train(tmp_path, "-m", *FAST, "lora.rank=2,4", "trainer.checkpoint=false", quiet=True)
    assert "Creating initial MLflow database tables" not in result.stderr  # the parent's store, quiet too
    all_runs = runs(tmp_path)
    parents = [r for r in all_runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    best = max(r.data.metrics["final_val_accuracy"] for r in children)
    assert parent.data.metrics["best_val_accuracy"] == best
    by_id = {r.info.run_id: r for r in children}
    assert by_id[parent.data.tags["best_run_id"]].data.metrics["final_val_accuracy"] == best
    first_best = min((r for r in children if r.data.metrics["final_val_accuracy"] == best), key=lambda r: r.info.run_name)
    assert parent.data.tags["best_run_id"] == first_best.info.run_id  # a tie goes to the first job, as Optuna's
    assert "lora.rank=2,4" in parent.data.tags["sweep.overrides"]
    names = {r.info.run_name for r in children}  # unique across sweeps: they carry the parent's id
    assert names == {f"sweep-{parent.info.run_id[:8]}-{n}" for n in (0, 1)}


def test_every_family_trains_through_train_py(tmp_path):
    """The tiny config of each family, with LoRA, in one sweep (one process)."""
    train(tmp_path, "-m", "backbone=bert_tiny,llama_tiny,gemma_tiny", "lora.rank=2", *FAST, "trainer.checkpoint=false")
    children = [r for r in runs(tmp_path) if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(r.data.params["backbone.preset"] for r in children) == [
        "bert_tiny_random_en", "gemma_tiny_en", "llama_tiny_en"]
    assert all(r.info.status == "FINISHED" and "model" in model_parts(client(tmp_path), r.info.run_id)
               for r in children)


def test_parallel_sweep_shares_one_store(tmp_path):
    """Two jobs in parallel processes log into the sqlite store the parent created first."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    train(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST, "lora.rank=2,4",
          "trainer.checkpoint=false")
    all_runs = runs(tmp_path)
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(all_runs) == 3 and len(children) == 2
    assert all(r.info.status == "FINISHED" for r in all_runs)


def test_optuna_search(tmp_path):
    train(tmp_path, "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.seed=0",
          f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}", "hydra.sweeper.study_name=lr",
          "optimizer.learning_rate=tag(log, interval(1e-4, 1e-2))", *FAST, "trainer.checkpoint=false")
    import optuna

    study = optuna.load_study(study_name="lr", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]  # persisted, resumable
    children = [r for r in runs(tmp_path) if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 2
    rates = {float(r.data.params["optimizer.learning_rate"]) for r in children}
    assert len(rates) == 2 and all(1e-4 <= r <= 1e-2 for r in rates)
    results = list(tmp_path.glob("multirun/*/*/optimization_results.yaml"))
    assert len(results) == 1


def test_reproduce_matches_exactly_with_determinism(tmp_path):
    train(tmp_path, *FAST, "trainer.deterministic=true", "task.dropout=0.1")
    (run,) = runs(tmp_path)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), run.info.run_id],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "metrics match" in result.stdout
    again = [r for r in runs(tmp_path) if r.data.tags.get("reproduce_of") == run.info.run_id]
    assert len(again) == 1


@pytest.mark.parametrize("lora", [[], ["lora.rank=2"]], ids=["full", "lora"])
def test_killed_run_resumes_to_the_same_metrics(tmp_path, lora):
    """A full fine-tune's checkpoint holds every variable; a LoRA run's only what changes (on the same base)."""
    args = [*lora, "trainer.epochs=6", "trainer.batch_size=8", "data.max_train_samples=400",
            "data.max_validation_samples=64", "trainer.deterministic=true", "trainer.jit_compile=false",
            "trainer.sequence_length=24"]
    proc = train(tmp_path, *args, quiet=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob(".checkpoints/*/state.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    message = proc.stderr.read()
    assert "Traceback" not in message and all(line.startswith(("Interrupted", "TruncationWarning"))
                                              for line in message.splitlines()), message
    assert "Interrupted (SIGTERM) after epoch" in message and "Run the same command to resume" in message
    (killed,) = runs(tmp_path)
    assert killed.info.status == "KILLED"
    state = json.loads(next(tmp_path.glob(".checkpoints/*/state.json")).read_text())
    assert 1 <= state["epoch"] < 6 and state["scope"] == ("trainable" if lora else "all")

    result = train(tmp_path, *args)
    assert f"Resuming MLflow run {killed.info.run_id}" in result.stdout
    (resumed,) = runs(tmp_path)
    assert resumed.info.status == "FINISHED" and resumed.info.run_id == killed.info.run_id
    assert not list(tmp_path.glob(".checkpoints/*"))

    train(tmp_path, *args, "tracking.experiment=uninterrupted")
    (straight,) = runs(tmp_path, "uninterrupted")
    for key in ("final_val_accuracy", "final_val_loss"):
        assert resumed.data.metrics[key] == straight.data.metrics[key], key


def test_bad_data_found_in_the_run_ends_it_failed(tmp_path):
    """Data the pre-flight does not read whole (a Parquet file's labels) fails in the run, which ends FAILED."""
    import pandas as pd

    pd.DataFrame({"text": ["t"] * 40, "label": [i % 3 for i in range(40)]}).to_parquet(tmp_path / "d.parquet")
    result = train(tmp_path, *FAST, "data=local", "data.path=d.parquet", "data.num_classes=2", check=False)
    assert result.returncode == 1
    assert "outside [0, data.num_classes=2)" in result.stderr
    (run,) = runs(tmp_path)
    assert run.info.status == "FAILED"


def test_config_errors_fail_before_any_run(tmp_path):
    result = train(tmp_path, "lora.rank=0", check=False)
    assert result.returncode != 0 and "lora.rank=0 must be positive" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_logs_to_a_real_mlflow_server(tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        result = train(tmp_path, *FAST, "tracking=server", f"tracking.uri={uri}", "lora.rank=2",
                       "tracking.register=clf", "tracking.alias=champion")
        import mlflow

        c = mlflow.MlflowClient(uri)
        (run,) = c.search_runs([c.get_experiment_by_name("backbone-lab").experiment_id])
        assert run.info.status == "FINISHED" and "final_val_accuracy" in run.data.metrics
        assert "config.yaml" in {a.path for a in c.list_artifacts(run.info.run_id)}
        assert "model" in model_parts(c, run.info.run_id)
        # A remote artifact store: the model is uploaded from a temporary directory, deleted after.
        assert "saved model/" in result.stdout and "mlflow-artifacts:" in result.stdout
        assert not [p for p in tmp_path.rglob("*") if p.name == "adapter.lora.safetensors"
                    and "artifacts" not in p.relative_to(tmp_path).parts[0]]
        task = artifacts_lib.load_run_model(run.info.run_id, tracking_uri=uri, dst_dir=tmp_path / "dl")
        # The run registered its own model in the server's registry.
        version = c.get_model_version_by_alias("clf", "champion")
        assert version.version == "1" and version.run_id == run.info.run_id
        assert version.source == f"models:/{run.outputs.model_outputs[0].model_id}"
        assert task.backbone.lora_spec.rank == 2
        assert len(list((tmp_path / "dl").rglob("model/adapter.lora.safetensors"))) == 1
    finally:
        server.terminate()
        server.wait(timeout=30)
