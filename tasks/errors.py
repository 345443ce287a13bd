"""Exception and warning types of the tasks package.

Each names one kind of user mistake; all derive from
`backbones.errors.BackboneLabError` (a `ValueError`), like the backbone errors.
"""

from backbones.errors import BackboneLabError


class TaskInputError(BackboneLabError):
    """Data given to fit / evaluate / predict / generate that a task cannot use."""


class LabelError(TaskInputError):
    """A class label outside `[0, num_classes)` (or not an integer)."""


class MissingTokenizerError(BackboneLabError):
    """Raw strings to tokenize, but no tokenizer (a backbone or preset without one)."""


class TaskConfigError(BackboneLabError):
    """A task that cannot be built this way (wrong backbone kind, bad argument)."""


class WorkerLostError(BackboneLabError):
    """A worker of a multi-worker run stopped (crashed, killed, lost its host) mid-training."""


class TruncationWarning(UserWarning):
    """Texts longer than the sequence length were truncated (shown once per preprocessor)."""


# Errors raised inside tf.data functions come back wrapped in a TensorFlow
# error; `task_data.translate_errors` re-raises them as these types.
PIPELINE_ERRORS = {cls.__name__: cls for cls in (TaskInputError, LabelError, MissingTokenizerError)}
