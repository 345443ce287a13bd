"""Examples as token ids + loss mask: answer-only masks from offsets, checked by hand."""

import numpy as np
import pytest
import tokenizers

from backbones.tokenizer import Tokenizer
from tasks import examples

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def word_tokenizer(words, template=None):
    vocab = {w: i for i, w in enumerate(["[UNK]", *words])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>", "<s>", "</s>"])
    return Tokenizer(tok, {"bos": "<s>", "eos": "</s>"}, chat_template=template)


def pieces(tok, example, where):
    return [tok.tokenizer.id_to_token(int(t)) for t, m in zip(example.token_ids, example.loss_mask) if m == where]


def test_chat_mask_by_hand():
    tok = word_tokenizer(["user", "assistant", "system", "hi", "there", "hello", "you", "bye", "be", "brief"], CHATML)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"},
                {"role": "assistant", "content": "hello you"}, {"role": "user", "content": "bye"},
                {"role": "assistant", "content": "bye"}]
    rendered = examples.render_chat(tok, messages)
    assert [rendered.text[a:b] for a, b in rendered.spans] == ["hello you<|im_end|>", "bye<|im_end|>"]
    (ex,) = examples.encode(tok, [rendered])
    tokens = [tok.tokenizer.id_to_token(int(t)) for t in ex.token_ids]
    assert tokens == ["<|im_start|>", "system", "be", "brief", "<|im_end|>", "<|im_start|>", "user", "hi", "there",
                      "<|im_end|>", "<|im_start|>", "assistant", "hello", "you", "<|im_end|>", "<|im_start|>",
                      "user", "bye", "<|im_end|>", "<|im_start|>", "assistant", "bye", "<|im_end|>"]
    # By hand: the two answers and their end-of-turn tokens, nothing else (no BOS/EOS added to a chat).
    assert ex.loss_mask.tolist() == [0] * 12 + [1, 1, 1] + [0] * 6 + [1, 1]
    # One tokenisation of the whole text: the same ids as tokenising the rendered string.
    assert ex.token_ids.tolist() == tok([rendered.text])[0]
    (everything,) = examples.encode(tok, [rendered], train_on="all")
    assert everything.loss_mask.tolist() == [0] + [1] * 22


def test_mask_follows_offsets_when_a_token_merges_across_the_boundary():
    # BPE without a pre-tokenizer merges "a" + "b" into "ab" across the prompt/answer boundary of "c|ab".
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE({"a": 0, "b": 1, "c": 2, "ab": 3, "<s>": 4, "</s>": 5},
                                                     [("a", "b")]))
    tok = Tokenizer(bpe, {"bos": "<s>", "eos": "</s>"})
    (ex,) = examples.encode(tok, [examples.render_instruction("ca", "b")], bos_id=4, eos_id=5)
    assert pieces(tok, ex, 1) == ["ab", "</s>"] and pieces(tok, ex, 0) == ["<s>", "c"]
    # Tokenising prompt and answer apart would give other tokens ("c", "a" | "b") than the model sees.
    assert ex.token_ids.tolist() == [4, 2, 3, 5] != [4] + tok(["ca"])[0] + tok(["b"])[0] + [5]


def test_instruction_example_on_a_byte_level_tokenizer():
    tok = Tokenizer.from_preset("gpt2_tiny_en")
    eos = tok.special_token_id("eos")
    prompt = "### Instruction:\nSay the movie was great.\n\n### Response:\n"
    (ex,) = examples.encode(tok, [examples.render_instruction(prompt, "The movie was great.")], eos_id=eos)
    assert tok.detokenize([ex.token_ids[ex.loss_mask == 1]], skip_special_tokens=False) == [
        "The movie was great.<|endoftext|>"]
    assert tok.detokenize([ex.token_ids[ex.loss_mask == 0]]) == [prompt]


def test_template_that_rewrites_earlier_turns_falls_back_to_the_content():
    # The last message is rendered differently, so the prefix renders are not prefixes of the whole.
    template = ("{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['role'] }}: {{ m['content'] }}\n"
                "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    tok = word_tokenizer(["user", "assistant", "hi", "yes", "LAST"], template)
    rendered = examples.render_chat(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}])
    assert rendered.text == "user: hi\nLAST assistant: yes\n"
    assert [rendered.text[a:b] for a, b in rendered.spans] == ["yes"]


def test_rows_weight_is_the_mask_of_each_target():
    items = [examples.Example.of([4, 7, 8, 9, 5], [1, 0, 0, 1, 1]), examples.Example.of([4, 7], [0, 1])]
    (x, y, w), truncated = examples.causal_lm_rows(items, sequence_length=3, pad_id=0)
    assert x["token_ids"].tolist() == [[4, 7, 8], [4, 7, 0]] and x["padding_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert y.tolist() == [[7, 8, 9], [7, 0, 0]]
    assert w.tolist() == [[0, 0, 1], [1, 0, 0]] and truncated == 1
    with pytest.raises(ValueError, match="3 tokens but loss_mask 2"):
        examples.Example.of([1, 2, 3], [1, 1])
    assert np.asarray(items[0].loss_mask)[0] == 0  # nothing predicts the first token


def test_ids_and_answer_mask_equal_transformers_assistant_mask(tmp_path):
    """transformers marks assistant tokens by `{% generation %}` blocks; ours comes from prefix renders and
    offsets, without such tags. On a byte-level BPE, both give the same ids and the same mask."""
    transformers = pytest.importorskip("transformers")
    import json

    from backbones.handles import resolve_preset

    tagged = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
              "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}{% else %}"
              "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    bpe = tokenizers.Tokenizer.from_file(str(resolve_preset("gpt2_tiny_en") / "tokenizer.json"))
    bpe.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    bpe.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": tagged, "eos_token": "<|im_end|>"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = Tokenizer.from_directory(tmp_path)
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "the movie?"},
                {"role": "assistant", "content": " It was great, truly."}, {"role": "user", "content": "and?"},
                {"role": "assistant", "content": "Boring at the end."}]
    expected = reference.apply_chat_template(messages, tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
    (ex,) = examples.encode(ours, [examples.render_chat(ours, messages)])
    assert ex.token_ids.tolist() == list(expected["input_ids"])
    assert ex.loss_mask.tolist() == list(expected["assistant_masks"]) and ex.loss_mask.sum() > 8
