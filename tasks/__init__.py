"""Backbone Lab tasks: a backbone plus a preprocessor, trainable on raw strings."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import backbones  # noqa: E402,F401  (registers every backbone family)
from tasks.errors import (  # noqa: E402
    LabelError, MissingTokenizerError, TaskConfigError, TaskInputError, TruncationWarning,
)
from tasks.preprocessor import Preprocessor  # noqa: E402
from tasks.task import TASK_CLASSES, Task  # noqa: E402
from tasks.text_classifier import TextClassifier  # noqa: E402
