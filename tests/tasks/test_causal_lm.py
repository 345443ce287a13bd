import keras
import numpy as np
import pytest

import backbones
import tasks
from tests.tasks.fakes import TinyEncoderTestBackbone
from tests.tasks.toy_data import corpus

PROMPTS = ["the movie", "a longer prompt about the food", "the"]


@pytest.fixture(scope="module")
def lm():
    return tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=16)


def reference_greedy(lm, prompt_ids, max_length):
    """Uncached greedy decoding of one prompt: a full forward pass per token."""
    ids = list(prompt_ids)
    while len(ids) < max_length:
        x = {"token_ids": np.array([ids], "int32"), "padding_mask": np.ones((1, len(ids)), "int32")}
        ids.append(int(np.argmax(keras.ops.convert_to_numpy(lm(x))[0, -1])))
    return ids


def test_cached_generation_gives_exactly_the_uncached_greedy_tokens(lm):
    """Prompts of different lengths in one batch, no stop token, to max_length."""
    rows = lm.preprocessor.prompts(PROMPTS)
    max_length = 24
    ids = np.zeros((3, 16), "int32")
    mask = np.zeros((3, 16), "int32")
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    out = lm.generate({"token_ids": ids, "padding_mask": mask}, max_length=max_length, stop_token_ids=())
    assert out["token_ids"].shape == (3, max_length) and out["padding_mask"].all()
    for i, row in enumerate(rows):
        assert out["token_ids"][i].tolist() == reference_greedy(lm, row, max_length), f"prompt {i}"
    uncached = lm.generate({"token_ids": ids, "padding_mask": mask}, max_length=max_length,
                           stop_token_ids=(), use_cache=False)
    np.testing.assert_array_equal(uncached["token_ids"], out["token_ids"])


def test_batch_generation_equals_one_by_one(lm):
    batch = lm.generate(PROMPTS, max_length=20)
    single = [lm.generate(p, max_length=20) for p in PROMPTS]
    assert batch == single
    assert all(text.startswith(prompt) for text, prompt in zip(batch, PROMPTS))


def test_compiled_once_per_shape(lm):
    lm.generate(["a", "b c"], max_length=12, sampler="top_k", seed=1)
    lm.generate(["the movie was", "x"], max_length=12, sampler="top_k", seed=2)  # other lengths, seed
    fn = lm._generate_functions[next(k for k in lm._generate_functions if k[0][0] == "TopKSampler")]
    assert fn.experimental_get_tracing_count() == 1
    lm.generate(["a", "b"], max_length=13, sampler="top_k")
    assert fn.experimental_get_tracing_count() == 2


def test_stop_tokens_end_each_row_separately(lm):
    rows = lm.preprocessor.prompts(PROMPTS[:2])
    prompt = {"token_ids": np.array([rows[0]]), "padding_mask": np.ones((1, len(rows[0])), "int32")}
    free = lm.generate(prompt, max_length=16, stop_token_ids=())["token_ids"][0]
    stop = int(free[len(rows[0]) + 2])  # the third generated token of prompt 0
    first = free.tolist().index(stop, len(rows[0]))
    out = lm.generate(PROMPTS[:2], max_length=16, stop_token_ids=[stop])
    tokens = lm.generate(prompt, max_length=16, stop_token_ids=[stop])
    assert tokens["padding_mask"][0].tolist() == [1] * (first + 1) + [0] * (15 - first)
    assert tokens["token_ids"][0, :first + 1].tolist() == free[:first + 1].tolist()
    assert out[0] == lm.preprocessor.tokenizer.detokenize([free[:first + 1]])[0]
    # The eos is the default stop token; None generates to max_length.
    assert lm._stop_ids("auto") == (lm.preprocessor.eos_id,) and lm._stop_ids(None) == ()


def test_sampling_is_seeded_and_uses_the_sampler(lm):
    a = lm.generate(PROMPTS, max_length=16, sampler="top_p", temperature=1.5, seed=3, stop_token_ids=())
    b = lm.generate(PROMPTS, max_length=16, sampler="top_p", temperature=1.5, seed=3, stop_token_ids=())
    c = lm.generate(PROMPTS, max_length=16, sampler="top_p", temperature=1.5, seed=4, stop_token_ids=())
    assert a == b and a != c
    greedy = lm.generate(PROMPTS, max_length=16, stop_token_ids=())
    top1 = lm.generate(PROMPTS, max_length=16, sampler=tasks.TopKSampler(k=1, seed=0), stop_token_ids=())
    assert top1 == greedy
    with pytest.raises(tasks.TaskConfigError, match="set them on the TopKSampler"):
        lm.generate("x", sampler=tasks.TopKSampler(), temperature=0.5)
    with pytest.raises(tasks.TaskConfigError, match="Unknown sampler 'beam'"):
        lm.generate("x", sampler="beam")


def test_prompt_errors(lm):
    with pytest.raises(tasks.TaskInputError, match=r"Prompt 0 has \d+ tokens.*max_length=4"):
        lm.generate("the movie was really very good", max_length=4)
    with pytest.raises(tasks.TaskInputError, match="max_sequence_length=256"):
        lm.generate("x", max_length=300)
    assert lm.generate("", max_length=6) is not None  # an empty prompt starts from bos


def test_loss_is_the_mean_over_real_tokens_only(lm):
    lm.compile()
    texts = ["the movie was great", "bad"]
    x, y, weight = lm.preprocessor.causal_lm(texts)
    logits = keras.ops.convert_to_numpy(lm(x))
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    token_loss = -np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
    expected = (token_loss * weight).sum() / weight.sum()
    got = lm.evaluate(texts, verbose=0, return_dict=True)
    assert got["loss"] == pytest.approx(expected, rel=1e-4)
    assert got["perplexity"] == pytest.approx(np.exp(expected), rel=1e-4)
    # Padding does not change the loss: the same texts packed longer.
    longer = tasks.CausalLM(lm.backbone, preprocessor=tasks.Preprocessor(lm.preprocessor.tokenizer, 40))
    longer.compile()
    assert longer.evaluate(texts, verbose=0, return_dict=True)["loss"] == pytest.approx(expected, rel=1e-4)


def test_language_model_lowers_its_loss_on_a_small_corpus():
    """The issue's 'done when': loss before and after a few hundred steps."""
    lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=12)
    train, held_out = corpus(1000, seed=0), corpus(200, seed=1)
    lm.compile(optimizer=keras.optimizers.AdamW(1e-3))
    before = lm.evaluate(held_out, verbose=0, return_dict=True)
    lm.fit(train, batch_size=16, epochs=2, steps_per_epoch=100, verbose=0)
    after = lm.evaluate(held_out, verbose=0, return_dict=True)
    print(f"CausalLM held-out loss {before['loss']:.3f} -> {after['loss']:.3f}, perplexity "
          f"{before['perplexity']:.1f} -> {after['perplexity']:.2f}, token accuracy "
          f"{before['accuracy']:.3f} -> {after['accuracy']:.3f} after 200 steps")
    assert after["loss"] < 0.5 * before["loss"]
    # Generation follows the corpus' pattern "<subject> <verb> <adjective>."
    assert lm.generate("the food", max_length=8).startswith("the food ")


def test_token_ids_without_targets_train_on_the_next_token(lm):
    lm.compile()
    x = lm.preprocessor(["the movie was great"])
    inputs, y, weight = lm._preprocess(x)
    np.testing.assert_array_equal(inputs["token_ids"], x["token_ids"][:, :-1])
    np.testing.assert_array_equal(y, x["token_ids"][:, 1:])
    lm.fit(x, verbose=0)
    with pytest.raises(tasks.TaskInputError, match="learns from the texts themselves"):
        lm.fit(["text"], [1], verbose=0)


def test_tied_head_and_compute_logits_hook():
    backbone = backbones.Backbone.from_preset("gpt2_tiny_en")
    lm = tasks.CausalLM(backbone, sequence_length=8)
    x = lm.preprocessor(["the movie"])
    hidden = keras.ops.convert_to_numpy(backbone(x))
    embeddings = keras.ops.convert_to_numpy(backbone.token_embedding.embeddings)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(lm(x)), hidden @ embeddings.T, atol=1e-4)
    assert not lm.get_layer("lm_head").weights  # tied: no weights of its own

    class WithHook(type(backbone)):
        def compute_logits(self, hidden_states):
            return 2.0 * keras.ops.matmul(hidden_states, keras.ops.transpose(self.token_embedding.embeddings))

    hooked = WithHook.from_config(backbone.get_config())
    hooked.set_weights(backbone.get_weights())
    hooked.tokenizer = backbone.tokenizer
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tasks.CausalLM(hooked, sequence_length=8)(x)),
                               2 * hidden @ embeddings.T, atol=1e-4)


def test_encoder_backbone_is_rejected():
    with pytest.raises(tasks.TaskConfigError, match="needs a decoder backbone"):
        tasks.CausalLM(TinyEncoderTestBackbone())


def test_predict_of_a_token_dict_gives_logits_at_every_position():
    """A token dict is the model's input as given (transformers' `model(input_ids).logits`),
    not the training inputs shifted by one."""
    lm = tasks.CausalLM.from_preset("gpt2_tiny_en", sequence_length=12)
    x = lm.preprocessor(["the movie was great", "bad"])
    out = lm.predict(x, verbose=0)
    assert out.shape == (2, 12, lm.backbone.vocabulary_size)
    np.testing.assert_allclose(out, np.asarray(lm({k: np.asarray(v) for k, v in x.items()})), atol=1e-5)
