"""Backbone Lab tasks: a backbone plus a preprocessor, trainable on raw strings.

`TextClassifier` (pooled token, dropout, logits) and `CausalLM` (tied LM head,
`generate`) share the `Task` base: raw-string `fit`/`evaluate`/`predict`,
`compile()` defaults, and `from_preset` / `save_to_preset`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import backbones  # noqa: E402

backbones.load()  # every backbone family's classes and converters
from tasks import samplers  # noqa: E402
from tasks.causal_lm import CausalLM, Perplexity  # noqa: E402
from tasks.errors import (  # noqa: E402
    LabelError, MissingTokenizerError, TaskConfigError, TaskInputError, TruncationWarning,
)
from tasks.preprocessor import Preprocessor  # noqa: E402
from tasks.samplers import GreedySampler, RandomSampler, Sampler, TopKSampler, TopPSampler  # noqa: E402
from tasks.task import TASK_CLASSES, Task  # noqa: E402
from tasks.text_classifier import TextClassifier  # noqa: E402

__all__ = [
    "Task", "TextClassifier", "CausalLM", "Preprocessor", "Perplexity", "TASK_CLASSES",
    "samplers", "Sampler", "GreedySampler", "RandomSampler", "TopKSampler", "TopPSampler",
    "TaskInputError", "LabelError", "MissingTokenizerError", "TaskConfigError", "TruncationWarning",
]
