"""Task.fit's training machinery."""

import keras
import pytest
import tensorflow as tf


@pytest.mark.parametrize("source", ["texts", "pydataset"])
def test_fit_creates_no_variable_inside_the_traced_train_step(source):
    """A variable created while tracing makes TensorFlow trace the whole step twice."""
    import tasks

    lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=8)
    lm.compile()
    texts = ["the movie was great", "the food was awful"] * 4
    if source == "pydataset":
        class Batches(keras.utils.PyDataset):
            def __len__(self):
                return 2

            def __getitem__(self, i):
                return lm._preprocess(texts[4 * i: 4 * i + 4])

        x = Batches()
    else:
        x = texts
    created = []

    def creator(next_creator, **kwargs):
        if tf.inside_function():
            created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        lm.fit(x, batch_size=4, epochs=1, verbose=0)
    assert created == []
    assert lm.optimizer.iterations.numpy() == 2


TEXTS = ["the movie was great", "the food was awful", "a fine day", "a dull film"] * 4


@pytest.mark.parametrize("task_class", ["TextClassifier", "CausalLM"])
def test_from_preset_then_fit_as_in_keras_hub(task_class):
    """Tasks compile themselves with the defaults (keras-hub's `compile=True`); compile() again replaces them."""
    import tasks

    cls = getattr(tasks, task_class)
    extra = {"num_classes": 2} if task_class == "TextClassifier" else {}
    labels = [1, 0, 1, 0] * 4 if extra else None
    task = cls.from_preset("gpt2_tiny_en", sequence_length=8, **extra)
    assert isinstance(task.optimizer, keras.optimizers.AdamW)
    history = task.fit(TEXTS, labels, batch_size=4, epochs=1, verbose=0)
    assert history.history["loss"][0] > 0 and task.optimizer.iterations.numpy() == 4

    task.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    task.fit(TEXTS, labels, batch_size=4, epochs=1, verbose=0)
    assert isinstance(task.optimizer, keras.optimizers.SGD) and task.optimizer.iterations.numpy() == 4

    assert getattr(cls.from_preset("gpt2_tiny_en", sequence_length=8, compile=False, **extra), "optimizer", None) is None


def test_lora_enabled_after_construction_gets_the_lora_default():
    import tasks

    lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=8)
    full_rate = float(lm.optimizer.learning_rate)
    lm.backbone.enable_lora(2)
    lm.fit(TEXTS, batch_size=4, epochs=1, verbose=0)
    assert float(lm.optimizer.learning_rate) > full_rate
    assert {v.name for v in lm.trainable_variables} == {"lora_kernel_a", "lora_kernel_b"}
    lm.compile(optimizer=keras.optimizers.SGD(0.1))
    lm.fit(TEXTS, batch_size=4, epochs=1, verbose=0)  # a user's optimizer is kept
    assert isinstance(lm.optimizer, keras.optimizers.SGD)
