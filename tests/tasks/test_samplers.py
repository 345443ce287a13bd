import numpy as np
import pytest
from keras import ops

import tasks
from tasks import samplers

PROBS = np.array([0.05, 0.5, 0.3, 0.15], "float32")


def frequencies(sampler, n=20_000, probs=PROBS):
    logits = np.log(np.tile(probs, (n, 1)))
    uniform = np.random.default_rng(0).random(n).astype("float32")
    ids = ops.convert_to_numpy(sampler(logits, uniform))
    return np.bincount(ids, minlength=len(probs)) / n


def test_greedy_is_argmax():
    assert frequencies(tasks.GreedySampler(), n=10).tolist() == [0, 1, 0, 0]


def test_random_follows_the_distribution_and_temperature():
    np.testing.assert_allclose(frequencies(tasks.RandomSampler()), PROBS, atol=0.015)
    sharp = PROBS ** 2 / (PROBS ** 2).sum()  # temperature 0.5 squares the probabilities
    np.testing.assert_allclose(frequencies(tasks.RandomSampler(temperature=0.5)), sharp, atol=0.015)


def test_top_k_renormalises_over_the_k_best():
    np.testing.assert_allclose(frequencies(tasks.TopKSampler(k=2)), [0, 0.5 / 0.8, 0.3 / 0.8, 0], atol=0.015)
    assert frequencies(tasks.TopKSampler(k=1), n=10).tolist() == [0, 1, 0, 0]
    np.testing.assert_allclose(frequencies(tasks.TopKSampler(k=100)), PROBS, atol=0.015)  # k > vocab


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert frequencies(tasks.TopPSampler(p=0.4), n=100).tolist() == [0, 1, 0, 0]  # top token always kept
    np.testing.assert_allclose(frequencies(tasks.TopPSampler(p=0.7)), [0, 0.5 / 0.8, 0.3 / 0.8, 0], atol=0.015)
    np.testing.assert_allclose(frequencies(tasks.TopPSampler(p=1.0)), PROBS, atol=0.015)


def test_inverse_cdf_skips_zero_probability_tokens():
    probs = np.array([[0.0, 0.5, 0.0, 0.5]] * 3, "float32")
    uniform = np.array([0.0, 0.5, 0.999], "float32")
    assert ops.convert_to_numpy(samplers._inverse_cdf(probs, uniform)).tolist() == [1, 3, 3]


def test_noise_is_seeded():
    a, b = tasks.TopKSampler(seed=5).noise(2, 3), tasks.TopKSampler(seed=5).noise(2, 3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and ((a >= 0) & (a < 1)).all()


def test_bad_settings_are_clear_errors():
    with pytest.raises(tasks.TaskConfigError, match="temperature"):
        tasks.RandomSampler(temperature=0)
    with pytest.raises(tasks.TaskConfigError, match="k=0"):
        tasks.TopKSampler(k=0)
    with pytest.raises(tasks.TaskConfigError, match="p=1.5"):
        tasks.TopPSampler(p=1.5)
    assert isinstance(samplers.get("top_p", temperature=0.7), tasks.TopPSampler)
