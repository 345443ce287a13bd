"""Samplers: the next token from a batch of logits (greedy, random, top-k, top-p).

Sampling is by inverse CDF on uniform noise that `CausalLM.generate` draws
on the host (one number per row and position) and passes into the compiled
loop: the loop stays stateless, compiles once per shape and sampler
settings, and a `seed` reproduces a generation exactly.
"""

import numpy as np
from keras import ops

from tasks.errors import TaskConfigError


class Sampler:
    """Base sampler: `sampler(logits, uniform)` -> int32 token ids.

    Args:
        temperature: float. Logits are divided by it before sampling
            (< 1 sharper, > 1 flatter); greedy ignores it.
        seed: int. Seed of the noise; the same seed gives the same tokens on
            every call. None: drawn from NumPy's global state (which
            `keras.utils.set_random_seed` seeds).

    Example:
    >>> import numpy as np
    >>> logits = np.log(np.array([[0.1, 0.6, 0.3]], "float32"))
    >>> int(TopKSampler(k=2)(logits, np.array([0.9], "float32"))[0])
    2
    """

    def __init__(self, temperature=1.0, seed=None):
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise TaskConfigError(f"temperature must be a positive number, got {temperature!r}.")
        self.temperature = float(temperature)
        self.seed = seed

    def __call__(self, logits, uniform):
        raise NotImplementedError

    def noise(self, batch_size, length):
        """Uniform numbers in [0, 1), one per row and position."""
        rng = np.random.default_rng(self.seed) if self.seed is not None else np.random
        return rng.random((batch_size, length)).astype("float32")

    def get_config(self):
        return {"temperature": self.temperature, "seed": self.seed}

    def cache_key(self):
        """Settings that change the compiled loop (the seed does not)."""
        config = {k: v for k, v in self.get_config().items() if k != "seed"}
        return (type(self).__name__, tuple(sorted(config.items())))

    def _scaled(self, logits):
        return ops.cast(logits, "float32") / self.temperature


class GreedySampler(Sampler):
    """The most likely token (argmax); deterministic."""

    def __call__(self, logits, uniform):
        return ops.cast(ops.argmax(logits, axis=-1), "int32")


class RandomSampler(Sampler):
    """A token drawn from the whole softmax distribution (at `temperature`)."""

    def __call__(self, logits, uniform):
        return _inverse_cdf(ops.softmax(self._scaled(logits), axis=-1), uniform)


class TopKSampler(Sampler):
    """A token drawn among the `k` most likely ones.

    Args:
        k: int. Number of candidates.
        temperature, seed: see `Sampler`.
    """

    def __init__(self, k=50, temperature=1.0, seed=None):
        super().__init__(temperature, seed)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise TaskConfigError(f"top-k needs an integer k >= 1, got k={k!r}.")
        self.k = k

    def __call__(self, logits, uniform):
        values, indices = ops.top_k(self._scaled(logits), k=min(self.k, logits.shape[-1]))
        if self.k == 1:
            return ops.cast(indices[:, 0], "int32")
        choice = _inverse_cdf(ops.softmax(values, axis=-1), uniform)
        return _gather(indices, choice)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class TopPSampler(Sampler):
    """Nucleus sampling: a token drawn among the most likely ones whose
    probabilities sum to at least `p` (the top token is always kept).

    Args:
        p: float. Probability mass kept, in (0, 1].
        temperature, seed: see `Sampler`.
    """

    def __init__(self, p=0.9, temperature=1.0, seed=None):
        super().__init__(temperature, seed)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise TaskConfigError(f"top-p needs 0 < p <= 1, got p={p!r}.")
        self.p = float(p)

    def __call__(self, logits, uniform):
        values, indices = ops.top_k(self._scaled(logits), k=logits.shape[-1])
        probs = ops.softmax(values, axis=-1)
        mass_before = ops.cumsum(probs, axis=-1) - probs
        probs = ops.where(mass_before < self.p, probs, 0.0)
        return _gather(indices, _inverse_cdf(probs, uniform))

    def get_config(self):
        return {**super().get_config(), "p": self.p}


SAMPLERS = {"greedy": GreedySampler, "random": RandomSampler, "top_k": TopKSampler, "top_p": TopPSampler}


def get(sampler, temperature=None, seed=None):
    """A `Sampler` from a name (`"greedy"`, `"random"`, `"top_k"`, `"top_p"`) or itself."""
    if isinstance(sampler, Sampler):
        if temperature is not None or seed is not None:
            raise TaskConfigError(
                "temperature and seed apply to a sampler given by name; set them on the "
                f"{type(sampler).__name__} object instead."
            )
        return sampler
    if sampler not in SAMPLERS:
        raise TaskConfigError(f"Unknown sampler {sampler!r}: use one of {sorted(SAMPLERS)} or a Sampler.")
    return SAMPLERS[sampler](temperature=1.0 if temperature is None else temperature, seed=seed)


def _inverse_cdf(probs, uniform):
    """Index i with cdf[i-1] <= u * total < cdf[i]: skips zero-probability entries."""
    cdf = ops.cumsum(probs, axis=-1)
    target = ops.cast(uniform, "float32")[:, None] * cdf[:, -1:]
    index = ops.sum(ops.cast(cdf <= target, "int32"), axis=-1)
    return ops.minimum(index, ops.shape(probs)[-1] - 1)


def _gather(indices, choice):
    return ops.cast(ops.take_along_axis(indices, choice[:, None], axis=-1)[:, 0], "int32")
