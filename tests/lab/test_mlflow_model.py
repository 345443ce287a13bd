"""A run's model as an MLflow model: logged, loaded in a fresh process, registered, served over HTTP.

Two train.py sweeps into one sqlite store (module-scoped, shared by the tests), each a full fine-tune and a
LoRA job: classifiers, whose sweep registers its best job, and causal LMs. (A single run registering itself,
into a real tracking server: tests/lab/test_train.py::test_logs_to_a_real_mlflow_server.)
"""

import functools
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from lab import artifacts, registry
from tests.lab.test_train import FAST, ROOT, train

TEXTS = ["The movie was great.", "A dull and slow story."]
PROMPTS = ["The movie", "The food was"]
# The package as installed (here: its source tree on the path), and nothing else.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    train(tmp, "-m", *FAST, "lora.rank=null,2", "trainer.checkpoint=false", "tracking.register=clf",
          "tracking.alias=champion")
    train(tmp, "-m", *FAST, "task=causal_lm", "data=sentiment_text", "lora.rank=null,2", "trainer.checkpoint=false",
          "tracking.experiment=lm", "tracking.export=[transformers]")
    import mlflow

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    found = {}
    for experiment in ("backbone-lab", "lm"):
        for run in client.search_runs([client.get_experiment_by_name(experiment).experiment_id]):
            if run.data.tags.get("sweep") != "true":
                found[f"{'lm' if experiment == 'lm' else 'clf'}_{run.data.params['lora.rank']}"] = run
    return tmp, uri, client, found


@functools.cache
def rebuilt(uri, run_id):
    """The run's task rebuilt in this process (`load_run_model`), once per run."""
    return artifacts.load_run_model(run_id, tracking_uri=uri)


def in_process(uri, run, texts):
    """What the rebuilt task itself predicts: `generate` (greedy, to the training length), or
    `predict`'s logits as probabilities and the label ids (the bundled data's labels are 0 and 1)."""
    task = rebuilt(uri, run.info.run_id)
    if "CausalLM" in type(task).__name__:
        return {"generated_text": task.generate(texts, max_length=task.preprocessor.sequence_length)}
    logits = task.predict(texts, verbose=0).astype("float64")
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return {"label": [str(i) for i in probabilities.argmax(-1)], "probabilities": probabilities}


def test_each_run_logs_one_logged_model_with_params_metrics_and_no_second_copy(store):
    import mlflow

    tmp, uri, client, runs = store
    for key, run in runs.items():
        (output,) = run.outputs.model_outputs
        model = client.get_logged_model(output.model_id)
        assert model.name == "model" and model.source_run_id == run.info.run_id and model.status.to_int() == 2  # READY
        assert model.params["lora.rank"] == run.data.params["lora.rank"]
        metrics = {m.key: m.value for m in model.metrics}
        assert metrics and all(metrics[k] == run.data.metrics[k] for k in metrics if k.startswith("final_"))
        directory = artifacts.local_artifact_dir(model.artifact_location)
        files = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
        part = "preset" if key.endswith("_None") else "model"  # a full fine-tune saves its preset, LoRA its adapter
        assert {"MLmodel", "requirements.txt", "input_example.json", f"{part}/task.json"} <= files
        pinned = f"backbone-lab=={importlib.metadata.version('backbone-lab')}"  # pyproject's name, this version
        assert pinned in (directory / "requirements.txt").read_text().split()
        signature = mlflow.models.Model.load(str(directory / "MLmodel")).signature
        assert signature.inputs.input_types() == [mlflow.types.DataType.string]
        if key.startswith("lm"):  # generation settings as signature params, with their defaults
            assert {p.name: p.default for p in signature.params.params} == {
                "max_length": 24, "sampler": "greedy", "temperature": 1.0, "seed": 0}
        else:
            assert signature.params is None
        run_dir = artifacts.local_artifact_dir(run.info.artifact_uri)
        assert not [p for p in run_dir.rglob("*") if p.suffix in (".h5", ".safetensors")]  # written once
    weights = list(tmp.rglob("model.weights.h5"))
    assert len(weights) == 2 and all("preset" in w.parts for w in weights)  # only the full fine-tunes' presets


def test_tracking_export_writes_a_transformers_checkpoint_with_the_model(store):
    """`tracking.export=[transformers]`: beside the model, a checkpoint transformers loads (LoRA merged)
    and whose logits are the run's model's."""
    import torch
    import transformers

    tmp, uri, client, runs = store
    for key in ("lm_None", "lm_2"):
        run = runs[key]
        (output,) = run.outputs.model_outputs
        directory = artifacts.local_artifact_dir(client.get_logged_model(output.model_id).artifact_location)
        hf = transformers.AutoModelForCausalLM.from_pretrained(directory / "transformers").eval()
        task = rebuilt(uri, run.info.run_id)
        x = task.preprocessor(TEXTS)
        with torch.no_grad():
            theirs = hf(input_ids=torch.tensor(np.asarray(x["token_ids"]), dtype=torch.long),
                        attention_mask=torch.tensor(np.asarray(x["padding_mask"]), dtype=torch.long)).logits.numpy()
        ours = np.asarray(task.predict(x, verbose=0))
        mask = np.asarray(x["padding_mask"]).astype(bool)
        np.testing.assert_allclose(theirs[mask], ours[mask], atol=1e-4)


def test_pyfunc_loads_in_a_fresh_process_with_the_same_predictions(store):
    tmp, uri, client, runs = store
    script = ("import json, sys, mlflow\n"
              "out = {}\n"
              "for key, model_uri, texts in json.loads(sys.argv[1]):\n"
              "    model = mlflow.pyfunc.load_model(model_uri)\n"
              "    out[key] = model.predict(texts).to_dict('list')\n"
              "print(json.dumps(out, default=list))\n")
    jobs = [[key, f"runs:/{run.info.run_id}/model", PROMPTS if key.startswith("lm") else TEXTS]
            for key, run in runs.items()]
    result = subprocess.run([sys.executable, "-c", script, json.dumps(jobs)], env={**ENV, "MLFLOW_TRACKING_URI": uri},
                            cwd=tmp, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads(result.stdout.splitlines()[-1])
    for key, run in runs.items():
        expected = in_process(uri, run, PROMPTS if key.startswith("lm") else TEXTS)
        if key.startswith("lm"):
            assert fresh[key]["generated_text"] == expected["generated_text"]
            assert all(t.startswith(p) for t, p in zip(fresh[key]["generated_text"], PROMPTS))
        else:
            assert fresh[key]["label"] == expected["label"]
            np.testing.assert_allclose(fresh[key]["probabilities"], expected["probabilities"], atol=1e-6)


def test_sweep_registers_its_best_job_tagged_with_the_sweep(store):
    tmp, uri, client, runs = store
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name("backbone-lab").experiment_id])
                 if r.data.tags.get("sweep") == "true"]
    (version,) = client.search_model_versions("name = 'clf'")
    best = parent.data.tags["best_run_id"]
    assert version.run_id == best and version.tags[registry.SWEEP_TAG] == parent.info.run_id
    assert version.source == f"models:/{client.get_run(best).outputs.model_outputs[0].model_id}"
    assert client.get_model_version_by_alias("clf", "champion").version == version.version
    assert parent.data.tags["registered_model"] == "models:/clf/1"
    assert [m.name for m in client.search_registered_models()] == ["clf"]  # the jobs themselves register nothing


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, payload):
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_mlflow_models_serve_answers_over_http_like_the_task(store):
    tmp, uri, client, runs = store
    servers = {}
    try:
        for name, model_uri in (("clf", "models:/clf/1"), ("lm", f"runs:/{runs['lm_2'].info.run_id}/model")):
            port = _free_port()
            servers[name] = (port, subprocess.Popen(
                [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(port)], cwd=tmp, env={**ENV, "MLFLOW_TRACKING_URI": uri},
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True))
        deadline = time.time() + 150
        for name, (port, proc) in servers.items():
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                    break
                except OSError:
                    assert proc.poll() is None, proc.stderr.read()[-3000:]
                    assert time.time() < deadline, f"mlflow models serve {name} did not answer /ping"
                    time.sleep(0.5)
        port = servers["clf"][0]
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": TEXTS})["predictions"]
        best = client.get_run(client.get_model_version("clf", "1").run_id)
        expected = in_process(uri, best, TEXTS)
        assert [a["label"] for a in answer] == expected["label"]
        np.testing.assert_allclose([a["probabilities"] for a in answer], expected["probabilities"], atol=1e-6)

        port = servers["lm"][0]
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": PROMPTS, "params": {"max_length": 12}})
        task = rebuilt(uri, runs["lm_2"].info.run_id)
        assert [a["generated_text"] for a in answer["predictions"]] == task.generate(PROMPTS, max_length=12)
    finally:
        for port, proc in servers.values():  # the server and its workers: the session it leads
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
