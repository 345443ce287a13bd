"""The optimizer built from the `optimizer` config node."""

import keras
import numpy as np
from omegaconf import OmegaConf

from lab.training import build_optimizer


def one_step(name, weight_decay, clipnorm, grads):
    cfg = OmegaConf.create({"name": name, "learning_rate": 0.1, "weight_decay": weight_decay,
                            "schedule": "constant", "warmup_ratio": 0.0, "clipnorm": clipnorm})
    optimizer = build_optimizer(cfg, total_steps=10)
    variables = [keras.Variable(np.ones(2, "float32"), name=n) for n in ("kernel", "bias", "gamma", "scale")]
    optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
    return [v.numpy() for v in variables]


def test_weight_decay_skips_biases_and_norms():
    zero = np.zeros(2, "float32")
    kernel, bias, gamma, scale = one_step("adamw", 0.5, None, [zero] * 4)
    np.testing.assert_allclose(kernel, 1 - 0.1 * 0.5)  # decayed: w - lr * wd * w
    for v in (bias, gamma, scale):
        np.testing.assert_array_equal(v, 1.0)


def test_clipnorm_clips_the_global_norm():
    grads = [np.array([3.0, 4.0], "float32"), np.zeros(2, "float32"), np.zeros(2, "float32"),
             np.array([0.0, 0.0], "float32")]
    kernel, *_ = one_step("sgd", 0.0, 1.0, grads)
    # global norm 5 -> scaled by 1/5; SGD's first step moves by lr * g
    np.testing.assert_allclose(kernel, 1 - 0.1 * np.array([0.6, 0.8]), rtol=1e-6)
    grads[1] = np.array([0.0, 12.0], "float32")  # global norm 13, the kernel's own norm still 5
    kernel, bias, *_ = one_step("sgd", 0.0, 1.0, grads)
    np.testing.assert_allclose(kernel, 1 - 0.1 * np.array([3, 4]) / 13, rtol=1e-6)
    np.testing.assert_allclose(bias, 1 - 0.1 * np.array([0, 12]) / 13, rtol=1e-6)
