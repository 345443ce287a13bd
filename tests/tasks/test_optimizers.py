"""tasks.optimizers: float32 master weights for low-precision variables, and
loss scaling for float16 models."""

import keras
import numpy as np
import pytest

import tasks
from tasks import optimizers


def steps(optimizer, variable, grad, n):
    for _ in range(n):
        optimizer.apply_gradients([(keras.ops.full(variable.shape, grad, variable.dtype), variable)])
    return keras.ops.convert_to_numpy(keras.ops.cast(variable, "float32"))


def test_small_updates_of_a_bfloat16_variable_accumulate():
    # Adam moves each weight by ~lr a step: 1e-3, under bfloat16's half spacing at 1.0 (2^-9).
    ours = keras.Variable(np.ones(4), dtype="bfloat16", name="kernel")
    plain = keras.Variable(np.ones(4), dtype="bfloat16", name="kernel")
    np.testing.assert_allclose(steps(optimizers.build("adam", 1e-3), ours, 1.0, 20), 0.98, atol=2 ** -8)
    np.testing.assert_array_equal(steps(keras.optimizers.Adam(1e-3), plain, 1.0, 20), 1.0)  # why we keep masters


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_state_is_float32_and_a_restored_variable_wins_over_its_master(name):
    variable = keras.Variable(np.ones(4), dtype="float16", name="kernel")
    optimizer = optimizers.build(name, 1e-2, weight_decay=0.01, global_clipnorm=1.0)
    steps(optimizer, variable, 0.5, 2)
    assert {str(v.dtype) for v in optimizer.variables if tuple(v.shape) == (4,)} == {"float32"}
    variable.assign(np.full(4, 8.0))  # e.g. a checkpoint restored after the optimizer was built
    after = steps(optimizer, variable, 0.0 if name == "sgd" else 0.5, 1)
    assert np.all(np.abs(after - 8.0) < 0.1), after


def test_global_clipnorm_over_float32_and_bfloat16_gradients():
    # The crash of issue 10: float32 LoRA matrices next to a bfloat16 head.
    lora = keras.Variable(np.ones(2), dtype="float32", name="lora_kernel_a")
    head = keras.Variable(np.ones(2), dtype="bfloat16", name="kernel")
    optimizer = optimizers.build("sgd", 0.1, global_clipnorm=1.0)
    grads = [keras.ops.convert_to_tensor(np.array([3.0, 0.0], "float32")),
             keras.ops.cast(np.array([0.0, 4.0], "float32"), "bfloat16")]
    optimizer.apply_gradients(zip(grads, [lora, head]))  # global norm 5 -> scaled by 1/5
    np.testing.assert_allclose(lora.numpy(), [1 - 0.1 * 0.6, 1.0], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(head, "float32")), [1.0, 1 - 0.1 * 0.8],
                               atol=2 ** -8)


@pytest.mark.parametrize("dtype,scaled", [("float16", True), ("mixed_float16", True),
                                          ("bfloat16", False), ("mixed_bfloat16", False)])
def test_compile_scales_the_loss_of_float16_models(dtype, scaled):
    clf = tasks.TextClassifier.from_preset("gpt2_tiny_en", num_classes=2, sequence_length=8, dtype=dtype)
    for optimizer in ("auto", optimizers.build("sgd", 0.1)):  # compile() and train.py's path
        clf.compile(optimizer=optimizer)
        assert isinstance(clf.optimizer, keras.optimizers.LossScaleOptimizer) is scaled
