"""Activation rematerialisation of a backbone's blocks (`Backbone.enable_remat`).

Each block's forward runs under `keras.remat` (TensorFlow's `recompute_grad`):
its inner activations (attention scores, feed-forward hidden states) are not
kept for the backward pass but recomputed from the block's input, so training
holds one block's activations at a time plus one residual-stream tensor per
block, for about one more forward pass of compute.

Why not `keras.RematScope`: it applies to layers created inside it (our
backbones build their blocks in `__init__`, before any caller could open a
scope), and its `"full"`/`"list_of_layers"` modes hand the layer's keyword
arguments to `tf.custom_gradient`, which refuses them inside a `tf.function`
("supports keywords arguments only when eager execution is enabled"), i.e. in
every `fit`. Here the keyword arguments (mask, rotary table, `training`) are
bound in a closure and only the hidden states cross the recompute boundary.

Dropout: the recomputation must draw the same masks as the forward pass did.
Keras's dropout seeds come from `SeedGenerator` variables that each draw
advances, so the wrapper reads their states before the forward pass and the
recomputation starts from those states again (checked in the parity tests:
same loss and gradients with and without remat, dropout on).
"""

import functools

import keras

_MARK = "_backbone_lab_remat"


def remat_block(block):
    """Makes `block` recompute its activations in the backward pass.

    Applies to calls with `training=True` (what `fit` passes); inference,
    generation with a cache and `training=False` calls run as before.
    Calling it twice on a block is a no-op.

    Example:
    >>> import keras, numpy as np
    >>> layer = keras.layers.Dense(2)
    >>> remat_block(layer)
    >>> tuple(layer(np.ones((1, 3)), training=True).shape)
    (1, 2)
    """
    if getattr(block, _MARK, False):
        return
    call = block.call
    seed_generators = [g for layer in block._flatten_layers() for g in layer._seed_generators]

    @functools.wraps(call)
    def rematerialised_call(x, *args, training=None, **kwargs):
        if not training:
            return call(x, *args, training=training, **kwargs)
        # `+ 0`: a tensor holding the value now, not a handle read again later.
        states = [keras.ops.convert_to_tensor(g.state.value) + 0 for g in seed_generators]

        def forward(x):
            for generator, state in zip(seed_generators, states):
                generator.state.assign(state)
            return call(x, *args, training=training, **kwargs)

        return keras.remat(forward)(x)

    block.call = rematerialised_call
    setattr(block, _MARK, True)
