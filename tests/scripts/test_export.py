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
