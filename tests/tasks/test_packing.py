"""Packing: several examples per row train exactly as each example alone."""

import keras
import numpy as np
import pytest

import backbones
import tasks
from backbones.registry import FAMILIES
from tasks import packing

TEXTS = ["the movie was great and the food was fine too", "bad", "a film", "the food was awful, truly awful",
         "so good", "", "what a long and winding sentence about nothing at all in particular"]


def decoder_tiny_presets():
    """One tiny preset per decoder family in the registry (a new family is tested without editing this)."""
    backbones.load()
    return [next(name for name in f.presets if "tiny" in name)
            for f in FAMILIES.values() if not f.is_encoder]


def test_best_fit_decreasing_places_every_example_once_within_capacity():
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 33, size=300)]
    rows = packing.best_fit_decreasing(lengths, 32)
    assert sorted(i for row in rows for i in row) == list(range(300))
    assert all(sum(lengths[i] for i in row) <= 32 for row in rows)
    assert len(rows) <= 1.1 * sum(lengths) / 32 + 1  # near the lower bound on this mix
    with pytest.raises(ValueError, match="outside 1..32"):
        packing.best_fit_decreasing([33], 32)


@pytest.mark.filterwarnings("ignore::tasks.TruncationWarning")  # two texts are cut: packed rows cut them alike
@pytest.mark.parametrize("preset", decoder_tiny_presets())
def test_packed_training_step_equals_unpacked(preset):
    """Same loss and, after one SGD step on the whole set, the same weights."""
    models = []
    for packed in (False, True):
        keras.utils.set_random_seed(0)
        lm = tasks.CausalLM(backbones.Backbone.from_preset(preset), sequence_length=16, packing=packed)
        lm.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
        models.append(lm)
    unpacked, packed = models
    x, y, w = unpacked.preprocessor.causal_lm(TEXTS)
    (px, py, pw), stats = packed.preprocessor.packed_causal_lm(TEXTS)
    assert stats.rows < len(TEXTS) and stats.tokens == int(w.sum()) == int(pw.sum())
    assert stats.waste < stats.unpacked_waste
    loss = unpacked.train_on_batch(x, y, sample_weight=w, return_dict=True)["loss"]
    packed_loss = packed.train_on_batch(px, py, sample_weight=pw, return_dict=True)["loss"]
    assert packed_loss == pytest.approx(loss, rel=1e-5)
    for a, b in zip(unpacked.backbone.trainable_weights, packed.backbone.trainable_weights):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-6, err_msg=a.path)
    # Predictions stay per text (on real tokens; padding sees nothing when packed).
    real = x["padding_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(packed(packed._preprocess(TEXTS)[0]))[real],
                               np.asarray(unpacked(x))[real], atol=2e-5)


def test_sliding_window_stays_inside_each_packed_example():
    model = backbones.LlamaBackbone(vocabulary_size=50, num_layers=1, num_query_heads=2, num_key_value_heads=1,
                                    hidden_dim=8, intermediate_dim=16, head_dim=4, sliding_window=3)
    examples = [[3, 4, 5, 6, 7], [8, 9, 10, 11]]
    packed = np.asarray(model.call_packed(np.array([sum(examples, [])]), np.array([[1] * 5 + [2] * 4])))
    start = 0
    for ids in examples:
        alone = model({"token_ids": np.array([ids]), "padding_mask": np.ones((1, len(ids)), "int32")})
        np.testing.assert_allclose(packed[:, start:start + len(ids)], np.asarray(alone), atol=1e-5)
        start += len(ids)


@pytest.mark.filterwarnings("ignore::tasks.TruncationWarning")
def test_fit_on_strings_packs_and_unsupported_backbone_is_refused():
    lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=16, packing=True)
    lm.compile(jit_compile=False)
    history = lm.fit(TEXTS, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert lm.generate("the movie", max_length=8, jit_compile=False).startswith("the movie")
    with pytest.raises(tasks.TaskInputError, match="learns from the texts themselves"):
        lm.fit(TEXTS, [0] * len(TEXTS))
    with pytest.raises(tasks.TaskConfigError, match="does not"):
        backbone = backbones.Backbone.from_preset("bert_tiny_random_en")
        type(backbone).is_encoder, restore = False, type(backbone).is_encoder
        try:
            tasks.CausalLM(backbone, packing=True)
        finally:
            type(backbone).is_encoder = restore


def test_loss_masks_travel_into_packed_rows():
    from tasks.examples import Example

    items = [Example.of([1, 5, 6, 7, 2], [0, 0, 0, 1, 1]), Example.of([1, 8, 2], [0, 1, 1])]  # prompt masked
    (x, y, w), stats = packing.pack([e.token_ids for e in items], 8, weights=[e.loss_mask for e in items])
    assert x["token_ids"].tolist() == [[1, 5, 6, 7, 1, 8, 0, 0]] and x["segment_ids"].tolist() == [[1, 1, 1, 1, 2, 2, 0, 0]]
    assert y.tolist() == [[5, 6, 7, 2, 8, 2, 0, 0]] and w.tolist() == [[0, 0, 1, 1, 1, 1, 0, 0]]
