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
