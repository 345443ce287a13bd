"""The decoding loop of `CausalLM.generate`, in keras.ops, compiled once per shape.

Prompts are RIGHT-padded to `max_length`, so every prompt starts at position
0: with absolute positions (GPT-2) a prompt's tokens, and so its result, do
not depend on the other prompts of the batch. One forward pass fills the
key/value cache; then step `i` feeds the token at `i - 1` (one position per
step), and writes the sampled token at `i` unless `i` is still inside that
row's prompt. Rows stop at a stop token (later positions get the pad id);
the loop ends when every row has stopped or at `max_length`.
"""

import keras
import numpy as np
from keras import ops


def make_generate_function(backbone, logits_fn, sampler, stop_token_ids, pad_id, use_cache, jit_compile=True):
    """`fn(token_ids, prompt_mask, noise, start_index) -> (token_ids, end_index)`.

    `token_ids` (batch, max_length) int32 holds the right-padded prompts,
    `prompt_mask` (batch, max_length) bool marks prompt tokens, `noise`
    (batch, max_length) float32 the sampler's uniforms, and `start_index`
    the shortest prompt length (>= 1). `logits_fn` maps hidden states
    `(batch, 1, hidden)` to float32 logits `(batch, 1, vocab)`.
    """
    stop = np.asarray(list(stop_token_ids), "int32")

    def next_logits(token_ids, cache, index):
        batch, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        ones = ops.ones((batch, length), "int32")
        if use_cache:
            previous = ops.slice(token_ids, (0, index - 1), (batch, 1))
            hidden, cache = backbone.call_with_cache(previous, ones, cache, index - 1)
        else:  # the reference path: recompute the whole sequence every step
            hidden = backbone({"token_ids": token_ids, "padding_mask": ones})
            hidden = ops.slice(hidden, (0, index - 1, 0), (batch, 1, ops.shape(hidden)[2]))
        return logits_fn(hidden)[:, 0], cache

    def generate(token_ids, prompt_mask, noise, start_index):
        batch, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        if use_cache:
            cache = backbone.init_cache(batch, length)
            _, cache = backbone.call_with_cache(token_ids, ops.ones((batch, length), "int32"), cache, 0)
        else:
            cache = ops.zeros((1,))
        stop_ids = ops.convert_to_tensor(stop, "int32")

        def cond(index, token_ids, cache, done):
            return ops.logical_and(index < length, ops.logical_not(ops.all(done)))

        def body(index, token_ids, cache, done):
            logits, cache = next_logits(token_ids, cache, index)
            sampled = sampler(logits, ops.slice(noise, (0, index), (batch, 1))[:, 0])
            in_prompt = ops.slice(prompt_mask, (0, index), (batch, 1))[:, 0]
            given = ops.slice(token_ids, (0, index), (batch, 1))[:, 0]
            sampled = ops.where(done, pad_id, sampled)
            token = ops.where(in_prompt, given, sampled)
            token_ids = ops.slice_update(token_ids, (0, index), ops.cast(token[:, None], "int32"))
            hit = ops.any(ops.equal(token[:, None], stop_ids[None, :]), axis=-1)
            done = ops.logical_or(done, ops.logical_and(ops.logical_not(in_prompt), hit))
            return index + 1, token_ids, cache, done

        done = ops.zeros((batch,), "bool")
        index, token_ids, _, _ = ops.while_loop(cond, body, (start_index, token_ids, cache, done))
        return token_ids, index

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(generate, jit_compile=jit_compile)
    return generate  # other backends run eagerly (keras.ops throughout)


def output_mask(token_ids, prompt_lengths, end_index, stop_token_ids):
    """(batch, max_length) int32: prompt plus generated tokens, through the first stop token."""
    mask = np.zeros(token_ids.shape, "int32")
    stop = set(int(t) for t in stop_token_ids)
    for row, (ids, start) in enumerate(zip(token_ids, prompt_lengths)):
        end = end_index
        for i in range(start, end_index):
            if int(ids[i]) in stop:
                end = i + 1
                break
        mask[row, :end] = 1
    return mask
