"""Building the task of an experiment and its training arrays."""

import tasks
from backbones.chat_template import ChatTemplateError
from tasks import examples


def build_task(cfg, backbone, sequence_length):
    """The Task of the `task` config node on `backbone`."""
    if cfg.name == "classifier":
        return tasks.TextClassifier(backbone, num_classes=cfg.num_classes, sequence_length=sequence_length,
                                    dropout=cfg.dropout)
    return tasks.CausalLM(backbone, sequence_length=sequence_length)


def task_arrays(task, split, data_cfg):
    """`(x, y)` or `(x, y, sample_weight)` arrays of a data split, tokenised once."""
    if isinstance(task, tasks.CausalLM):
        return task.preprocessor.causal_lm_examples(causal_lm_examples(task, split, data_cfg))
    return task.preprocessor(split.texts), split.labels


def causal_lm_examples(task, split, data_cfg):
    """The `tasks.examples.Example`s (token ids, loss mask) of a split for a causal LM.

    Text trains on every token. Instruction examples are `[BOS] prompt answer
    [EOS]`; chat examples are rendered with the chat template (its own special
    tokens, no extra BOS/EOS). With `data.train_on=completion` only the answer
    (the output, or every assistant turn with its end-of-turn) is in the loss.
    A `data.chat_template` becomes the preprocessor's, so the saved model
    keeps the template it was trained with (for `generate(..., chat=True)`).
    """
    pre = task.preprocessor
    if split.format in ("text", "classification"):
        return examples.from_token_ids(pre.tokenize(split.texts), pre.bos_id, pre.eos_id)
    if split.format == "instruction":
        rendered = [examples.render_instruction(ex["prompt"], ex["answer"]) for ex in split.texts]
        return examples.encode(pre.tokenizer, rendered, pre.bos_id, pre.eos_id, data_cfg.train_on)
    if data_cfg.chat_template:
        pre.chat_template = data_cfg.chat_template
    rendered = []
    for i, messages in enumerate(split.texts):
        try:
            rendered.append(examples.render_chat(pre.tokenizer, messages, pre.chat_template))
        except ChatTemplateError as e:
            source = "data.chat_template" if data_cfg.chat_template else "the model's chat template"
            raise ChatTemplateError(f"Conversation {i} of the {split.format} data ({messages!r:.200}) "
                                    f"cannot be rendered with {source}: {e}") from None
    return examples.encode(pre.tokenizer, rendered, train_on=data_cfg.train_on)
