"""Building the task of an experiment and its training arrays."""

import tasks
from backbones.chat_template import ChatTemplateError
from lab import data, streaming, training
from tasks import examples


def build_task(cfg, backbone, sequence_length, packing=False):
    """The Task of the `task` config node on `backbone` (`packing`: `data.packing`)."""
    if cfg.name == "classifier":
        return tasks.TextClassifier(backbone, num_classes=cfg.num_classes, sequence_length=sequence_length,
                                    dropout=cfg.dropout, head_bias=cfg.head_bias)
    return tasks.CausalLM(backbone, sequence_length=sequence_length, packing=packing)


def make_train_batches(task, split, data_cfg, batch_size, seed, epoch=0):
    """The training batches from epoch `epoch`: `training.EpochBatches` of a
    split tokenised once, or for a streamed split (`streaming.ExampleStream`)
    a `streaming.KerasStream` tokenising batch by batch; both give epoch k
    the same order whatever ran before, so a resumed run sees the same data."""
    if not isinstance(split, streaming.ExampleStream):
        return training.EpochBatches(task_arrays(task, split, data_cfg), batch_size, seed, epoch=epoch)
    steps = split.count() // batch_size  # one read of the file, nothing tokenised
    if steps == 0:
        raise data.ConfigError(f"{split.path} has fewer training examples than trainer.batch_size={batch_size}.")
    batch = streaming.StreamBatches(
        split, lambda items: task_arrays(task, data.Split(items, format=split.format), data_cfg, whole=False),
        batch_size, epoch)
    return streaming.KerasStream(batch, steps)


def task_arrays(task, split, data_cfg, pack=True, whole=True):
    """`(x, y)` or `(x, y, sample_weight)` arrays of a data split, tokenised once;
    packed rows when the task packs and `pack` (validation: one example per row).
    `whole`: the split is all of it (not one streamed batch), so no answer token left is an error."""
    if not isinstance(task, tasks.CausalLM):
        return task.preprocessor(split.texts), split.labels
    items = causal_lm_examples(task, split, data_cfg)
    if whole:  # a streamed run is checked on its validation split, which is whole
        answers_fit(items, task.preprocessor.sequence_length, split.format)
    if not task.packing:
        return task.preprocessor.causal_lm_examples(items)
    if pack:
        arrays, stats = task.preprocessor.packed_causal_lm_examples(items)
        print(f"Packing: {stats.examples} examples in {stats.rows} rows of {stats.sequence_length}, "
              f"padding {stats.waste:.1%} of slots (unpacked: {stats.unpacked_waste:.1%}).")
        return arrays
    x, y, weight = task.preprocessor.causal_lm_examples(items)
    return {**x, "segment_ids": x["padding_mask"]}, y, weight


def answers_fit(items, sequence_length, example_format):
    """Raises `data.ConfigError` when truncation to `sequence_length` leaves no token in the loss: with
    `data.train_on=completion` and prompts longer than that (Alpaca's alone is ~40 words), every answer
    is cut off, and the run would train on nothing at loss 0, which a sweep minimising val_loss picks."""
    # Example i's targets are its tokens 1..sequence_length (the inputs are tokens 0..sequence_length-1).
    if items and not any(ex.loss_mask[:sequence_length + 1].any() for ex in items):
        longest = max(len(ex.token_ids) for ex in items) - 1
        raise data.ConfigError(
            f"trainer.sequence_length={sequence_length} cuts off the answer of every {example_format} example "
            f"(data.train_on=completion: only answer tokens are in the loss), so nothing would be trained. "
            f"Set trainer.sequence_length={longest} (the longest example), or shorten data.prompt_template.")


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
