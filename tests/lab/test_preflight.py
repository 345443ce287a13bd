"""The pre-flight check: each mistake fails in train.py before TensorFlow is
imported and before any MLflow store or run exists, with one paragraph
naming the key or file; `+check=true` runs the check alone."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import backbones
from backbones import registry
from lab import preflight, schema
from lab.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]
schema.register()


def check_command(tmp_path, *overrides, env=None):
    """train.py in a subprocess, with Python's import log (`-X importtime`)."""
    env = {**os.environ, **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "train.py"), *overrides],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    result.seconds = time.perf_counter() - start
    result.imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                       if line.startswith("import time:")}
    result.message = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))
    return result


def _jsonl(path, rows, broken_line=None):
    lines = [json.dumps(r) for r in rows]
    if broken_line:
        lines[broken_line - 1] = lines[broken_line - 1][:-1] + ",}"
    path.write_text("\n".join(lines) + "\n")
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROWS = [{"text": f"review {i}", "label": i % 3} for i in range(20)]
CASES = {
    "unknown preset": (["backbone.preset=gpt2_tiny"], ["backbone.preset='gpt2_tiny'", "Did you mean 'gpt2_tiny_en'"]),
    "hf preset not cached, offline": (["backbone.preset=hf://nobody/nothing"], ["not in the Hugging Face cache"]),
    "missing data file": (["data=local", "data.path=missing.csv", "data.num_classes=2"],
                          ["missing.csv does not exist", "data.path"]),
    "missing column": (["data=local", "data.path={tmp}/d.jsonl", "data.num_classes=3", "data.text_column=body"],
                       ["data.text_column='body' is not a column", "'label', 'text'"]),
    "malformed jsonl line": (["data=local", "data.path={tmp}/broken.jsonl", "data.num_classes=3"],
                             ["broken.jsonl, line 13: not valid JSON"]),
    "labels beyond num_classes": (["data=local", "data.path={tmp}/d.jsonl", "data.num_classes=2"],
                                  ["Labels [2] are outside", "data.num_classes=3"]),
    "encoder with causal_lm": (["backbone=bert_tiny", "task=causal_lm", "data=sentiment_text"],
                               ["task=causal_lm needs a decoder", "BertBackbone"]),
    "unknown lora target": (["lora.rank=4", "lora.targets=[query,gate]"], ["lora.targets has ['gate']", "ffn"]),
    "sequence longer than positions": (["trainer.sequence_length=512"],
                                       ["trainer.sequence_length=512", "256 positions", "max_sequence_length"]),
    "tracking server unreachable": (["tracking=server", "tracking.uri=http://127.0.0.1:{port}"],
                                    ["does not answer", "tracking=local"]),
    "bad value": (["lora.rank=0"], ["lora.rank=0 must be positive"]),
    "decoder classifier export with a head bias": (["tracking.export=[transformers]"],
                                                   ["task.head_bias=false", "GPT2Backbone"]),
    # The default gpt2_tiny_en has no pad token and eos id 0: found after training, before this check.
    "decoder classifier export padding with its eos": (["tracking.export=[transformers]", "task.head_bias=false"],
                                                       ["pads with its eos token (id 0)", "drop transformers"]),
    "peft export without lora": (["tracking.export=[peft]"], ["tracking.export has peft", "lora.rank=R"]),
    "unknown export format": (["tracking.export=[onnx]"], ["tracking.export has ['onnx']", "transformers"]),
}


@pytest.mark.parametrize("case", CASES)
def test_mistakes_fail_before_tensorflow_and_mlflow(tmp_path, case):
    _jsonl(tmp_path / "d.jsonl", ROWS)
    _jsonl(tmp_path / "broken.jsonl", ROWS, broken_line=13)
    overrides, words = CASES[case]
    overrides = [o.format(tmp=tmp_path, port=_free_port()) for o in overrides]
    result = check_command(tmp_path, *overrides, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert result.returncode == 1, result.stderr[-3000:]
    for word in words:
        assert word in result.message, result.message
    assert result.message.startswith("error: ") and "Traceback" not in result.message
    assert not {"tensorflow", "keras", "mlflow"} & result.imported
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert result.seconds < 20  # about 1.5 s alone; TensorFlow's import alone is about 3.3 s


def test_check_alone_passes_quickly_and_creates_nothing(tmp_path):
    result = check_command(tmp_path, "+check=true", "lora.rank=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Pre-flight check passed" in result.stdout and "GPT2Backbone" in result.stdout
    assert not {"tensorflow", "keras", "mlflow"} & result.imported
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".checkpoints").exists()


def make(overrides=()):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_a_decoder_classifier_with_its_own_pad_token_may_export():
    preflight.check(make(["backbone=llama_tiny", "task.head_bias=false", "tracking.export=[transformers]"]))


def test_a_cached_transformers_checkpoint_is_read_offline(tmp_path, monkeypatch):
    """hf:// in the Hugging Face cache: the family and positions come from its config.json."""
    from tests.helpers import make_hf_cache

    cache = tmp_path / "hub"
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 32}))
    make_hf_cache(cache, "someone/tiny-gpt2", checkpoint)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    cfg = make(["backbone.preset=hf://someone/tiny-gpt2", "trainer.sequence_length=48"])
    with pytest.raises(ConfigError, match=r"longer than the 32 positions .*\(n_positions"):
        preflight.check(cfg)


def test_family_facts_are_what_the_classes_and_converters_use():
    """One source: each family's facts (family.py) agree with its class and registered converters."""
    backbones.load()
    ours = {n for n, c in registry.BACKBONE_CLASSES.items() if c.__module__.startswith("backbones.")}
    assert set(registry.FAMILIES) == ours - {"Backbone"}  # (test modules may register fakes)
    for name, family in registry.FAMILIES.items():
        cls = registry.BACKBONE_CLASSES[name]
        assert cls.lora_target_layers is family.lora_targets and cls.is_encoder == family.is_encoder
        assert {t for t, c in registry.HF_CONVERTERS.items() if c.backbone_class == name} == set(family.hf_model_types)
        assert {k for k, c in registry.KERAS_HUB_CONVERTERS.items()
                if c.backbone_class == name} == set(family.keras_hub_classes)
        assert all(registry.BACKBONE_PRESETS[p]["class_name"] == name for p in family.presets)


def test_import_backbones_is_light():
    code = ("import sys, backbones, backbones.preset_facts, lab.preflight; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
