"""Building the task of an experiment and its training arrays."""

import tasks


def build_task(cfg, backbone, sequence_length, packing=False):
    """The Task of the `task` config node on `backbone` (`packing`: `data.packing`)."""
    if cfg.name == "classifier":
        return tasks.TextClassifier(backbone, num_classes=cfg.num_classes, sequence_length=sequence_length,
                                    dropout=cfg.dropout)
    return tasks.CausalLM(backbone, sequence_length=sequence_length, packing=packing)


def task_arrays(task, split, pack=True):
    """`(x, y)` or `(x, y, sample_weight)` arrays of a data split, tokenised once;
    packed rows when the task packs and `pack` (validation: one text per row)."""
    if not isinstance(task, tasks.CausalLM):
        return task.preprocessor(split.texts), split.labels
    if not task.packing:
        return task.preprocessor.causal_lm(split.texts)
    if pack:
        arrays, stats = task.preprocessor.packed_causal_lm(split.texts)
        print(f"Packing: {stats.examples} examples in {stats.rows} rows of {stats.sequence_length}, "
              f"padding {stats.waste:.1%} of slots (unpacked: {stats.unpacked_waste:.1%}).")
        return arrays
    x, y, weight = task.preprocessor.causal_lm(split.texts)
    return {**x, "segment_ids": x["padding_mask"]}, y, weight
