import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backbones
import tasks
from backbones.errors import PresetChecksumError, PresetClassMismatchError, PresetFormatError
from backbones.handles import resolve_preset
from tasks import task_presets
from tests.helpers import make_hf_cache
from tests.tasks.fakes import TinyEncoderTestBackbone

TEXTS = ["the movie was great", "awful food", ""]


def randomize(task, scale=0.3):
    """Non-default head weights, so a round trip that drops them would show."""
    rng = np.random.default_rng(0)
    for v in task_presets.head_variables(task).values():
        v.assign(rng.normal(size=v.shape).astype("float32") * scale)


def test_classifier_round_trip(tmp_path):
    clf = tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=3, sequence_length=12, dropout=0.2)
    randomize(clf)
    expected = clf.predict(TEXTS, verbose=0)
    clf.save_to_preset(tmp_path / "clf")
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == [
        "config.json", "metadata.json", "model.weights.h5", "task.json", "task.weights.h5",
        "tokenizer.json", "tokenizer_config.json"]
    spec = json.loads((tmp_path / "clf" / "task.json").read_text())
    assert spec["class_name"] == "TextClassifier"
    assert spec["config"] == {"name": clf.name, "num_classes": 3, "dropout": 0.2, "head_bias": True}
    assert spec["preprocessor"] == {"sequence_length": 12, "is_encoder": False, "add_end_token": True}
    assert "task.weights.h5" in json.loads((tmp_path / "clf" / "metadata.json").read_text())["sha256"]

    restored = tasks.Task.from_preset(tmp_path / "clf")  # class inferred from task.json
    assert type(restored) is tasks.TextClassifier and restored.num_classes == 3 and restored.dropout == 0.2
    assert restored.preprocessor.sequence_length == 12
    np.testing.assert_array_equal(restored.predict(TEXTS, verbose=0), expected)
    assert restored.preprocessor.tokenizer(TEXTS) == clf.preprocessor.tokenizer(TEXTS)
    # The task preset is also a backbone preset.
    assert type(backbones.Backbone.from_preset(tmp_path / "clf")).__name__ == "GPT2Backbone"


def test_causal_lm_round_trip_including_generation(tmp_path):
    lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=10)
    lm.save_to_preset(tmp_path / "lm")
    restored = tasks.Task.from_preset(tmp_path / "lm")
    assert type(restored) is tasks.CausalLM
    np.testing.assert_array_equal(restored.predict(TEXTS, verbose=0), lm.predict(TEXTS, verbose=0))
    assert restored.generate("the movie", max_length=10) == lm.generate("the movie", max_length=10)


def test_encoder_classifier_round_trip(tmp_path):
    clf = tasks.TextClassifier(TinyEncoderTestBackbone(), num_classes=2, sequence_length=6)
    randomize(clf)
    clf.save_to_preset(tmp_path / "enc")
    restored = tasks.TextClassifier.from_preset(tmp_path / "enc")
    assert restored.preprocessor.is_encoder
    np.testing.assert_array_equal(restored.predict(["good film"], verbose=0), clf.predict(["good film"], verbose=0))


def test_fresh_head_on_a_pretrained_backbone_preset():
    clf = tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=3)
    backbone = backbones.Backbone.from_preset("gpt2_tiny_en")
    for a, b in zip(clf.backbone.get_weights(), backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert clf.predict(["fine"], verbose=0).shape == (1, 3)
    assert clf.preprocessor.sequence_length == 128  # the default
    with pytest.raises(PresetFormatError, match=r"backbone preset \(no task.json\).*TextClassifier.from_preset"):
        tasks.Task.from_preset("gpt2_tiny_en")


def test_overrides_go_to_the_backbone_or_the_task(tmp_path):
    tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=2).save_to_preset(tmp_path / "clf")
    restored = tasks.Task.from_preset(tmp_path / "clf", dtype="bfloat16", trainable=False, sequence_length=8)
    assert restored.backbone.dtype_policy.name == "bfloat16" and not restored.backbone.trainable
    assert restored.preprocessor.sequence_length == 8
    random_weights = tasks.Task.from_preset(tmp_path / "clf", load_weights=False)
    assert not np.array_equal(random_weights.backbone.get_weights()[0], restored.backbone.get_weights()[0])


def test_wrong_class_unregistered_class_and_changed_head(tmp_path):
    tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=3).save_to_preset(tmp_path / "clf")
    with pytest.raises(PresetClassMismatchError, match="holds a TextClassifier task, not a CausalLM"):
        tasks.CausalLM.from_preset(tmp_path / "clf")
    with pytest.raises(PresetFormatError, match=r"was num_classes changed\?"):
        tasks.TextClassifier.from_preset(tmp_path / "clf", num_classes=5)
    spec_path = tmp_path / "clf" / "task.json"
    spec = json.loads(spec_path.read_text())
    spec["class_name"] = "os.system"
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(PresetFormatError, match="names task class 'os.system'"):
        tasks.Task.from_preset(tmp_path / "clf")


def test_corrupted_head_weights_fail_the_checksum(tmp_path):
    tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=2).save_to_preset(tmp_path / "clf")
    with open(tmp_path / "clf" / "task.weights.h5", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"corrupt!")
    with pytest.raises(PresetChecksumError, match="task.weights.h5 is corrupted"):
        tasks.Task.from_preset(tmp_path / "clf")


def test_preset_without_tokenizer_is_a_clear_error(tmp_path):
    shutil.copytree(resolve_preset("gpt2_tiny_en"), tmp_path / "bare")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "bare" / name).unlink()
    with pytest.raises(tasks.MissingTokenizerError, match=r"has no tokenizer \(no tokenizer.json\)"):
        tasks.TextClassifier.from_preset(tmp_path / "bare", num_classes=2)
    with pytest.raises(tasks.MissingTokenizerError, match="no tokenizer"):
        tasks.CausalLM.from_preset(tmp_path / "bare")


def test_save_is_atomic(tmp_path, monkeypatch):
    clf = tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=2, sequence_length=8)
    clf.save_to_preset(tmp_path / "clf")
    expected = clf.predict(TEXTS, verbose=0)
    randomize(clf)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(task_presets, "save_head_weights", fail)
    with pytest.raises(OSError, match="disk full"):
        clf.save_to_preset(tmp_path / "clf")
    assert [p.name for p in tmp_path.iterdir()] == ["clf"]  # no partial directory left
    np.testing.assert_array_equal(tasks.Task.from_preset(tmp_path / "clf").predict(TEXTS, verbose=0), expected)


def test_lora_task_saves_merged_weights(tmp_path):
    clf = tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=2, sequence_length=8)
    clf.backbone.enable_lora(2)
    for w in clf.backbone.weights:
        if w.name == "lora_kernel_b":
            w.assign(np.full(w.shape, 0.05, "float32"))
    expected = clf.predict(TEXTS, verbose=0)
    clf.save_to_preset(tmp_path / "clf")
    restored = tasks.Task.from_preset(tmp_path / "clf")
    assert restored.backbone.lora_spec is None
    np.testing.assert_allclose(restored.predict(TEXTS, verbose=0), expected, atol=1e-4)


def test_hf_handle_of_a_task_preset_offline(tmp_path):
    """A task preset pushed to a Hugging Face repo loads through hf:// from the cache."""
    clf = tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=2, sequence_length=8)
    randomize(clf)
    clf.save_to_preset(tmp_path / "files")
    make_hf_cache(tmp_path / "hub", "someone/tiny-clf", tmp_path / "files")
    np.save(tmp_path / "expected.npy", clf.predict(TEXTS, verbose=0))
    script = (
        "import sys, numpy as np, tasks; d = sys.argv[1];"
        "t = tasks.Task.from_preset('hf://someone/tiny-clf');"
        "np.testing.assert_array_equal(t.predict(['the movie was great', 'awful food', ''], verbose=0),"
        " np.load(d + '/expected.npy')); print(type(t).__name__)"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env, timeout=300,
                         capture_output=True, text=True, cwd=Path(tasks.__file__).parents[1])
    assert out.stdout.strip().endswith("TextClassifier")


def test_task_class_registered_twice():
    from backbones.registry import DuplicateRegistrationError

    with pytest.raises(DuplicateRegistrationError, match=r"Task class 'CausalLM'.*tasks\.causal_lm\.CausalLM"):
        class CausalLM(tasks.Task):  # noqa: F811 - the clash is the point
            pass
    assert tasks.TASK_CLASSES["CausalLM"].__module__ == "tasks.causal_lm"
