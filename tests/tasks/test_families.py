"""The tasks on every bundled family: decoders generate with their cache
exactly as uncached greedy decoding; encoders classify from pooled_output."""

import numpy as np
import pytest

import tasks
from tests.helpers import bundled_presets
from tests.tasks.test_causal_lm import reference_greedy

DECODERS = bundled_presets(encoder=False)  # every registered decoder family


@pytest.mark.parametrize("preset", DECODERS)
def test_decoder_families_generate_and_train(preset, tmp_path):
    lm = tasks.CausalLM.from_preset(preset, sequence_length=12)
    rows = lm.preprocessor.prompts(["the movie", "a longer prompt about it", "the"])
    ids = np.zeros((3, 12), "int32")
    mask = np.zeros((3, 12), "int32")
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    out = lm.generate({"token_ids": ids, "padding_mask": mask}, max_length=16, stop_token_ids=())
    for i, row in enumerate(rows):
        assert out["token_ids"][i].tolist() == reference_greedy(lm, row, 16), f"{preset} prompt {i}"
    lm.compile()
    history = lm.fit(["the movie was great", "the food was awful"], batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    lm.save_to_preset(tmp_path / "lm")
    restored = tasks.Task.from_preset(tmp_path / "lm")
    restored.compile()  # the same XLA kernels as `lm` (compiled above), so bit-identical outputs
    np.testing.assert_array_equal(restored.predict(["the movie"], verbose=0), lm.predict(["the movie"], verbose=0))
    clf = tasks.TextClassifier.from_preset(preset, num_classes=2, sequence_length=12)
    assert clf.predict(["the movie", ""], verbose=0).shape == (2, 2)


def test_bert_classifier_uses_pooled_output_and_round_trips(tmp_path):
    clf = tasks.TextClassifier.from_preset("bert_tiny_random_en", num_classes=2, sequence_length=12)
    assert clf.preprocessor.is_encoder and set(clf.input) == {"token_ids", "padding_mask", "segment_ids"}
    x = clf.preprocessor(["the movie was great"])
    pooled = np.asarray(clf.backbone(x)["pooled_output"])
    dense = clf.get_layer("logits")
    np.testing.assert_allclose(clf.predict(["the movie was great"], verbose=0),
                               pooled @ np.asarray(dense.kernel) + np.asarray(dense.bias), atol=1e-5)
    clf.compile()
    clf.fit(["good", "bad"], [1, 0], verbose=0)
    clf.save_to_preset(tmp_path / "bert_clf")
    restored = tasks.Task.from_preset(tmp_path / "bert_clf")
    restored.compile()  # the same XLA kernels as `clf`, so bit-identical outputs
    np.testing.assert_array_equal(restored.predict(["good"], verbose=0), clf.predict(["good"], verbose=0))
    with pytest.raises(tasks.TaskConfigError, match="needs a decoder backbone"):
        tasks.CausalLM.from_preset("bert_tiny_random_en")
