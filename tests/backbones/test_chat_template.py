"""Chat templates render exactly as transformers' `apply_chat_template` renders them.

The templates are the published ones (Llama 3 Instruct, Gemma Instruct, Qwen2's
ChatML), written into tiny tokenizer_config.json files; transformers is the
reference here only.
"""

import json

import pytest
import tokenizers

from backbones.chat_template import ChatTemplateError, normalize_messages, render
from backbones.tokenizer import Tokenizer

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
CHATML = (  # Qwen2-Instruct's: ChatML with a default system message
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Block tags on their own lines (trim_blocks / lstrip_blocks), loop controls, tojson, a namespace.
CONTROLS = """{%- set ns = namespace(n=0) -%}
{% for message in messages %}
    {% if message['role'] == 'system' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
[{{ ns.n }}] {{ message['role'] }}: {{ message['content'] | tojson }}
    {% if ns.n >= 3 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}[next] assistant:{% endif %}"""

TEMPLATES = {"llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>"), "gemma": (GEMMA, "<bos>", "<eos>"),
             "chatml": (CHATML, None, "<|im_end|>"), "controls": (CONTROLS, "<s>", "</s>")}
SPECIALS = ["<|begin_of_text|>", "<|eot_id|>", "<bos>", "<eos>", "<|im_end|>", "<s>", "</s>"]

CONVERSATION = [
    {"role": "user", "content": "  What is 2 + 2?\n"},
    {"role": "assistant", "content": "It is 4. Déjà vu: \"quoted\" <tags> & more."},
    {"role": "user", "content": "And 3 + 3?"},
    {"role": "assistant", "content": "6"},
]
SYSTEM = [{"role": "system", "content": "Be brief."}] + CONVERSATION


def _write_tokenizer(directory, template, bos, eos):
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template, "eos_token": eos,
              "unk_token": "[UNK]"}
    if bos:
        config["bos_token"] = bos
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("style", sorted(TEMPLATES))
def test_rendering_equals_transformers(style, tmp_path):
    transformers = pytest.importorskip("transformers")
    directory = _write_tokenizer(tmp_path / style, *TEMPLATES[style])
    reference = transformers.AutoTokenizer.from_pretrained(str(directory))
    ours = Tokenizer.from_directory(directory)
    assert ours.chat_template == TEMPLATES[style][0]
    conversations = [CONVERSATION, CONVERSATION[:1], CONVERSATION[:3]] + ([SYSTEM] if style != "gemma" else [])
    for messages in conversations:
        for prompt in (False, True):
            expected = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            assert ours.apply_chat_template(messages, add_generation_prompt=prompt) == expected
    if style == "gemma":  # the template's own raise_exception, in both
        with pytest.raises(Exception, match="System role not supported"):
            reference.apply_chat_template(SYSTEM, tokenize=False)
        with pytest.raises(ChatTemplateError, match="System role not supported"):
            ours.apply_chat_template(SYSTEM)


def test_template_files_round_trip_and_errors(tmp_path):
    # transformers' newer layout: the template in chat_template.jinja beside tokenizer_config.json.
    directory = _write_tokenizer(tmp_path / "a", None, "<s>", "</s>")
    (directory / "chat_template.jinja").write_text(CHATML)
    tok = Tokenizer.from_directory(directory)
    assert tok.chat_template == CHATML
    tok.save_to_preset(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"] == CHATML
    assert Tokenizer.from_directory(tmp_path).chat_template == CHATML

    tok.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template.*data.chat_template"):
        tok.apply_chat_template(CONVERSATION)
    with pytest.raises(ChatTemplateError, match="not valid Jinja"):
        render("{% for m in messages %}", CONVERSATION)


def test_sharegpt_turns_are_normalized():
    turns = [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    assert [m["role"] for m in normalize_messages(turns)] == ["system", "user", "assistant"]
    with pytest.raises(ChatTemplateError, match="turn 1: unknown sharegpt role from='bot'"):
        normalize_messages([turns[1], {"from": "bot", "value": "x"}])
    with pytest.raises(ChatTemplateError, match="turn 0: expected"):
        normalize_messages([{"text": "hi"}])
