"""Building the task of an experiment and its training arrays."""

import tasks


def build_task(cfg, backbone, sequence_length):
    """The Task of the `task` config node on `backbone`."""
    if cfg.name == "classifier":
        return tasks.TextClassifier(backbone, num_classes=cfg.num_classes, sequence_length=sequence_length,
                                    dropout=cfg.dropout)
    return tasks.CausalLM(backbone, sequence_length=sequence_length)


def task_arrays(task, split):
    """`(x, y)` or `(x, y, sample_weight)` arrays of a data split, tokenised once."""
    if isinstance(task, tasks.CausalLM):
        return task.preprocessor.causal_lm(split.texts)
    return task.preprocessor(split.texts), split.labels
