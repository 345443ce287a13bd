"""data.format=instruction|chat: loading, pre-flight, answer-only loss, and experiment=chat_lora end to end."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from backbones.chat_template import ChatTemplateError
from lab import data, preflight, schema
from lab.schema import ConfigError, DataConfig
from tests.lab.test_train import runs, train

ROOT = Path(__file__).resolve().parents[2]
schema.register()


def make(*overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_instruction_columns_and_prompt_templates(tmp_path):
    rows = [{"q": f"Add {i} and 1.", "ctx": "" if i % 2 else f"context {i}", "a": str(i + 1)} for i in range(10)]
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), dict(
        source="local", path=jsonl(tmp_path / "i.jsonl", rows), format="instruction", instruction_column="q",
        input_column="ctx", output_column="a", prompt_template="Q: {instruction}\nC: {input}\nA: ",
        prompt_template_no_input="Q: {instruction}\nA: ", label_column="label", validation_fraction=0.2))
    train_split, val_split = data.load(cfg, seed=0)
    assert train_split.format == "instruction" and len(train_split) + len(val_split) == 10
    by_answer = {ex["answer"]: ex["prompt"] for ex in train_split.texts + val_split.texts}
    assert by_answer["1"] == "Q: Add 0 and 1.\nC: context 0\nA: " and by_answer["2"] == "Q: Add 1 and 1.\nA: "
    with pytest.raises(ConfigError, match="data.output_column='output' is not a column"):
        data.load(OmegaConf.merge(cfg, {"output_column": "output"}), seed=0)
    with pytest.raises(ConfigError, match=r"data.prompt_template=.*\{instruction\} and \{input\}"):
        data.load(OmegaConf.merge(cfg, {"prompt_template": "{question}"}), seed=0)


def test_sharegpt_conversations_load_as_messages(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": "hello"}]}
            for i in range(10)]
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), dict(
        source="local", path=jsonl(tmp_path / "c.jsonl", rows), format="chat", messages_column="conversations"))
    train_split, _ = data.load(cfg, seed=0)
    assert train_split.texts[0][1] == {"role": "assistant", "content": "hello"}
    rows[3]["conversations"][1] = {"speaker": "gpt"}
    jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(ConfigError, match=r"c.jsonl, example 3 .*messages_column='conversations'.*turn 1"):
        data.load(cfg, seed=0)


def test_preflight_checks_the_new_keys():
    assert "chat template: from data.chat_template" in preflight.check(make("experiment=chat_lora"))
    with pytest.raises(ConfigError, match=r"llama_tiny_en/tokenizer_config.json has no `chat_template`.*"
                                          r"data.chat_template="):
        preflight.check(make("experiment=chat_lora", "data.chat_template=null"))
    with pytest.raises(ConfigError, match="data.chat_template: .*not valid Jinja"):
        preflight.check(make("experiment=chat_lora", "data.chat_template='{% for m in messages %}'"))
    with pytest.raises(ConfigError, match="data.messages_column='turns' is not a column"):
        preflight.check(make("experiment=chat_lora", "data.messages_column=turns"))
    with pytest.raises(ConfigError, match="data.format=csv names a file type.*data.file_format=csv"):
        preflight.check(make("data.format=csv"))
    with pytest.raises(ConfigError, match="data.format=chat trains a language model: use task=causal_lm"):
        preflight.check(make("data=chat"))
    with pytest.raises(ConfigError, match="data.train_on='prompt' is not one of"):
        preflight.check(make("experiment=chat_lora", "data.train_on=prompt"))


def test_evaluation_loss_and_perplexity_are_on_the_answer_tokens():
    import tasks
    from lab.tasks import build_task, causal_lm_examples

    cfg = make("experiment=chat_lora", "trainer.sequence_length=128")
    train_split, _ = data.load(cfg.data, seed=0)
    split = data.Split(train_split.texts[:6], format="chat")
    backbone = tasks.CausalLM.from_preset("llama_tiny_en").backbone
    task = build_task(cfg.task, backbone, cfg.trainer.sequence_length)
    items = causal_lm_examples(task, split, cfg.data)
    x, y, weight = task.preprocessor.causal_lm_examples(items)
    assert 0 < weight.sum() < x["padding_mask"].sum()  # prompts are out of the loss
    metrics = task.evaluate(x, y, sample_weight=weight, batch_size=6, return_dict=True, verbose=0)
    logits = np.asarray(task(x, training=False), "float64")
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    nll = -np.take_along_axis(log_probs, y[..., None], -1)[..., 0]
    expected = (nll * weight).sum() / weight.sum()  # mean over the answer tokens only
    assert metrics["loss"] == pytest.approx(expected, rel=1e-4)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected), rel=1e-4)
    assert abs(expected - (nll * x["padding_mask"]).sum() / x["padding_mask"].sum()) > 1e-3  # and it differs

    refusing = "{{ raise_exception('no system role') if messages[0]['role'] == 'system' }}"
    with pytest.raises(ChatTemplateError, match=r"Conversation 1 of the chat data .*data.chat_template: .*no system"):
        causal_lm_examples(task, data.Split([split.texts[0][-2:], [{"role": "system", "content": "s"}]], format="chat"),
                           OmegaConf.merge(cfg.data, {"chat_template": refusing}))


def test_chat_lora_runs_offline_and_its_model_chats(tmp_path):
    train(tmp_path, "experiment=chat_lora", "debug=fast", "trainer.sequence_length=128")
    (run,) = runs(tmp_path)
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.params["data.format"] == "chat"
    # Both on answer tokens; Keras's loss averages per-batch means, perplexity pools tokens: close, not equal.
    assert metrics["final_val_perplexity"] == pytest.approx(math.exp(metrics["final_val_loss"]), rel=2e-2)

    from lab import artifacts

    task = artifacts.load_run_model(run.info.run_id, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert task.preprocessor.chat_template == make("experiment=chat_lora").data.chat_template
    reply = task.generate([{"role": "user", "content": "What is 2 plus 3?"}], chat=True, max_length=48, jit_compile=False)
    prompt_ids = task.preprocessor.chat_prompts([[{"role": "user", "content": "What is 2 plus 3?"}]])[0]
    assert isinstance(reply, str) and "What is" not in reply
    assert task.preprocessor.tokenizer.detokenize([prompt_ids], skip_special_tokens=False)[0].startswith(
        "<s> <|user|>")

    import mlflow

    # The logged model serves the chat model as one: a text is a user message, the answer is the reply alone.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert served.metadata.metadata["chat"] is True
    answer = served.predict(["What is 2 plus 3?"], params={"max_length": 48})["generated_text"][0]
    assert answer == reply


def test_readme_example_file_of_each_format_loads(tmp_path):
    readme = (ROOT / "README.md").read_text()
    import re

    blocks = re.findall(r"```jsonl\n(.*?)```", readme.split("## Data", 1)[1].split("\n## ", 1)[0], re.S)
    formats = {"text": dict(label_column=None), "classification": dict(num_classes=2),
               "instruction": {}, "chat": {}, "sharegpt": dict(format="chat", messages_column="conversations")}
    lines = [line for block in blocks for line in block.strip().splitlines()]
    assert len(lines) == len(formats)
    for (name, extra), line in zip(formats.items(), lines):
        path = tmp_path / f"{name}.jsonl"
        path.write_text((line + "\n") * 4)
        cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {"format": name, **extra},
                              dict(source="local", path=str(path), validation_fraction=0.25))
        train_split, _ = data.load(cfg, seed=0)
        assert train_split.format == cfg.format and len(train_split) == 3


def test_answers_all_cut_off_by_the_sequence_length_is_an_error_not_a_zero_loss(tmp_path):
    """Alpaca's prompt is longer than the default 48 tokens of the tiny tokenizer: every answer was cut,
    and the run trained on nothing, reporting val_loss 0.0 (a sweep minimising it would pick it)."""
    import tasks
    from lab.tasks import build_task, task_arrays

    rows = [{"instruction": "Add the numbers.", "input": f"{i} and 3", "output": str(i + 3)} for i in range(8)]
    cfg = make("task=causal_lm", "data=local", f"data.path={jsonl(tmp_path / 'alpaca.jsonl', rows)}",
               "data.format=instruction", "data.label_column=null")
    train_split, _ = data.load(cfg.data, seed=0)
    backbone = tasks.CausalLM.from_preset("gpt2_tiny_en").backbone
    with pytest.raises(ConfigError, match=r"trainer.sequence_length=48 cuts off the answer of every instruction "
                                          r"example .* Set trainer.sequence_length=\d+"):
        task_arrays(build_task(cfg.task, backbone, 48), train_split, cfg.data)
    x, y, weight = task_arrays(build_task(cfg.task, backbone, 256), train_split, cfg.data)
    assert weight.sum() > 0
