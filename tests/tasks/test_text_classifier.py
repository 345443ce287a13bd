import keras
import numpy as np
import pytest
import tensorflow as tf

import backbones
import tasks
from tests.tasks.fakes import TinyEncoderTestBackbone, hidden_of
from tests.tasks.toy_data import sentiment


def gpt2_classifier(num_classes=3, sequence_length=16, **kwargs):
    return tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=num_classes,
                                            sequence_length=sequence_length, **kwargs)


def test_learns_a_small_sentiment_task_far_above_chance():
    """The issue's 'done when': a few hundred steps on the random-weight tiny GPT-2."""
    texts, labels = sentiment(1200, seed=0)
    test_texts, test_labels = sentiment(300, seed=1)
    clf = gpt2_classifier(num_classes=3, sequence_length=20)
    clf.compile(optimizer=keras.optimizers.AdamW(1e-3))
    before = clf.evaluate(test_texts, test_labels, verbose=0, return_dict=True)["accuracy"]
    clf.fit(texts, labels, batch_size=16, epochs=3, steps_per_epoch=100, verbose=0)
    after = clf.evaluate(test_texts, test_labels, verbose=0, return_dict=True)["accuracy"]
    print(f"TextClassifier, 3 balanced classes (chance 0.33): held-out accuracy "
          f"{before:.3f} before, {after:.3f} after 300 steps")
    assert after > 0.9


def test_decoder_pools_the_last_real_token():
    clf = gpt2_classifier(num_classes=2, sequence_length=12)
    x = clf.preprocessor(["a great film", "the food was really awful"])
    pooled = keras.Model(clf.input, clf.get_layer("pooling").output)(x)
    hidden = hidden_of(clf.backbone(x))
    last = x["padding_mask"].sum(axis=1) - 1
    np.testing.assert_allclose(pooled, hidden[np.arange(2), last], atol=1e-6)
    # So the logits of a text do not depend on how much padding follows it.
    short = gpt2_classifier(num_classes=2, sequence_length=7)
    short.set_weights(clf.get_weights())
    np.testing.assert_allclose(short.predict(["a great film"], verbose=0),
                               clf.predict(["a great film"], verbose=0), atol=1e-5)


@pytest.mark.parametrize("pooled", [True, False])
def test_encoder_pools_the_first_token_or_pooled_output(pooled):
    backbone = TinyEncoderTestBackbone(pooled=pooled)
    clf = tasks.TextClassifier(backbone, num_classes=2, sequence_length=6, dropout=0.0)
    assert clf.preprocessor.is_encoder
    x = clf.preprocessor(["good film", "bad"])
    out = backbone(x)
    features = keras.ops.convert_to_numpy(out["pooled_output"]) if pooled else hidden_of(out)[:, 0]
    dense = clf.get_layer("logits")
    expected = features @ keras.ops.convert_to_numpy(dense.kernel) + keras.ops.convert_to_numpy(dense.bias)
    np.testing.assert_allclose(clf.predict(["good film", "bad"], verbose=0), expected, atol=1e-5)


def test_raw_string_inputs_in_every_form():
    texts, labels = sentiment(40, seed=2)
    clf = gpt2_classifier(num_classes=3, sequence_length=20)
    clf.compile()
    expected = clf.predict(texts, verbose=0)
    assert expected.dtype == np.float32 and expected.shape == (40, 3)
    np.testing.assert_allclose(clf.predict(np.array(texts), verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(clf.predict(tf.data.Dataset.from_tensor_slices(texts), verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(clf.predict(clf.preprocessor(texts), verbose=0), expected, atol=1e-6)

    reference = clf.evaluate(texts, labels, verbose=0, return_dict=True)
    unbatched = tf.data.Dataset.from_tensor_slices((texts, labels))
    for data in (unbatched, unbatched.batch(8)):
        got = clf.evaluate(data, verbose=0, return_dict=True)
        assert got["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    history = clf.fit(unbatched.shuffle(40), epochs=1, verbose=0, validation_data=(texts[:8], labels[:8]))
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    history = clf.fit(np.array(texts), np.array(labels), validation_split=0.25, batch_size=8, verbose=0)
    assert "val_accuracy" in history.history
    clf.fit(clf.preprocessor(texts), labels, batch_size=8, verbose=0)  # token ids


def test_compile_defaults():
    clf = gpt2_classifier()
    clf.compile()
    assert isinstance(clf.optimizer, keras.optimizers.AdamW)
    assert float(clf.optimizer.learning_rate) == pytest.approx(5e-5)
    assert isinstance(clf.loss, keras.losses.SparseCategoricalCrossentropy) and clf.loss.from_logits
    clf.fit(["good", "bad"], [1, 0], verbose=0)
    assert clf.metrics_names == ["loss", "compile_metrics"]
    assert set(clf.get_metrics_result()) == {"loss", "accuracy"}


def test_labels_outside_num_classes_are_named():
    clf = gpt2_classifier(num_classes=3)
    clf.compile()
    texts = ["good", "bad", "fine", "meh"]
    with pytest.raises(tasks.LabelError, match=r"Label 3 at index 2 is outside \[0, 3\).*num_classes=3"):
        clf.fit(texts, [0, 1, 3, 2], verbose=0)
    with pytest.raises(tasks.LabelError, match=r"Label -1 at index 0"):
        clf.evaluate(texts, [-1, 0, 0, 0], verbose=0)
    with pytest.raises(tasks.LabelError, match="not an integer class id"):
        clf.fit(texts, ["pos", "neg", "pos", "neg"], verbose=0)
    with pytest.raises(tasks.LabelError, match="One-hot"):
        clf.fit(texts, np.eye(4, 3), verbose=0)
    # In a tf.data pipeline the check runs batch by batch; same error type.
    stream = tf.data.Dataset.from_tensor_slices((texts, [0, 1, 7, 2])).batch(2)
    with pytest.raises(tasks.LabelError, match=r"Label 7 at index 0 is outside \[0, 3\)"):
        clf.fit(stream, verbose=0)
    with pytest.raises(tasks.TaskInputError, match="4 texts but 3 labels"):
        clf.fit(texts, [0, 1, 2], verbose=0)


def test_generate_on_a_classifier_is_a_clear_error():
    with pytest.raises(AttributeError, match=r"TextClassifier has no generate\(\).*tasks.CausalLM"):
        gpt2_classifier().generate("hello")


def test_backbone_without_tokenizer_is_a_clear_error():
    backbone = backbones.Backbone.from_preset("gpt2_tiny_en")
    tokenizer, backbone.tokenizer = backbone.tokenizer, None
    with pytest.raises(tasks.MissingTokenizerError, match=r"has no tokenizer.*tasks.Preprocessor"):
        tasks.TextClassifier(backbone, num_classes=2)
    # An explicit preprocessor works without backbone.tokenizer.
    clf = tasks.TextClassifier(backbone, 2, preprocessor=tasks.Preprocessor(tokenizer, 8))
    assert clf.predict(["fine"], verbose=0).shape == (1, 2)


def test_bad_arguments():
    backbone = backbones.Backbone.from_preset("gpt2_tiny_en")
    with pytest.raises(tasks.TaskConfigError, match="num_classes"):
        tasks.TextClassifier(backbone, num_classes=1)
    encoder_pre = tasks.Preprocessor(TinyEncoderTestBackbone().tokenizer, is_encoder=True)
    with pytest.raises(tasks.TaskConfigError, match="is_encoder=False"):
        tasks.TextClassifier(backbone, 2, preprocessor=encoder_pre)


def test_mixed_precision_gives_float32_logits():
    clf = gpt2_classifier(num_classes=2, dtype="mixed_bfloat16")
    assert clf.backbone.dtype_policy.name == "mixed_bfloat16"
    assert clf.predict(["good"], verbose=0).dtype == np.float32
