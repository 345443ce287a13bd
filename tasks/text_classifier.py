"""`TextClassifier`: a backbone, a pooled token, dropout and a logits head."""

import keras
import numpy as np
from keras import ops

from tasks.errors import LabelError, TaskConfigError, TaskInputError
from tasks.task import Task, build_preprocessor, task_inputs


class TokenPooling(keras.layers.Layer):
    """One hidden state per sequence: the first token (`"first"`) or the last
    real token according to the padding mask (`"last"`; position 0 when a
    row has no real token)."""

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, hidden, padding_mask=None):
        if self.mode == "first":
            return hidden[:, 0]
        positions = ops.arange(ops.shape(hidden)[1], dtype="int32")
        last = ops.max(ops.cast(padding_mask, "int32") * positions[None], axis=1)
        one_hot = ops.one_hot(last, ops.shape(hidden)[1], dtype=hidden.dtype)
        return ops.einsum("bs,bsh->bh", one_hot, hidden)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class TextClassifier(Task):
    """Classifies texts: backbone, pooling by backbone kind, dropout, Dense logits.

    Pooling: encoders (`backbone.is_encoder`) use their `pooled_output`
    when they return one, else the first token (`[CLS]`); decoders use the
    hidden state of the last real token (from the padding mask), which has
    attended to the whole text (the eos the preprocessor appends). Outputs
    are float32 logits `(batch, num_classes)`. Labels are integers in
    `[0, num_classes)`; anything else raises `LabelError` naming the label.
    `compile()` defaults: AdamW, sparse categorical cross-entropy from
    logits, accuracy.

    Args:
        backbone: backbones.Backbone. Any family that honours the contract.
        num_classes: int. Number of classes (>= 2).
        preprocessor: tasks.Preprocessor. Default: one from `backbone.tokenizer`.
        sequence_length: int. Packed length when the preprocessor is built here.
        dropout: float. Dropout rate before the logits layer.
        head_bias: bool. A bias in the logits layer. Decoder classifiers
            export to transformers (`*ForSequenceClassification`, whose
            `score` has no bias) only with a zero bias: use False for those.
        name: str. Keras model name.

    Example:
    >>> import backbones, tasks
    >>> backbone = backbones.Backbone.from_preset("gpt2_tiny_en")
    >>> clf = tasks.TextClassifier(backbone, num_classes=3, sequence_length=16)
    >>> clf.predict(["what a great film", ""], verbose=0).shape
    (2, 3)
    >>> clf.generate("hello")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AttributeError: TextClassifier has no generate(): it is a method of tasks.CausalLM...
    """

    def __init__(self, backbone, num_classes, preprocessor=None, sequence_length=128, dropout=0.1, head_bias=True,
                 **kwargs):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise TaskConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
        preprocessor = build_preprocessor(backbone, preprocessor, sequence_length)
        policy = backbone.dtype_policy

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.pooling = TokenPooling("first" if backbone.is_encoder else "last", dtype=policy, name="pooling")
        self.output_dropout = keras.layers.Dropout(dropout, dtype=policy, name="output_dropout")
        self.output_dense = keras.layers.Dense(num_classes, use_bias=head_bias, dtype=policy, name="logits")
        self.output_cast = keras.layers.Activation("linear", dtype="float32", name="logits_float32")

        # === Functional model ===
        inputs = task_inputs(backbone)
        outputs = backbone(inputs)
        pooled = backbone.pooled_output(outputs)
        if pooled is None:
            pooled = self.pooling(backbone.sequence_output(outputs), padding_mask=inputs["padding_mask"])
        logits = self.output_cast(self.output_dense(self.output_dropout(pooled)))
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self.head_bias = head_bias

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "dropout": self.dropout,
                "head_bias": self.head_bias}

    def _transformers_head(self):
        return "classifier", self.output_dense

    def _preprocess(self, x, y=None, sample_weight=None):
        inputs = self._pack_inputs(x)
        if y is None:
            if sample_weight is not None:
                raise TaskInputError("sample_weight was given without labels y.")
            return (inputs,)
        y = check_labels(y, self.num_classes)
        if len(y) != len(inputs["token_ids"]):
            raise TaskInputError(f"Got {len(inputs['token_ids'])} texts but {len(y)} labels.")
        return (inputs, y) if sample_weight is None else (inputs, y, np.asarray(sample_weight, "float32"))

    def _default_loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def _default_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy("accuracy")], None


def check_labels(y, num_classes):
    """Labels as an int32 vector, or `LabelError` naming the first bad one."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise LabelError(
            f"Labels must be a vector of class ids, got shape {y.shape}. One-hot labels are "
            "not supported: pass np.argmax(y, axis=-1)."
        )
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        bad = next(i for i, v in enumerate(y.tolist()) if not float(v).is_integer()) if y.dtype.kind == "f" else 0
        raise LabelError(
            f"Label {y[bad]!r} at index {bad} is not an integer class id (labels have dtype "
            f"{y.dtype}). Map class names to ids 0..{num_classes - 1} first."
        )
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise LabelError(
            f"Label {y[i].item()!r} at index {i} is outside [0, {num_classes}) for "
            f"num_classes={num_classes} ({bad.size} of {len(y)} labels are). Labels must be "
            f"class ids 0..{num_classes - 1}: fix the data or raise num_classes."
        )
    return y.astype("int32")
