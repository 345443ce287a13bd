"""What a run saves as its model (lab.artifacts), logged into real MLflow stores and rebuilt."""

import json

import keras
import numpy as np
import pytest

import backbones
import tasks
from lab import artifacts

TEXTS = ["a great film", "an awful film", "fine", "so dull"]


def trained_lora_task(task_class=tasks.TextClassifier, dtype="float32", quantize=None, **kwargs):
    backbone = backbones.Backbone.from_preset("gpt2_tiny_en", dtype=dtype, quantize=quantize)
    backbone.enable_lora(2)
    task = task_class(backbone, sequence_length=16, **kwargs)
    task.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    if isinstance(task, tasks.TextClassifier):
        task.fit(TEXTS, [1, 0, 1, 0], batch_size=2, epochs=1, verbose=0)  # moves LoRA and head off their init
    else:
        task.fit(TEXTS, batch_size=2, epochs=1, verbose=0)
    return task, artifacts.frozen_base(_cfg(), backbone)


def _cfg(preset="gpt2_tiny_en", load_weights=True):
    from omegaconf import OmegaConf

    return OmegaConf.create({"preset": preset, "load_weights": load_weights})


def test_lora_run_logs_once_and_rebuilds_the_same_predictions(tmp_path):
    import mlflow

    task, base = trained_lora_task(num_classes=2)
    assert base is not None  # only LoRA matrices train: a frozen base
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("e", artifact_location=(tmp_path / "mlruns").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        saved = artifacts.log_run_model(task, base, "adapter")
    where, size = saved["model"]
    files = sorted(p.name for p in (tmp_path / "mlruns").rglob("*") if p.is_file())
    assert files == ["adapter.lora.safetensors", "base.json", "task.json", "task.weights.h5"]  # no preset, no copy
    assert size < 0.2 * (backbones.handles.resolve_preset("gpt2_tiny_en") / "model.weights.h5").stat().st_size
    record = json.loads((artifacts.local_artifact_dir(where) / "base.json").read_text())
    assert record["preset"] == "gpt2_tiny_en" and record["dtype"] == "float32"
    assert record["files"]["model.weights.h5"]["from"] == "metadata.json"  # known checksum reused, not re-hashed

    again = artifacts.load_run_model(run.info.run_id, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert type(again) is tasks.TextClassifier and again.backbone.lora_spec == task.backbone.lora_spec
    # Equal up to float rounding (two traced graphs may order the LoRA matmuls differently).
    np.testing.assert_allclose(again.predict(TEXTS, verbose=0), task.predict(TEXTS, verbose=0), rtol=0, atol=1e-5)


def test_int8_lora_run_rebuilds_its_quantized_base_with_the_same_predictions(tmp_path):
    task, base = trained_lora_task(dtype="bfloat16", quantize="int8", num_classes=2)
    assert base.to_dict()["quantize"] == "int8"
    artifacts.save_run_model(task, base, "adapter", tmp_path)
    again = artifacts.load_run_model(tmp_path)  # the base quantized as it loads, then the adapter
    assert again.backbone.quantized and again.backbone.token_embedding.embeddings.dtype == "int8"
    np.testing.assert_array_equal(again.predict(TEXTS, verbose=0), task.predict(TEXTS, verbose=0))


@pytest.mark.parametrize("task_class, kwargs", [(tasks.TextClassifier, {"num_classes": 3}), (tasks.CausalLM, {})])
def test_bfloat16_adapter_round_trip(tmp_path, task_class, kwargs):
    """bfloat16 head weights (h5py keeps them as opaque records) load back too."""
    task, base = trained_lora_task(task_class, dtype="bfloat16", **kwargs)
    assert sorted(artifacts.save_run_model(task, base, "both", tmp_path)) == ["model", "preset"]
    from_adapter = artifacts.load_run_model(tmp_path)  # model/ is preferred
    merged = tasks.Task.from_preset(tmp_path / "preset")
    x = task.preprocessor(TEXTS)
    expected = task.predict(x, verbose=0)
    np.testing.assert_array_equal(from_adapter.predict(x, verbose=0), expected)
    assert from_adapter.backbone.dtype_policy.name == "bfloat16"
    np.testing.assert_allclose(merged.predict(x, verbose=0).astype("float32"), expected.astype("float32"), atol=0.1)


def test_a_different_base_is_refused(tmp_path):
    task, base = trained_lora_task(num_classes=2)
    artifacts.save_run_model(task, base, "adapter", tmp_path)
    path = tmp_path / "model" / "base.json"
    record = json.loads(path.read_text())
    record["files"]["model.weights.h5"]["sha256"] = "0" * 64
    path.write_text(json.dumps(record))
    with pytest.raises(artifacts.RunModelError, match="model.weights.h5"):
        artifacts.load_run_model(tmp_path)
    artifacts.load_run_model(tmp_path, verify_base=False)


def test_what_is_saved_follows_the_switch(tmp_path):
    task, base = trained_lora_task(num_classes=2)
    assert artifacts.save_run_model(task, base, "none", tmp_path / "a") == {}
    assert sorted(artifacts.save_run_model(task, base, "merged", tmp_path / "b")) == ["preset"]
    # A full fine-tune (base None) saves its preset once, whatever the switch says.
    assert sorted(artifacts.save_run_model(task, None, "adapter", tmp_path / "c")) == ["preset"]
    assert artifacts.frozen_base(_cfg(load_weights=False), task.backbone) is None  # random init: no base to name
    (tmp_path / "a").mkdir()
    with pytest.raises(artifacts.RunModelError, match="holds no saved model"):
        artifacts.load_run_model(tmp_path / "a")


def test_pinned_handles():
    assert artifacts.pinned_handle("hf://google/gemma-2b", "/c/models--google--gemma-2b/snapshots/abc123") == \
        "hf://google/gemma-2b@abc123"
    assert artifacts.pinned_handle("hf://google/gemma-2b@main", "/c/snapshots/abc123") == "hf://google/gemma-2b@abc123"
    assert artifacts.pinned_handle("kaggle://keras/gpt2/keras/gpt2_base_en", "/k/gpt2_base_en/3") == \
        "kaggle://keras/gpt2/keras/gpt2_base_en/3"


def test_hf_cache_blob_names_are_used_as_checksums(tmp_path):
    """In a real Hugging Face cache, LFS files are symlinks to blobs named by their sha256."""
    import hashlib

    data = b"weights" * 1000
    blob = tmp_path / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir()
    blob.write_bytes(data)
    snapshot = tmp_path / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blob)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "notes.bin").write_bytes(b"x")  # not a preset file: not recorded
    files = artifacts.file_checksums(snapshot)
    assert sorted(files) == ["config.json", "model.safetensors"]
    assert files["model.safetensors"] == {"sha256": blob.name, "bytes": len(data), "from": "hf-cache-blob"}
    assert files["config.json"]["sha256"] == hashlib.sha256(b"{}").hexdigest()


def test_peft_export_beside_the_adapter_loads_back_to_the_same_backbone(tmp_path):
    """`tracking.export=[peft]`: `peft/` is the run's adapter in PEFT's format; read back onto the
    base, it gives the trained backbone's hidden states."""
    task, base = trained_lora_task(tasks.CausalLM)
    saved = artifacts.save_run_model(task, base, "adapter", tmp_path, exports=["peft"])
    assert sorted(saved) == ["model", "peft"]
    assert sorted(p.name for p in saved["peft"].iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    fresh = backbones.Backbone.from_preset("gpt2_tiny_en")
    fresh.load_lora_weights(saved["peft"])
    x = task.preprocessor(TEXTS)
    np.testing.assert_allclose(fresh(x), task.backbone(x), atol=1e-5)
