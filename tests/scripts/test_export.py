"""scripts/export.py: a task preset out to transformers and back to a preset;
asking a merged preset for its PEFT adapter is a clear exit."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import export  # noqa: E402


def test_task_preset_to_transformers_and_preset(tmp_path):
    import tasks

    tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=8).save_to_preset(tmp_path / "lm")
    export.main([str(tmp_path / "lm"), "--to", "transformers", str(tmp_path / "hf")])
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    export.main([str(tmp_path / "hf"), "--to", "preset", str(tmp_path / "again")])
    assert json.loads((tmp_path / "again" / "config.json").read_text())["class_name"] == "GPT2Backbone"


def test_peft_export_of_a_merged_preset_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no LoRA adapter"):
        export.main(["gpt2_tiny_en", "--to", "peft", str(tmp_path / "adapter")])
    assert not (tmp_path / "adapter").exists()


def test_run_id_to_peft_gives_the_runs_backbone(tmp_path):
    """A run id: the run's model is rebuilt from its store (`--tracking-uri`) and its adapter
    written in PEFT's format, which reads back onto the base as the trained backbone."""
    import mlflow
    import numpy as np

    import backbones
    import tasks
    from lab import artifacts
    from tests.helpers import randomize_lora

    backbone = backbones.Backbone.from_preset("gpt2_tiny_en")
    backbone.enable_lora(2)
    randomize_lora(backbone)  # as if trained: B off zero
    task = tasks.CausalLM(backbone, sequence_length=8)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("e", artifact_location=(tmp_path / "mlruns").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            artifacts.log_run_model(task, artifacts.BaseRecord("gpt2_tiny_en", backbone), "adapter")
    finally:
        mlflow.set_tracking_uri(None)
    export.main([run.info.run_id, "--to", "peft", str(tmp_path / "adapter"), "--tracking-uri", uri])
    fresh = backbones.Backbone.from_preset("gpt2_tiny_en")
    fresh.load_lora_weights(tmp_path / "adapter")
    x = task.preprocessor(["a great film", "so dull"])
    np.testing.assert_allclose(fresh(x), backbone(x), atol=1e-5)
    assert np.abs(np.asarray(fresh(x)) - np.asarray(backbones.Backbone.from_preset("gpt2_tiny_en")(x))).max() > 1e-3
