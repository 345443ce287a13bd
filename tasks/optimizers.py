"""Optimizers that train every dtype: the one place `compile()` and `train.py`
build AdamW, Adam and SGD.

Why not Keras's own as they come: Keras keeps an optimizer's state in each
variable's dtype and updates a bfloat16 variable in bfloat16. bfloat16 keeps
8 significant bits, so an update smaller than about 1/256 of a weight rounds
away (AdamW at 5e-5 on a weight of 0.02 moves it by 1/400: nothing happens),
and its moments lose the same digits. A model mixing float32 LoRA matrices
with bfloat16 weights (the classifier head) also crashes Keras's global-norm
clipping (`Mul` of float32 by bfloat16).

What we do (what mixed-precision training does with "master weights"): every
float16 / bfloat16 trainable variable gets a float32 master copy inside the
optimizer; gradients are cast to float32, clipping, weight decay, moments and
the update all run in float32 on the master, and the model variable gets the
master rounded to its dtype. Cost: 4 bytes per low-precision trained
parameter (a full fine-tune of a bf16 model: weights 2 + master 4 + moments
8 bytes per parameter, what `mixed_bfloat16` costs). A LoRA run pays nothing
for its adapters: Keras creates LoRA matrices in float32 already (as PEFT
keeps adapters and their optimizer state in float32 over a bf16 base); only
the small bf16 head gets a master.

A master is re-synchronised from its variable element by element wherever
the variable no longer equals the master's rounding, so a variable written
from outside (a checkpoint restored, `load_weights`, early stopping's best
weights) is never overwritten by a stale master.
"""

import keras
from keras import ops
from keras.src.utils.tracking import no_automatic_dependency_tracking

# Variables never weight-decayed (matched by name): biases and the scales and
# offsets of layer / RMS norms, as transformers' Trainer and nanoGPT do.
NO_WEIGHT_DECAY = ("bias", "gamma", "beta", "scale")

LOW_PRECISION = ("float16", "bfloat16")


class Float32Master:
    """Mixin for a Keras optimizer: float32 master copies and state for the
    float16 / bfloat16 variables it trains (see the module docstring)."""

    @no_automatic_dependency_tracking  # as Keras's own build: the model's variables are not ours
    def build(self, variables):
        self._masters = {}  # model variable key -> float32 master
        self._model_variables = list(variables)
        targets = []
        for variable in variables:
            if keras.backend.standardize_dtype(variable.dtype) in LOW_PRECISION:
                # Zeros, not the variable's value: the first `apply` syncs it
                # (the variable may still be restored after `build`).
                master = self.add_variable(variable.shape, "zeros", "float32", name=variable.name)
                self._masters[self._var_key(variable)] = master
                variable = master
            targets.append(variable)
        super().build(targets)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
        trainable_variables = list(trainable_variables or self._model_variables)
        grads = self._sum_over_replicas(grads, trainable_variables)
        targets, cast_grads, written = [], [], []
        for grad, variable in zip(grads, trainable_variables):
            master = self._masters.get(self._var_key(variable))
            if master is None:
                targets.append(variable)
                cast_grads.append(grad)
                continue
            synced = ops.equal(ops.cast(master, variable.dtype), variable)
            master.assign(ops.where(synced, master, ops.cast(variable, "float32")))
            targets.append(master)
            cast_grads.append(None if grad is None else ops.cast(grad, "float32"))
            written.append((variable, master))
        super().apply(cast_grads, targets)
        for variable, master in written:
            variable.assign(ops.cast(master, variable.dtype))

    def _sum_over_replicas(self, grads, variables):
        """Gradients summed over the replicas of a tf.distribute strategy,
        before clipping. Keras 3.15 (TensorFlow) clips each replica's share of
        the gradient by its own norm and sums after, so `global_clipnorm` on N
        replicas is not the clipping of one replica on the same global batch
        (2 replicas vs 1, two epochs of tiny GPT-2: loss 0.685 vs 0.780; with
        the sum first both give 0.780). Keras's later sum is skipped.
        Half-precision gradients are summed in float32 (where they go anyway):
        TensorFlow's CPU all-reduce has no bfloat16 kernel."""
        reduce = getattr(super(), "_all_reduce_sum_gradients", None)  # TensorFlow only
        if reduce is None:
            return grads
        grads = [g if g is None or keras.backend.standardize_dtype(g.dtype) not in LOW_PRECISION
                 else ops.cast(g, "float32") for g in grads]
        return [g for g, _ in reduce(list(zip(grads, variables)))]

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)  # summed in `apply` already


@keras.saving.register_keras_serializable(package="backbone_lab")
class AdamW(Float32Master, keras.optimizers.AdamW):
    """Keras's AdamW with float32 master weights and state (module docstring)."""


@keras.saving.register_keras_serializable(package="backbone_lab")
class Adam(Float32Master, keras.optimizers.Adam):
    """Keras's Adam with float32 master weights and state (module docstring)."""


@keras.saving.register_keras_serializable(package="backbone_lab")
class SGD(Float32Master, keras.optimizers.SGD):
    """Keras's SGD with float32 master weights and momentum (module docstring)."""


def build(name, learning_rate, weight_decay=0.0, global_clipnorm=None):
    """AdamW, Adam or SGD (momentum 0.9) that trains any dtype, with weight
    decay off for biases and norms.

    Args:
        name: str. `"adamw"`, `"adam"` or `"sgd"`.
        learning_rate: float or a `LearningRateSchedule`.
        weight_decay: float. Decoupled weight decay (AdamW, SGD); 0 = none.
        global_clipnorm: float or None. Clip the global gradient norm
            (transformers' `max_grad_norm`), not each variable's own norm
            (Keras's `clipnorm`).

    Example:
    >>> import keras, numpy as np
    >>> opt = build("adamw", 1e-3, weight_decay=0.01, global_clipnorm=1.0)
    >>> w = keras.Variable(np.ones(3), dtype="bfloat16", name="kernel")
    >>> _ = opt.apply_gradients([(keras.ops.ones(3, "bfloat16"), w)])
    >>> [str(v.dtype) for v in opt.variables if v.shape == (3,)]
    ['float32', 'float32', 'float32']
    """
    common = {"learning_rate": learning_rate, "global_clipnorm": global_clipnorm}
    if name == "adam":
        return Adam(**common)
    if name == "adamw":
        optimizer = AdamW(weight_decay=weight_decay, **common)
    elif name == "sgd":
        optimizer = SGD(momentum=0.9, weight_decay=weight_decay or None, **common)
    else:
        raise ValueError(f"Unknown optimizer {name!r}: choose adamw, adam or sgd.")
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    return optimizer


def with_loss_scaling(optimizer, model):
    """`optimizer` wrapped in Keras's `LossScaleOptimizer` when `model`
    computes in float16 (`float16` or `mixed_float16`), else as it is.

    float16 gradients under about 6e-8 flush to zero; dynamic loss scaling
    multiplies the loss (2^15 at first) and divides the gradients back,
    halving the scale and skipping the step on an overflow. Keras's
    `compile` wraps only when the compiled model's own policy is
    `mixed_float16`; a task's policy is float32 whatever its backbone's, and
    pure `float16` needs scaling too, so the decision reads the compute dtype
    of the model's layers.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    if any(layer.dtype_policy.compute_dtype == "float16" for layer in model._flatten_layers()):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
